# syntax=docker/dockerfile:1

# --- builder: generate the gRPC stubs and build the wheel ---------------------------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
RUN python -m pip install "grpcio-tools>=1.62"

# .gitignore too: hatch reads it to leave caches and stray files out of the wheel.
COPY pyproject.toml .gitignore ./
COPY proto ./proto
COPY src ./src
# The stubs are gitignored; regenerate them so the wheel carries them (hatch "artifacts").
RUN rm -rf src/creditgate/v1 \
 && mkdir -p src/creditgate/v1 \
 && python -m grpc_tools.protoc -I proto \
      --python_out=src --pyi_out=src --grpc_python_out=src proto/creditgate/v1/*.proto \
 && touch src/creditgate/v1/__init__.py \
 && python -m pip wheel --no-deps --wheel-dir /dist .

# --- runtime -----------------------------------------------------------------------------
FROM python:3.11-slim AS runtime

# gRPC listens on every address of the container, so callers need a bearer token: the image
# runs with CREDITGATE_AUTH=tokens and reads the hashed tokens from /var/lib/creditgate/tokens.json
# (or CREDITGATE_TOKENS_FILE). Without that file `serve` prints one line saying so and exits 2.
# Make one with: docker run --rm -v "$PWD:/out" IMAGE token --file /out/tokens.json create \
#   --name app --role service   (prints the token once; mount the file, keep the token secret).
# Anonymous callers only on a machine of your own: CREDITGATE_AUTH=none, ports published on
# 127.0.0.1 (deploy/docker-compose.yaml). See docs/SECURITY.md.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CREDITGATE_LISTEN=0.0.0.0:50051 \
    CREDITGATE_AUTH=tokens \
    CREDITGATE_METRICS_PORT=9464 \
    CREDITGATE_DATA_DIR=/var/lib/creditgate \
    CREDITGATE_CONFIG=/etc/creditgate/plans.yaml \
    CREDITGATE_LEDGER_URL=sqlite:////var/lib/creditgate/ledger.db

# setpriv (util-linux) makes the embedded redis-server and the other server processes die with
# the sidecar (PR_SET_PDEATHSIG); the build fails if the base image ever lacks it.
RUN command -v setpriv \
 && groupadd --system --gid 10001 creditgate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/creditgate --shell /usr/sbin/nologin creditgate \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/creditgate

# The demo catalog as a default; mount your own plans file over it (or set CREDITGATE_CONFIG).
COPY examples/demo.yaml /etc/creditgate/plans.yaml
COPY --from=builder /dist/ /tmp/dist/
RUN python -m pip install /tmp/dist/*.whl && rm -rf /tmp/dist

WORKDIR /var/lib/creditgate
USER 10001:10001
EXPOSE 50051 9464

# grpc.health.v1 Check on the "liveness" service: SERVING while the process serves, whatever
# Redis does (Docker restarts an unhealthy container under Swarm, and a Redis outage must not do
# that). Readiness, whether Redis answers, is the overall service ("") for load balancers.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; r = g.HealthStub(grpc.insecure_channel('127.0.0.1:50051')).Check(h.HealthCheckRequest(service='liveness'), timeout=3); sys.exit(0 if r.status == h.HealthCheckResponse.SERVING else 1)"]

ENTRYPOINT ["creditgate"]
CMD ["serve"]
