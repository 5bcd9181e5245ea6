"""TLS and mutual TLS on the gRPC port, and certificates rotated under a running server.

Real grpc.aio servers on port 0 with certificates from a throwaway CA (the ``openssl``
command); real TLS channels. Which certificate a new connection sees is read with Python's own
TLS client, which shows the peer certificate.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis

from creditgate.client.channel import ClientTLS, client_channel
from creditgate.domain.errors import ConfigError
from creditgate.engine import Engine
from creditgate.testing.certs import CertKit, Issued
from creditgate.transport.tls import server_credentials
from creditgate.wiring.server import build_server
from creditgate.wiring.settings import Settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from creditgate.domain.catalog import Catalog

CHECK = health_pb2.HealthCheckRequest(service="")


@pytest.fixture
def kit(tmp_path: Path) -> CertKit:
    try:
        return CertKit(tmp_path / "pki")
    except LookupError as exc:
        pytest.skip(str(exc))


async def _serve(
    engine: Engine, creds: grpc.ServerCredentials | None
) -> tuple[grpc.aio.Server, str]:
    server, health, port = await build_server(engine, "127.0.0.1:0", credentials=creds)
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    return server, f"localhost:{port}"


@pytest.fixture
async def engine(redis_url: str, demo_catalog: Catalog) -> AsyncIterator[Engine]:
    redis = Redis.from_url(redis_url)
    yield Engine(redis, demo_catalog, test_clock=True)
    await redis.aclose()


async def _health(target: str, tls: ClientTLS | None) -> int:
    async with client_channel(target, tls) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(CHECK, timeout=5)
        return int(response.status)


def _peer_certificate(port: int, ca: Path, client: Issued | None = None) -> dict[str, object]:
    """The certificate a new TLS connection to ``port`` is shown (Python's TLS client)."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        cert = tls.getpeercert()
    assert cert is not None
    return dict(cert)


def _common_name(cert: dict[str, object]) -> str:
    subject = cert["subject"]
    assert isinstance(subject, tuple)
    return next(value for rdn in subject for key, value in rdn if key == "commonName")


async def test_tls_server_answers_tls_clients_and_refuses_plaintext(
    engine: Engine, kit: CertKit
) -> None:
    """With a certificate set, a TLS client trusting the CA is served; a plaintext one is not."""
    server_cert = kit.issue("server", serial=2)
    creds = server_credentials(server_cert.cert, server_cert.key)
    server, target = await _serve(engine, creds)
    try:
        assert (
            await _health(target, ClientTLS(ca=kit.ca.cert))
            == health_pb2.HealthCheckResponse.SERVING
        )
        with pytest.raises(grpc.aio.AioRpcError) as plain:
            await _health(target, None)
        assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
        other = CertKit(kit.dir / "other", "other-ca")  # a CA the server's cert is not from
        with pytest.raises(grpc.aio.AioRpcError) as untrusted:
            await _health(target, ClientTLS(ca=other.ca.cert))
        assert untrusted.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)


async def test_mutual_tls_refuses_clients_without_a_certificate(
    engine: Engine, kit: CertKit
) -> None:
    """With a client CA set, only clients presenting a certificate that CA signed get in."""
    server_cert = kit.issue("server", serial=2)
    client_cert = kit.issue("client", serial=3, common_name="billing-service")
    creds = server_credentials(server_cert.cert, server_cert.key, client_ca=kit.ca.cert)
    server, target = await _serve(engine, creds)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await _health(target, ClientTLS(ca=kit.ca.cert))
        assert anonymous.value.code() == grpc.StatusCode.UNAVAILABLE
        stranger = CertKit(kit.dir / "stranger", "stranger-ca").issue("intruder", serial=9)
        with pytest.raises(grpc.aio.AioRpcError) as foreign:
            await _health(target, ClientTLS(kit.ca.cert, stranger.cert, stranger.key))
        assert foreign.value.code() == grpc.StatusCode.UNAVAILABLE
        tls = ClientTLS(ca=kit.ca.cert, cert=client_cert.cert, key=client_cert.key)
        assert await _health(target, tls) == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(None)


def _rotate(kit: CertKit, into: Issued, serial: int, common_name: str) -> None:
    """Replace ``into``'s files with a new certificate the way a Secret update does: atomically."""
    fresh = kit.issue(f"fresh{serial}", serial=serial, common_name=common_name)
    fresh.key.replace(into.key)
    fresh.cert.replace(into.cert)


async def test_rotated_certificate_serves_new_connections_without_restart(
    engine: Engine, kit: CertKit
) -> None:
    """New files are read at the next handshake; open channels keep working, nothing restarts.

    The rotation also moves to a new CA, so only a client trusting the new CA gets in after it:
    that is the gRPC client's own proof that the new certificate is the one served.
    """
    live = kit.issue("server", serial=2, common_name="before")
    server, target = await _serve(engine, server_credentials(live.cert, live.key))
    port = int(target.rsplit(":", 1)[1])
    try:
        before = _peer_certificate(port, kit.ca.cert)
        assert (before["serialNumber"], _common_name(before)) == ("02", "before")
        old_channel = client_channel(target, ClientTLS(ca=kit.ca.cert))
        stub = health_pb2_grpc.HealthStub(old_channel)
        await stub.Check(CHECK, timeout=5)

        new_ca = CertKit(kit.dir / "next", "next-ca")
        await asyncio.sleep(0.01)  # a later mtime even on coarse-grained file systems
        _rotate(new_ca, live, serial=0x77, common_name="after")

        after = _peer_certificate(port, new_ca.ca.cert)
        assert (after["serialNumber"], _common_name(after)) == ("77", "after")
        assert await _health(target, ClientTLS(ca=new_ca.ca.cert)) == 1
        with pytest.raises(grpc.aio.AioRpcError):
            await _health(target, ClientTLS(ca=kit.ca.cert))  # the old CA no longer matches
        assert (await stub.Check(CHECK, timeout=5)).status == 1  # the open connection stays
        await old_channel.close()
    finally:
        await server.stop(None)


async def test_half_written_rotation_keeps_the_old_certificate(
    engine: Engine, kit: CertKit
) -> None:
    """A certificate that does not match the key (yet) is skipped: the old pair stays in use."""
    live = kit.issue("server", serial=2, common_name="before")
    server, target = await _serve(engine, server_credentials(live.cert, live.key))
    port = int(target.rsplit(":", 1)[1])
    try:
        fresh = kit.issue("fresh", serial=5, common_name="after")
        fresh.cert.replace(live.cert)  # the key is not replaced
        seen = _peer_certificate(port, kit.ca.cert)
        assert (seen["serialNumber"], _common_name(seen)) == ("02", "before")
        fresh.key.replace(live.key)  # now the pair matches
        seen = _peer_certificate(port, kit.ca.cert)
        assert (seen["serialNumber"], _common_name(seen)) == ("05", "after")
    finally:
        await server.stop(None)


def test_bad_tls_settings_are_one_line_errors(kit: CertKit, tmp_path: Path) -> None:
    """Missing, unreadable, mismatched or half-set files name the setting in one line."""
    good = kit.issue("server", serial=2)
    other = kit.issue("other", serial=3)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    cases = [
        ((good.cert, None, None), "set both CREDITGATE_TLS_CERT and CREDITGATE_TLS_KEY"),
        ((None, None, kit.ca.cert), "CREDITGATE_TLS_CLIENT_CA needs CREDITGATE_TLS_CERT"),
        ((tmp_path / "nope.pem", good.key, None), "CREDITGATE_TLS_CERT="),
        ((junk, good.key, None), "not a PEM certificate chain and its matching private key"),
        ((good.cert, other.key, None), "not a PEM certificate chain and its matching private key"),
        ((good.cert, good.key, junk), "CREDITGATE_TLS_CLIENT_CA="),
    ]
    for args, text in cases:
        with pytest.raises(ConfigError) as err:
            server_credentials(*args)
        assert text in str(err.value)
        assert "\n" not in str(err.value)
    assert server_credentials(None, None) is None


def test_empty_tls_variables_mean_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """``CREDITGATE_TLS_CERT=""`` (a manifest's empty value) is no TLS, not the directory '.'."""
    for name in ("CREDITGATE_TLS_CERT", "CREDITGATE_TLS_KEY", "CREDITGATE_TLS_CLIENT_CA"):
        monkeypatch.setenv(name, "")
    settings = Settings()
    assert (settings.tls_cert, settings.tls_key, settings.tls_client_ca) == (None, None, None)
    assert server_credentials(settings.tls_cert, settings.tls_key, settings.tls_client_ca) is None
