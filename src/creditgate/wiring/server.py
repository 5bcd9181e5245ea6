"""Wiring: settings -> Redis -> engine -> gRPC server (quota, admin, health, reflection, metrics).

``serve()`` starts serving before Redis answers (readiness NOT_SERVING, liveness SERVING, see
transport/health.py), provisions demo accounts once it does, and runs until SIGTERM/SIGINT;
then it reports NOT_SERVING, drains in-flight RPCs for ``grace_seconds`` and closes Redis (and
stops a private embedded Redis, which it restarts meanwhile if it dies).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from creditgate.credits import Credits
from creditgate.domain.errors import ConfigError, UnavailableError
from creditgate.driver.cluster import cluster_client
from creditgate.driver.connect import redis_client
from creditgate.notify import Notifications
from creditgate.payments.purchases import Purchases
from creditgate.transport import limits
from creditgate.transport.admin import AdminService
from creditgate.transport.audit import Auditor
from creditgate.transport.budget import Budget
from creditgate.transport.credits import CreditsService
from creditgate.transport.envoy_ext_authz import SERVICE as EXT_AUTHZ_SERVICE
from creditgate.transport.envoy_ext_authz import AuthorizationService
from creditgate.transport.envoy_ratelimit import SERVICE as RATE_LIMIT_SERVICE
from creditgate.transport.envoy_ratelimit import RateLimitService
from creditgate.transport.guard import Guard
from creditgate.transport.health import RedisHealth
from creditgate.transport.quota import QuotaService
from creditgate.transport.registry import add_service
from creditgate.transport.tls import server_credentials
from creditgate.v1 import admin_pb2, credits_pb2, quota_pb2
from creditgate.wiring import exposure
from creditgate.wiring.consumers import Consumers
from creditgate.wiring.embedded.redis import EmbeddedRedis, find_redis_server
from creditgate.wiring.embedded.supervisor import Supervisor
from creditgate.wiring.engine import engine_for, hot_path_for
from creditgate.wiring.processes import ServerProcesses
from creditgate.wiring.startup import add_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from google.protobuf.message import Message
    from redis.asyncio import Redis

    from creditgate.domain.catalog import Catalog
    from creditgate.engine import Engine
    from creditgate.ledger.store import LedgerStore
    from creditgate.wiring.settings import Settings

log = logging.getLogger("creditgate")
SERVICES = (
    "creditgate.v1.QuotaService",
    "creditgate.v1.AdminService",
    "creditgate.v1.CreditsService",
    RATE_LIMIT_SERVICE.full_name,  # envoy.service.ratelimit.v3.RateLimitService
    EXT_AUTHZ_SERVICE.full_name,  # envoy.service.auth.v3.Authorization
)


def _messages() -> dict[str, type[Message]]:
    found: dict[str, type[Message]] = {}
    for module in (quota_pb2, admin_pb2, credits_pb2, rls_pb2, external_auth_pb2):
        for name in module.DESCRIPTOR.message_types_by_name:
            found[name] = getattr(module, name)
    return found


@dataclass
class Backends:
    redis: Redis
    engine: Engine
    embedded: EmbeddedRedis | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Set when a backend is lost for good (the embedded Redis cannot be restarted): serve exits 1.
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    lost_reason: str = ""

    def lose(self, reason: str) -> None:
        self.lost_reason = reason
        self.lost.set()


@contextlib.asynccontextmanager
async def open_backends(
    settings: Settings,
    catalog: Catalog | None = None,
) -> AsyncIterator[Backends]:
    """Redis (embedded when asked, and kept running) and the engine; closed on exit."""
    embedded = None
    url = settings.redis_url
    if url == "embedded":
        embedded = EmbeddedRedis(
            data_dir=settings.data_dir / "redis",
            appendonly=True,
            binary=find_redis_server(settings.embedded_server),
        )
        # On this thread, not a worker thread: the child's PR_SET_PDEATHSIG follows the thread
        # that started it. Nothing is served yet, so blocking the loop here costs nothing.
        embedded.start()
        url = embedded.url
        log.info("embedded redis-server started at %s (pid %s)", url, embedded.pid)
    cluster = settings.redis_cluster and embedded is None
    redis = (cluster_client if cluster else redis_client)(
        url, timeout=settings.redis_timeout_seconds, max_connections=settings.redis_max_connections
    )
    fast = hot_path_for(settings, url, cluster=cluster) if settings.fast_path else None
    engine = engine_for(settings, redis, catalog, fast)
    backends = Backends(redis, engine, embedded)
    supervisor = None
    if embedded is not None:
        loop = asyncio.get_running_loop()

        def lose(why: str) -> None:  # called on the supervisor's thread
            loop.call_soon_threadsafe(backends.lose, why)

        supervisor = Supervisor(embedded, lose)
        supervisor.start()
    try:
        yield backends
    finally:
        if fast is not None:
            await fast.aclose()
        await redis.aclose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        if supervisor is not None:
            await asyncio.to_thread(supervisor.join)


async def build_server(  # noqa: PLR0913 - the security options are keywords with defaults
    engine: Engine,
    listen: str,
    *,
    reuse_port: bool = False,
    credentials: grpc.ServerCredentials | None = None,
    guard: Guard | None = None,
    reflection_on: bool = True,
    auditor: Auditor | None = None,
    budget: Budget | None = None,
    purchases: Purchases | None = None,
    notifications: Notifications | None = None,
    credits_view: Credits | None = None,
) -> tuple[grpc.aio.Server, HealthServicer, int]:
    """A started-ready (not yet started) server; returns it, its health servicer and the port.

    ``reuse_port`` lets the other server processes of one sidecar bind the same port; off, a
    second server on a taken port fails instead of silently sharing it. ``credentials``
    (``transport.tls.server_credentials``) make the port TLS; without them it is plaintext.
    ``guard`` (None: no auth) gates the quota, admin and both Envoy services; health and
    reflection stay open for probes. ``budget`` (None: the default limits) bounds the calls and
    request bytes in flight across those services (transport/budget.py). ``purchases`` (None:
    the approving test provider, recording in the auditor's ledger) runs the Purchase RPC;
    ``credits_view`` (None: the auditor's ledger, if any) serves CreditsService.
    """
    budget = budget or Budget()
    server = grpc.aio.server(
        options=[("grpc.so_reuseport", 1 if reuse_port else 0), *limits.server_options()]
    )
    messages = _messages()
    view = credits_view or Credits.of(auditor.store if auditor else None, engine)
    for service, servicer in (
        (quota_pb2.DESCRIPTOR.services_by_name["QuotaService"], QuotaService(engine)),
        (
            admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
            AdminService(engine, auditor, purchases, notifications),
        ),
        (credits_pb2.DESCRIPTOR.services_by_name["CreditsService"], CreditsService(view)),
        # Envoy's HTTP rate-limit and external authorization filters, on the same port.
        (RATE_LIMIT_SERVICE, RateLimitService(engine)),
        (EXT_AUTHZ_SERVICE, AuthorizationService(engine)),
    ):
        add_service(server, service, servicer, messages, guard=guard, budget=budget)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if reflection_on:
        reflection.enable_server_reflection(
            (
                *SERVICES,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
    port = add_port(server, listen, credentials, "CREDITGATE_LISTEN", reuse_port=reuse_port)
    return server, health, port


@contextlib.asynccontextmanager
async def ledger_for(settings: Settings, backends: Backends) -> AsyncIterator[LedgerStore | None]:
    """Open the ledger: hydration, migrations and, with CREDITGATE_WORKER_IN_PROCESS, the worker.

    Otherwise the worker (embedded, or CREDITGATE_RUN_WORKER) is a child process
    (``ServerProcesses``).
    """
    if not settings.ledger():
        yield None
        return
    from creditgate.ledger.hydrate import install_hydration  # noqa: PLC0415
    from creditgate.wiring.startup import open_ledger_or_explain  # noqa: PLC0415

    embedded = backends.embedded is not None
    migrate = settings.migrate_on_start or embedded
    store = await open_ledger_or_explain(settings.ledger(), migrate=migrate)
    worker, task = None, None
    try:
        if settings.hydrate:
            install_hydration(backends.engine, store)
        if (settings.run_worker or embedded) and settings.worker_in_process:
            worker = Consumers(settings, backends.redis, store, backends.engine)
            try:
                await worker.setup()
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                # Serve anyway: the worker makes its consumer groups once Redis answers.
                log.info("ledger worker: Redis not reachable yet (%s)", exc)
            task = asyncio.create_task(worker.run())
            log.info("ledger worker running in-process on %s", settings.ledger())
        yield store
    finally:
        if worker is not None and task is not None:
            worker.stop()
            await task
        await store.close()


async def _health_only(health: HealthServicer, settings: Settings) -> grpc.aio.Server | None:
    """The plaintext health listener of ``CREDITGATE_HEALTH_LISTEN`` (None when unset).

    It serves the same statuses as the main port (liveness, readiness) and nothing else, so a
    probe that cannot speak TLS can still reach them; health needs no token anyway.
    """
    if not settings.health_listen:
        return None
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    add_port(server, settings.health_listen, None, "CREDITGATE_HEALTH_LISTEN")
    await server.start()
    log.info("health (only) on %s, plaintext, for probes", settings.health_listen)
    return server


async def _become_ready(
    readiness: RedisHealth, engine: Engine, *, demo: bool, others: Callable[[], None]
) -> None:
    """Wait for Redis, provision the demo accounts, start the other processes, watch Redis."""
    while True:
        await readiness.wait_for_redis()
        if not demo:
            break
        from creditgate.wiring.demo import provision  # noqa: PLC0415

        try:
            await provision(engine)
            break
        except UnavailableError as exc:
            log.warning("demo accounts: %s; again once Redis answers", exc)
    # Everything allocated so far lives as long as the process: keep the collector from
    # walking it again and again under load.
    gc.collect()
    gc.freeze()
    others()
    await readiness.watch()


async def serve(settings: Settings, *, demo: bool = False) -> None:
    """Run the sidecar until a termination signal, or exit 1 if embedded Redis is lost."""
    # Before anything starts: an unsafe exposure or a bad certificate is one line and exit 2,
    # not a half-up sidecar.
    credentials = server_credentials(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    tokens = exposure.token_store_for(settings)
    guard = Guard(tokens) if tokens is not None else None
    async with open_backends(settings) as backends, ledger_for(settings, backends) as store:
        processes = settings.server_processes()
        shared = processes > 1
        if shared and not settings.fixed_port():
            msg = "CREDITGATE_PROCESSES above 1 needs a fixed port in CREDITGATE_LISTEN, not :0"
            raise ConfigError(msg)
        provider = settings.payment_provider()
        log.info("payments: %s", provider.name)
        server, health, port = await build_server(
            backends.engine,
            settings.listen,
            reuse_port=shared,
            credentials=credentials,
            guard=guard,
            reflection_on=settings.reflection,
            auditor=Auditor(store),
            budget=Budget(settings.max_calls_in_flight, settings.max_bytes_in_flight),
            purchases=Purchases(backends.engine, provider, store),
            notifications=Notifications.of(store),
        )
        readiness = RedisHealth(health, backends.redis, SERVICES)
        await readiness.start()
        if settings.metrics_port and not settings.process_index:
            exposure.start_metrics(settings)
        probes = await _health_only(health, settings) if not settings.process_index else None
        await server.start()
        log.info(
            "creditgate listening on %s (port %d, process %d of %d), catalog %s, %d plans%s; "
            "ready once Redis answers",
            settings.listen,
            port,
            settings.process_index + 1,
            processes,
            settings.config,
            len(backends.engine.catalog.plans),
            ", test clock on (AdvanceTestClock moves each account's time)"
            if settings.test_clock
            else "",
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        lost = asyncio.create_task(backends.lost.wait())
        lost.add_done_callback(lambda _: stop.set())
        worker = (
            bool(settings.ledger())
            and (settings.run_worker or backends.embedded is not None)
            and not settings.worker_in_process
        )
        others = (
            ServerProcesses(
                settings,
                backends.embedded.url if backends.embedded else settings.redis_url,
                worker=worker,
            )
            if (shared or worker) and not settings.process_index
            else None
        )
        watcher = asyncio.create_task(
            _become_ready(
                readiness,
                backends.engine,
                demo=demo,
                others=(lambda: others.start(stop)) if others is not None else lambda: None,
            )
        )
        await stop.wait()
        log.info("stopping: draining for up to %.1f s", settings.grace_seconds)
        watcher.cancel()
        lost.cancel()
        if others is not None:
            others.terminate()
        await health.enter_graceful_shutdown()
        await server.stop(settings.grace_seconds)
        if probes is not None:
            await probes.stop(None)
        if others is not None:
            await others.wait(settings.grace_seconds + 5)
        await provider.close()
        if backends.lost.is_set():
            log.error("exiting 1: %s", backends.lost_reason)
            raise SystemExit(1)
        if others is not None and others.failed:
            raise SystemExit(1)
