"""deploy/ holds what it says: every YAML document parses, every Envoy config validates.

Every Envoy configuration shipped in deploy/ is validated with the real Envoy 1.40
(``envoy --mode validate``): the bootstraps in deploy/envoy/ (compose mounts one of them), the
bootstrap embedded in the Kubernetes ConfigMap, and the Istio EnvoyFilter's patch values applied
to deploy/envoy/ratelimit.yaml. The copies are also checked against deploy/envoy/ratelimit.yaml,
the one source: the compose file differs only in its addresses, the ConfigMap not at all, the
EnvoyFilter only in the cluster it asks and the token. Then the key facts of each example: the
native sidecars, the Istio provider and its policy, the domain the plans file maps.
"""

from __future__ import annotations

import copy
import re
import shlex
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from envoy_kit import BOOTSTRAP, EXT_AUTHZ, ROOT, validate

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yaml"
COMPOSE_ENVOY = DEPLOY / "envoy" / "ratelimit.compose.yaml"
SIDECAR = DEPLOY / "kubernetes" / "sidecar.yaml"
SECURITY = DEPLOY / "kubernetes" / "security.yaml"
ISTIO = DEPLOY / "istio"
DEMO = ROOT / "examples" / "demo.yaml"
PLACEHOLDER = "REPLACE_WITH_A_SERVICE_TOKEN"
HCM = "envoy.filters.network.http_connection_manager"
RATELIMIT = "envoy.filters.http.ratelimit"
ROUTER = "envoy.filters.http.router"

Doc = dict[str, Any]


def _load(path: Path) -> Any:  # noqa: ANN401 - YAML is whatever the file holds
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _documents(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def _all_documents() -> list[tuple[Path, Doc]]:
    return [(p, d) for p in sorted(DEPLOY.rglob("*.y*ml")) for d in _documents(p)]


def _one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _manager(config: Doc) -> Doc:
    listener = config["static_resources"]["listeners"][0]
    chain_filter = listener["filter_chains"][0]["filters"][0]
    assert chain_filter["name"] == HCM
    manager: Doc = chain_filter["typed_config"]
    return manager


def _filter(config: Doc, name: str) -> Doc:
    found = [f for f in _manager(config)["http_filters"] if f["name"] == name]
    assert len(found) == 1, name
    return found[0]


def _clusters(config: Doc) -> dict[str, Doc]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


def _endpoint(cluster: Doc) -> Doc:
    address: Doc = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    return address["address"]["socket_address"]


def _demo_domains() -> set[str]:
    return set(_load(DEMO)["gateway"]["envoy_rate_limit"]["domains"])


# --- every YAML document parses -------------------------------------------------------------


def test_every_yaml_document_in_deploy_parses() -> None:
    """Each file holds mappings only; each Kubernetes or Istio document has a kind and a name."""
    files = sorted(DEPLOY.rglob("*.y*ml"))
    assert {p.relative_to(DEPLOY).as_posix() for p in files} >= {
        "docker-compose.yaml",
        "envoy/ratelimit.yaml",
        "envoy/ext_authz.yaml",
        "envoy/ratelimit.compose.yaml",
        "kubernetes/sidecar.yaml",
        "kubernetes/security.yaml",
        "istio/mesh-config.yaml",
        "istio/creditgate.yaml",
        "istio/ext-authz.yaml",
        "istio/ratelimit-envoyfilter.yaml",
    }
    for path in files:
        docs = _documents(path)
        assert docs, path
        for doc in docs:
            assert isinstance(doc, dict), path
            if "apiVersion" in doc:
                assert doc["kind"], path
                assert doc["metadata"]["name"], path


# --- every Envoy config validates -----------------------------------------------------------


def _configmap_bootstraps() -> list[tuple[str, str]]:
    """Every ConfigMap value in deploy/ that is an Envoy bootstrap, as (id, text)."""
    found = []
    for path, doc in _all_documents():
        if doc.get("kind") != "ConfigMap":
            continue
        for key, text in (doc.get("data") or {}).items():
            parsed = yaml.safe_load(text)
            if isinstance(parsed, dict) and "static_resources" in parsed:
                rel = path.relative_to(DEPLOY).as_posix()
                found.append((f"{rel}:ConfigMap/{doc['metadata']['name']}:{key}", text))
    return found


def _envoy_filters() -> list[Doc]:
    return [d for _, d in _all_documents() if d.get("kind") == "EnvoyFilter"]


def _insert(filters: list[Doc], operation: str, value: Doc, sub_filter: str | None) -> None:
    if operation == "INSERT_FIRST":
        filters.insert(0, value)
        return
    names = [f["name"] for f in filters]
    assert sub_filter in names, f"the patch's subFilter {sub_filter} is not in the chain"
    at = names.index(sub_filter)
    if operation == "INSERT_BEFORE":
        filters.insert(at, value)
    elif operation == "INSERT_AFTER":
        filters.insert(at + 1, value)
    else:
        pytest.fail(f"HTTP_FILTER patch {operation}: not applied by this test")


def _apply_envoy_filter(base: Doc, envoy_filter: Doc, asked: Callable[[str], Doc]) -> Doc:
    """``base`` with the EnvoyFilter's patches applied as Istio applies them to one listener.

    ``asked(cluster_name)`` gives a cluster for every cluster a patch refers to (Istio makes
    the outbound clusters from the Services).
    """
    config = copy.deepcopy(base)
    manager = _manager(config)
    for patch in envoy_filter["spec"]["configPatches"]:
        value = copy.deepcopy(patch["patch"]["value"])
        operation = patch["patch"]["operation"]
        if patch["applyTo"] == "HTTP_FILTER":
            chain = patch["match"]["listener"]["filterChain"]["filter"]
            assert chain["name"] == HCM
            sub_filter = chain.get("subFilter", {}).get("name")
            _insert(manager["http_filters"], operation, value, sub_filter)
        elif patch["applyTo"] == "VIRTUAL_HOST":
            assert operation == "MERGE"
            for host in manager["route_config"]["virtual_hosts"]:
                host.update(value)
        else:
            pytest.fail(f"applyTo {patch['applyTo']}: not applied by this test")
    clusters = config["static_resources"]["clusters"]
    for f in manager["http_filters"]:
        service = f.get("typed_config", {}).get("rate_limit_service")
        if service is not None:
            clusters.append(asked(service["grpc_service"]["envoy_grpc"]["cluster_name"]))
    return config


def _without_gate(base: Doc) -> Doc:
    """deploy/envoy/ratelimit.yaml without what the EnvoyFilter adds: a plain Istio listener."""
    config = copy.deepcopy(base)
    manager = _manager(config)
    manager["http_filters"] = [f for f in manager["http_filters"] if f["name"] == ROUTER]
    for host in manager["route_config"]["virtual_hosts"]:
        for route in host["routes"]:
            route["route"].pop("rate_limits", None)
    config["static_resources"]["clusters"] = [
        c for c in config["static_resources"]["clusters"] if c["name"] != "creditgate"
    ]
    return config


def _like_creditgate(base: Doc) -> Callable[[str], Doc]:
    def asked(name: str) -> Doc:
        cluster = copy.deepcopy(_clusters(base)["creditgate"])
        cluster["name"] = name
        cluster["load_assignment"]["cluster_name"] = name
        return cluster

    return asked


def _patched_bootstraps() -> list[tuple[str, str]]:
    base = _load(BOOTSTRAP)
    return [
        (
            f"EnvoyFilter/{f['metadata']['name']}",
            yaml.safe_dump(_apply_envoy_filter(_without_gate(base), f, _like_creditgate(base))),
        )
        for f in _envoy_filters()
    ]


def _envoy_configs() -> list[tuple[str, str]]:
    files = [
        (p.relative_to(DEPLOY).as_posix(), p.read_text(encoding="utf-8"))
        for p in sorted((DEPLOY / "envoy").glob("*.yaml"))
    ]
    return files + _configmap_bootstraps() + _patched_bootstraps()


ENVOY_CONFIGS = _envoy_configs()


def test_the_census_of_envoy_configs_finds_every_kind() -> None:
    """The files, the ConfigMap and the EnvoyFilter are all found, so each is validated below."""
    ids = [name for name, _ in ENVOY_CONFIGS]
    assert "envoy/ratelimit.yaml" in ids
    assert "envoy/ext_authz.yaml" in ids
    assert "envoy/ratelimit.compose.yaml" in ids
    assert "kubernetes/sidecar.yaml:ConfigMap/creditgate-envoy:envoy.yaml" in ids
    assert "EnvoyFilter/creditgate-ratelimit" in ids
    # compose's Envoy mounts only files of deploy/envoy (validated as files above)
    envoys = [s for s in _load(COMPOSE)["services"].values() if "envoy" in s["image"]]
    assert envoys
    for service in envoys:
        for volume in service.get("volumes", []):
            source = DEPLOY / volume.split(":")[0]
            assert source.resolve().parent == (DEPLOY / "envoy").resolve(), volume
            assert source.is_file(), volume


@pytest.mark.parametrize(("name", "text"), ENVOY_CONFIGS, ids=[n for n, _ in ENVOY_CONFIGS])
def test_every_envoy_config_validates(name: str, text: str, tmp_path: Path) -> None:
    """Envoy 1.40 accepts it as shipped (``--mode validate`` loads it all, binds nothing)."""
    path = tmp_path / "envoy.yaml"
    path.write_text(text, encoding="utf-8")
    done = validate(path)
    assert done.returncode == 0, f"{name}:\n{done.stdout}{done.stderr}"
    assert f"configuration '{path}' OK" in done.stdout


def test_the_bootstraps_use_a_domain_the_demo_plans_map() -> None:
    assert _filter(_load(BOOTSTRAP), RATELIMIT)["typed_config"]["domain"] in _demo_domains()


# --- docker compose -------------------------------------------------------------------------


def _normalised_addresses(config: Doc) -> Doc:
    config = copy.deepcopy(config)
    for cluster in config["static_resources"]["clusters"]:
        cluster["type"] = "ADDRESS"
        _endpoint(cluster)["address"] = "ADDRESS"
    return config


def test_the_compose_bootstrap_is_ratelimit_yaml_with_the_services_addresses() -> None:
    """Nothing differs from deploy/envoy/ratelimit.yaml but the clusters' type and hosts."""
    compose_envoy = _load(COMPOSE_ENVOY)
    assert _normalised_addresses(compose_envoy) == _normalised_addresses(_load(BOOTSTRAP))
    clusters = _clusters(compose_envoy)
    services = _load(COMPOSE)["services"]
    for name, host in (("app", "echo"), ("creditgate", "creditgate")):
        assert clusters[name]["type"] == "STRICT_DNS"
        assert _endpoint(clusters[name])["address"] == host
        assert host in services
    listen = services["creditgate"]["environment"]["CREDITGATE_LISTEN"]
    assert listen.rsplit(":", 1)[1] == str(_endpoint(clusters["creditgate"])["port_value"])
    echo_listen = next(a for a in services["echo"]["command"] if a.startswith("-listen="))
    assert echo_listen == f"-listen=:{_endpoint(clusters['app'])['port_value']}"


def test_compose_runs_envoy_in_front_of_the_echo_app() -> None:
    services = _load(COMPOSE)["services"]
    assert set(services) >= {"redis", "postgres", "creditgate", "worker", "echo", "envoy"}
    envoy = services["envoy"]
    assert envoy["image"].startswith("envoyproxy/envoy:v1.40")
    command = envoy["command"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in envoy["volumes"]}
    config_path = command[command.index("-c") + 1]
    assert mounted[config_path] == "./envoy/ratelimit.compose.yaml"
    listener = _load(COMPOSE_ENVOY)["static_resources"]["listeners"][0]
    port = listener["address"]["socket_address"]["port_value"]
    assert f"127.0.0.1:{port}:{port}" in envoy["ports"]
    assert envoy["depends_on"]["creditgate"]["condition"] == "service_healthy"
    # the echo app is reached through Envoy only
    assert "ports" not in services["echo"]
    # CREDITGATE_AUTH=none: the bootstrap's placeholder token is not checked
    assert services["creditgate"]["environment"]["CREDITGATE_AUTH"] == "none"


# --- Kubernetes: native sidecars ------------------------------------------------------------


def _pod(docs: list[Doc]) -> Doc:
    pod: Doc = _one(docs, "Deployment", "app")["spec"]["template"]["spec"]
    return pod


def test_creditgate_and_envoy_are_native_sidecars_started_before_the_app() -> None:
    """Init containers with restartPolicy Always, creditgate first, each with a startup probe."""
    pod = _pod(_documents(SIDECAR))
    init = pod["initContainers"]
    assert [c["name"] for c in init] == ["creditgate", "envoy"]
    assert [c["name"] for c in pod["containers"]] == ["app"]
    for container in init:
        assert container["restartPolicy"] == "Always", container["name"]
        assert "startupProbe" in container, container["name"]
        assert "readinessProbe" in container, container["name"]
    creditgate = init[0]
    assert creditgate["startupProbe"]["grpc"] == {"port": 8086, "service": "liveness"}
    assert creditgate["readinessProbe"]["grpc"] == {"port": 8086}
    env = {e["name"]: e.get("value") for e in creditgate["env"]}
    assert env["CREDITGATE_AUTH"] == "tokens"
    assert env["CREDITGATE_HEALTH_LISTEN"].endswith(":8086")
    listen_port = int(env["CREDITGATE_LISTEN"].rsplit(":", 1)[1])
    assert env["CREDITGATE_LISTEN"].startswith("127.0.0.1:")
    cluster = _clusters(_load(BOOTSTRAP))["creditgate"]
    assert _endpoint(cluster) == {"address": "127.0.0.1", "port_value": listen_port}


def test_the_configmap_holds_ratelimit_yaml_and_envoy_gets_its_token_from_a_secret() -> None:
    docs = _documents(SIDECAR)
    configmap = _one(docs, "ConfigMap", "creditgate-envoy")
    embedded = yaml.safe_load(configmap["data"]["envoy.yaml"])
    assert embedded == _load(BOOTSTRAP)  # the same file: the pod's addresses are the same
    pod = _pod(docs)
    envoy = next(c for c in pod["initContainers"] if c["name"] == "envoy")
    assert envoy["image"].startswith("envoyproxy/envoy:v1.40")
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in envoy["volumeMounts"]}
    assert mounts["/etc/envoy"]["configMap"]["name"] == "creditgate-envoy"
    # The start command puts the token in place of the placeholder, then runs that copy.
    script = " ".join(envoy["command"] + envoy["args"])
    words = shlex.split(script.split("-c", 1)[1])
    assert words[0].startswith("sed")
    assert f"s|{PLACEHOLDER}|$CREDITGATE_TOKEN|" in words
    assert "/etc/envoy/envoy.yaml" in words
    assert re.search(r"exec envoy -c /tmp/envoy.yaml\b", script)
    # the bootstrap with the token stays in memory
    assert mounts["/tmp"]["emptyDir"]["medium"] == "Memory"  # noqa: S108 - the container's
    grpc_service = _filter(embedded, RATELIMIT)["typed_config"]["rate_limit_service"]
    metadata = grpc_service["grpc_service"]["initial_metadata"]
    assert metadata == [{"key": "authorization", "value": f"Bearer {PLACEHOLDER}"}]
    token_env = next(e for e in envoy["env"] if e["name"] == "CREDITGATE_TOKEN")
    secret = token_env["valueFrom"]["secretKeyRef"]
    assert _one(_documents(SECURITY), "Secret", secret["name"])["stringData"][secret["key"]]


def test_clients_reach_the_app_through_envoy() -> None:
    docs = _documents(SIDECAR)
    listener = _load(BOOTSTRAP)["static_resources"]["listeners"][0]
    port = listener["address"]["socket_address"]["port_value"]
    envoy = next(c for c in _pod(docs)["initContainers"] if c["name"] == "envoy")
    assert {"name": "http", "containerPort": port} in envoy["ports"]
    service = _one(docs, "Service", "app")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    policy = _one(_documents(SECURITY), "NetworkPolicy", "creditgate-sidecar")
    admitted = [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert port in admitted
    assert 50051 not in admitted  # creditgate's gRPC stays inside the pod


# --- Istio ----------------------------------------------------------------------------------


def _istio() -> list[Doc]:
    return [d for p in sorted(ISTIO.glob("*.yaml")) for d in _documents(p)]


def test_the_custom_authorization_policy_names_the_mesh_provider() -> None:
    docs = _istio()
    providers = {
        p["name"]: p
        for p in _one(docs, "IstioOperator", "creditgate")["spec"]["meshConfig"][
            "extensionProviders"
        ]
    }
    policy = _one(docs, "AuthorizationPolicy", "creditgate-ext-authz")
    assert policy["spec"]["action"] == "CUSTOM"
    assert policy["spec"]["rules"]
    grpc = providers[policy["spec"]["provider"]["name"]]["envoyExtAuthzGrpc"]
    # the provider names creditgate's Service and port
    service = _one(docs, "Service", "creditgate")
    fqdn = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    assert grpc["service"] == fqdn
    assert grpc["port"] in [p["port"] for p in service["spec"]["ports"]]
    # and fails as deploy/envoy/ext_authz.yaml does
    ext_authz = _filter(_load(EXT_AUTHZ), "envoy.filters.http.ext_authz")["typed_config"]
    assert grpc["failOpen"] is ext_authz["failure_mode_allow"] is False
    assert grpc["statusOnError"] == "503"
    assert ext_authz["status_on_error"] == {"code": "ServiceUnavailable"}
    assert grpc["timeout"] == ext_authz["grpc_service"]["timeout"] == "1s"


def test_the_envoy_filter_is_ratelimit_yaml_asking_creditgates_service() -> None:
    """The same filters and descriptor actions; only the cluster and the token differ."""
    docs = _istio()
    envoy_filter = _one(docs, "EnvoyFilter", "creditgate-ratelimit")
    patches = envoy_filter["spec"]["configPatches"]
    values = {p["patch"]["value"].get("name", p["applyTo"]): p["patch"]["value"] for p in patches}
    base = _load(BOOTSTRAP)
    set_state = "envoy.filters.http.set_filter_state"
    assert values[set_state] == _filter(base, set_state)
    ratelimit = values[RATELIMIT]["typed_config"]
    assert ratelimit["domain"] in _demo_domains()
    expected = copy.deepcopy(_filter(base, RATELIMIT)["typed_config"])
    grpc_service = expected["rate_limit_service"]["grpc_service"]
    del grpc_service["initial_metadata"]  # Istio's mTLS identity admits the call instead
    service = _one(docs, "Service", "creditgate")
    port = service["spec"]["ports"][0]["port"]
    namespace = service["metadata"]["namespace"]
    grpc_service["envoy_grpc"]["cluster_name"] = (
        f"outbound|{port}||creditgate.{namespace}.svc.cluster.local"
    )
    assert ratelimit == expected
    route = _manager(base)["route_config"]["virtual_hosts"][0]["routes"][0]
    assert values["VIRTUAL_HOST"]["rate_limits"] == route["route"]["rate_limits"]
    # set_filter_state must run before the rate-limit filter: the patched chain's order
    patched = _apply_envoy_filter(_without_gate(base), envoy_filter, _like_creditgate(base))
    assert [f["name"] for f in _manager(patched)["http_filters"]] == [set_state, RATELIMIT, ROUTER]


def test_creditgate_in_the_mesh_admits_only_the_envoy_services() -> None:
    docs = _istio()
    env = {
        e["name"]: e.get("value")
        for e in _one(docs, "Deployment", "creditgate")["spec"]["template"]["spec"]["containers"][
            0
        ]["env"]
    }
    assert env["CREDITGATE_AUTH"] == "none"  # the ext_authz provider sends no token
    assert _one(docs, "PeerAuthentication", "creditgate")["spec"]["mtls"]["mode"] == "STRICT"
    policy = _one(docs, "AuthorizationPolicy", "creditgate")
    assert policy["spec"]["action"] == "ALLOW"
    grpc_rules = [r for r in policy["spec"]["rules"] if "50051" in r["to"][0]["operation"]["ports"]]
    assert len(grpc_rules) == 1
    assert set(grpc_rules[0]["to"][0]["operation"]["paths"]) == {
        "/envoy.service.auth.v3.Authorization/Check",
        "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
    }
    assert grpc_rules[0]["from"][0]["source"]["principals"]
