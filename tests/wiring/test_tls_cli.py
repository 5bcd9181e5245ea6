"""``creditgate serve`` with mutual TLS, and the CLI's client commands talking to it.

Real subprocesses: the sidecar on the session's Redis with certificates from a throwaway CA,
and ``creditgate`` client commands with the TLS flags or the CREDITGATE_CLIENT_TLS_* variables.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from creditgate.testing.certs import CertKit

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]
CREDITGATE = Path(sys.executable).parent / "creditgate"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITGATE_")}
    return env | {"CREDITGATE_METRICS_PORT": "0", "CREDITGATE_LEDGER_URL": ""} | extra


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> CertKit:
    try:
        return CertKit(tmp_path_factory.mktemp("pki"))
    except LookupError as exc:
        pytest.skip(str(exc))


def _wait_serving(
    target: str, creds: grpc.ChannelCredentials, proc: subprocess.Popen[bytes]
) -> None:
    request = health_pb2.HealthCheckRequest(service="")
    with grpc.secure_channel(target, creds) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(200):
            assert proc.poll() is None, f"serve exited with {proc.returncode}"
            try:
                if stub.Check(request, timeout=0.2).status == 1:
                    return
            except grpc.RpcError:
                time.sleep(0.05)
    pytest.fail("creditgate serve with TLS never reported SERVING")


@pytest.fixture(scope="module")
def mtls_sidecar(redis_url: str, kit: CertKit) -> Iterator[str]:
    """``creditgate serve`` requiring client certificates from ``kit``'s CA; its target."""
    server = kit.issue("server", serial=2)
    client = kit.issue("client", serial=3)
    port = _free_port()
    env = _env(
        CREDITGATE_REDIS_URL=redis_url,
        CREDITGATE_LISTEN=f"127.0.0.1:{port}",
        CREDITGATE_TLS_CERT=str(server.cert),
        CREDITGATE_TLS_KEY=str(server.key),
        CREDITGATE_TLS_CLIENT_CA=str(kit.ca.cert),
    )
    proc = subprocess.Popen([str(CREDITGATE), "serve"], cwd=ROOT, env=env)  # noqa: S603
    target = f"localhost:{port}"
    try:
        creds = grpc.ssl_channel_credentials(
            kit.ca.cert.read_bytes(), client.key.read_bytes(), client.cert.read_bytes()
        )
        _wait_serving(target, creds, proc)
        yield target
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _cli(*args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - our own command
        [str(CREDITGATE), *args],
        cwd=ROOT,
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cli_speaks_mutual_tls_by_flags_and_by_environment(mtls_sidecar: str, kit: CertKit) -> None:
    """Flags or CREDITGATE_CLIENT_TLS_* give the CLI TLS; without a client cert it is refused."""
    ca, cert, key = (str(kit.dir / n) for n in ("ca.pem", "client.pem", "client.key"))
    account = f"tls-{os.getpid()}"
    by_flags = _cli(
        "--target", mtls_sidecar, "--tls-ca", ca, "--tls-cert", cert, "--tls-key", key,
        "account", "create", account, "--plan", "zite_free", "--json",
    )  # fmt: skip
    no_cert = _cli("--target", mtls_sidecar, "--tls-ca", ca, "balance", account)
    plaintext = _cli("--target", mtls_sidecar, "balance", account)
    half = _cli("--target", mtls_sidecar, "--tls-ca", ca, "--tls-cert", cert, "balance", account)
    out, err = by_flags.communicate(timeout=60)
    assert by_flags.returncode == 0, err
    assert json.loads(out)["account_id"] == account
    by_env = _cli(
        "--target",
        mtls_sidecar,
        "balance",
        account,
        "--json",
        CREDITGATE_CLIENT_TLS_CA=ca,
        CREDITGATE_CLIENT_TLS_CERT=cert,
        CREDITGATE_CLIENT_TLS_KEY=key,
    )
    out, err = by_env.communicate(timeout=60)
    assert by_env.returncode == 0, err
    assert json.loads(out)["account_id"] == account
    _, err = half.communicate(timeout=60)
    assert half.returncode == 3  # the command could not run (2 is "denied" since issue 18)
    assert err == "creditgate: a client certificate needs its key, and a key its certificate\n"
    for refused in (no_cert, plaintext):
        _, err = refused.communicate(timeout=60)
        assert refused.returncode == 1
        assert err.startswith("creditgate: UNAVAILABLE")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"CREDITGATE_TLS_CERT": "/nonexistent/cert.pem"}, "set both CREDITGATE_TLS_CERT"),
        (
            {"CREDITGATE_TLS_CERT": "/nonexistent/c.pem", "CREDITGATE_TLS_KEY": "/nonexistent/k"},
            "CREDITGATE_TLS_CERT=/nonexistent/c.pem: no such file",
        ),
    ],
)
def test_serve_with_bad_tls_files_exits_2_with_one_line(
    setting: dict[str, str], message: str
) -> None:
    """A missing certificate stops ``serve`` before it starts: exit 2, one line, no traceback."""
    proc = _cli("serve", CREDITGATE_REDIS_URL="redis://127.0.0.1:1/0", **setting)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [f"creditgate: {err.strip().split(': ', 1)[1]}"]
    assert message in err
    assert "Traceback" not in err


def test_probes_reach_health_in_plaintext_beside_a_tls_port(redis_url: str, kit: CertKit) -> None:
    """CREDITGATE_HEALTH_LISTEN: plaintext health for probes; the main port stays TLS-only."""
    server = kit.issue("server", serial=4)
    port, probe_port = _free_port(), _free_port()
    env = _env(
        CREDITGATE_REDIS_URL=redis_url,
        CREDITGATE_LISTEN=f"127.0.0.1:{port}",
        CREDITGATE_HEALTH_LISTEN=f"127.0.0.1:{probe_port}",
        CREDITGATE_TLS_CERT=str(server.cert),
        CREDITGATE_TLS_KEY=str(server.key),
    )
    proc = subprocess.Popen([str(CREDITGATE), "serve"], cwd=ROOT, env=env)  # noqa: S603
    try:
        _wait_serving(
            f"localhost:{port}", grpc.ssl_channel_credentials(kit.ca.cert.read_bytes()), proc
        )
        with grpc.insecure_channel(f"127.0.0.1:{probe_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in ("", "liveness", "creditgate.v1.QuotaService"):
                answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
            with pytest.raises(grpc.RpcError) as other:
                channel.unary_unary("/creditgate.v1.QuotaService/GetBalance")(b"", timeout=5)
            assert other.value.code() == grpc.StatusCode.UNIMPLEMENTED  # health only
        with grpc.insecure_channel(f"127.0.0.1:{port}") as plain:
            stub = health_pb2_grpc.HealthStub(plain)
            with pytest.raises(grpc.RpcError) as refused:
                stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        proc.terminate()
        proc.wait(timeout=15)
