"""PostgreSQL ``sslmode`` in CREDITGATE_LEDGER_URL reaches the driver, and is enforced.

A private cluster of its own (initdb/pg_ctl, as conftest starts one): first with ssl off, where
``sslmode=require`` must fail with a clear LedgerError, then restarted with ``ssl = on`` and a
certificate from a throwaway CA, where ``require`` and ``verify-full`` connect over TLS (and
``verify-full`` against the wrong CA does not).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from conftest import REQUIRE_ENV, Postgres, _private_cluster
from creditgate.ledger import LedgerError, open_ledger
from creditgate.testing.certs import CertKit

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parent.parent.parent
CREDITGATE = Path(sys.executable).parent / "creditgate"
SSL_IN_USE = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Postgres, CertKit]]:
    """A private PostgreSQL cluster (ssl off as started) and a CA for its certificate."""
    tmp = Path(tempfile.mkdtemp(prefix="cg-pg-tls-"))
    try:
        pg = _private_cluster(tmp)
        kit = CertKit(tmp / "pki")
    except (LookupError, subprocess.CalledProcessError, OSError) as exc:
        reason = f"PostgreSQL TLS tests not run: {exc}"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} (and {REQUIRE_ENV}=1)")
        pytest.skip(reason)
    try:
        yield pg, kit
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            pg._pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(tmp, ignore_errors=True)


def _turn_ssl_on(pg: Postgres, kit: CertKit) -> None:
    """Give the server a certificate from ``kit`` and restart it with ``ssl = on``."""
    assert pg.data_dir is not None
    issued = kit.issue("postgres", serial=2, common_name="localhost")
    cert, key = pg.data_dir / "server.crt", pg.data_dir / "server.key"
    shutil.copy(issued.cert, cert)
    shutil.copy(issued.key, key)
    key.chmod(0o600)  # PostgreSQL refuses a key others can read
    owner = pg.data_dir.stat()
    for path in (cert, key):
        os.chown(path, owner.st_uid, owner.st_gid)
    with (pg.data_dir / "postgresql.conf").open("a") as conf:
        conf.write("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
    pg._pg_ctl("restart", "-m", "fast", "-l", str(pg.data_dir / "log"))


def _url(pg: Postgres, query: str, host: str = "127.0.0.1") -> str:
    return pg.url.replace("@127.0.0.1:", f"@{host}:") + "?" + query


async def test_sslmode_require_fails_clearly_without_ssl_then_connects_over_tls(
    cluster: tuple[Postgres, CertKit], tmp_path: Path
) -> None:
    """require: refused by a server without ssl; over TLS once ssl is on. verify-full checks."""
    pg, kit = cluster
    # The pool connects on first use (a ledger outage must not stop the sidecar from starting):
    # the first statement, here the migrations, is where the refusal shows.
    with pytest.raises(LedgerError, match=r"PostgreSQL ledger unavailable: .*SSL") as refused:
        await open_ledger(_url(pg, "sslmode=require"), migrate=True)
    assert "\n" not in str(refused.value)

    await asyncio.to_thread(_turn_ssl_on, pg, kit)
    for url in (
        _url(pg, "sslmode=require"),
        _url(pg, f"sslmode=verify-full&sslrootcert={kit.ca.cert}", host="localhost"),
    ):
        store = await open_ledger(url, migrate=True)
        try:
            assert await store.fetch(SSL_IN_USE) == [(True,)]  # type: ignore[attr-defined]
        finally:
            await store.close()

    stranger = CertKit(tmp_path / "other", "other-ca")
    wrong_ca = _url(pg, f"sslmode=verify-full&sslrootcert={stranger.ca.cert}", host="localhost")
    with pytest.raises(LedgerError, match="certificate verify failed"):
        await open_ledger(wrong_ca, migrate=True)

    # The whole settings path: the CLI reads CREDITGATE_LEDGER_URL and migrates over TLS.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITGATE_")}
    env["CREDITGATE_LEDGER_URL"] = _url(
        pg, f"sslmode=verify-full&sslrootcert={kit.ca.cert}", host="localhost"
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [str(CREDITGATE), "migrate"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ledger schema at version")
