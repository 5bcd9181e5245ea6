"""The key facts of each deploy/ example, and its Envoy config against the one source.

The copies are checked against deploy/envoy/ratelimit.yaml, the one source: the compose file
differs only in its addresses, the ConfigMap not at all, the EnvoyFilter only in the cluster it
asks and the token. Then the native sidecars, the Istio provider and its policy, the domain the
plans file maps. That every config validates is test_deploy_envoy_configs.py's.
"""

from __future__ import annotations

import copy
import re
import shlex

import yaml

from deploy_kit import (
    COMPOSE,
    COMPOSE_ENVOY,
    ISTIO,
    PLACEHOLDER,
    RATELIMIT,
    ROUTER,
    SECURITY,
    SIDECAR,
    Doc,
    apply_envoy_filter,
    clusters_by_name,
    demo_domains,
    http_filter,
    http_manager,
    like_creditgate,
    one_doc,
    read_yaml,
    socket_address,
    without_gate,
    yaml_documents,
)
from envoy_kit import BOOTSTRAP, EXT_AUTHZ

# --- docker compose -------------------------------------------------------------------------


def _normalised_addresses(config: Doc) -> Doc:
    config = copy.deepcopy(config)
    for cluster in config["static_resources"]["clusters"]:
        cluster["type"] = "ADDRESS"
        socket_address(cluster)["address"] = "ADDRESS"
    return config


def test_the_compose_bootstrap_is_ratelimit_yaml_with_the_services_addresses() -> None:
    """Nothing differs from deploy/envoy/ratelimit.yaml but the clusters' type and hosts."""
    compose_envoy = read_yaml(COMPOSE_ENVOY)
    assert _normalised_addresses(compose_envoy) == _normalised_addresses(read_yaml(BOOTSTRAP))
    clusters = clusters_by_name(compose_envoy)
    services = read_yaml(COMPOSE)["services"]
    for name, host in (("app", "echo"), ("creditgate", "creditgate")):
        assert clusters[name]["type"] == "STRICT_DNS"
        assert socket_address(clusters[name])["address"] == host
        assert host in services
    listen = services["creditgate"]["environment"]["CREDITGATE_LISTEN"]
    assert listen.rsplit(":", 1)[1] == str(socket_address(clusters["creditgate"])["port_value"])
    echo_listen = next(a for a in services["echo"]["command"] if a.startswith("-listen="))
    assert echo_listen == f"-listen=:{socket_address(clusters['app'])['port_value']}"


def test_compose_runs_envoy_in_front_of_the_echo_app() -> None:
    services = read_yaml(COMPOSE)["services"]
    assert set(services) >= {"redis", "postgres", "creditgate", "worker", "echo", "envoy"}
    envoy = services["envoy"]
    assert envoy["image"].startswith("envoyproxy/envoy:v1.40")
    command = envoy["command"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in envoy["volumes"]}
    config_path = command[command.index("-c") + 1]
    assert mounted[config_path] == "./envoy/ratelimit.compose.yaml"
    listener = read_yaml(COMPOSE_ENVOY)["static_resources"]["listeners"][0]
    port = listener["address"]["socket_address"]["port_value"]
    assert f"127.0.0.1:{port}:{port}" in envoy["ports"]
    assert envoy["depends_on"]["creditgate"]["condition"] == "service_healthy"
    # the echo app is reached through Envoy only
    assert "ports" not in services["echo"]
    # CREDITGATE_AUTH=none: the bootstrap's placeholder token is not checked
    assert services["creditgate"]["environment"]["CREDITGATE_AUTH"] == "none"


# --- Kubernetes: native sidecars ------------------------------------------------------------


def _pod(docs: list[Doc]) -> Doc:
    pod: Doc = one_doc(docs, "Deployment", "app")["spec"]["template"]["spec"]
    return pod


def test_creditgate_and_envoy_are_native_sidecars_started_before_the_app() -> None:
    """Init containers with restartPolicy Always, creditgate first, each with a startup probe."""
    pod = _pod(yaml_documents(SIDECAR))
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
    cluster = clusters_by_name(read_yaml(BOOTSTRAP))["creditgate"]
    assert socket_address(cluster) == {"address": "127.0.0.1", "port_value": listen_port}


def test_the_configmap_holds_ratelimit_yaml_and_envoy_gets_its_token_from_a_secret() -> None:
    docs = yaml_documents(SIDECAR)
    configmap = one_doc(docs, "ConfigMap", "creditgate-envoy")
    embedded = yaml.safe_load(configmap["data"]["envoy.yaml"])
    assert embedded == read_yaml(BOOTSTRAP)  # the same file: the pod's addresses are the same
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
    grpc_service = http_filter(embedded, RATELIMIT)["typed_config"]["rate_limit_service"]
    metadata = grpc_service["grpc_service"]["initial_metadata"]
    assert metadata == [{"key": "authorization", "value": f"Bearer {PLACEHOLDER}"}]
    token_env = next(e for e in envoy["env"] if e["name"] == "CREDITGATE_TOKEN")
    secret = token_env["valueFrom"]["secretKeyRef"]
    assert one_doc(yaml_documents(SECURITY), "Secret", secret["name"])["stringData"][secret["key"]]


def test_clients_reach_the_app_through_envoy() -> None:
    docs = yaml_documents(SIDECAR)
    listener = read_yaml(BOOTSTRAP)["static_resources"]["listeners"][0]
    port = listener["address"]["socket_address"]["port_value"]
    envoy = next(c for c in _pod(docs)["initContainers"] if c["name"] == "envoy")
    assert {"name": "http", "containerPort": port} in envoy["ports"]
    service = one_doc(docs, "Service", "app")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    policy = one_doc(yaml_documents(SECURITY), "NetworkPolicy", "creditgate-sidecar")
    admitted = [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert port in admitted
    assert 50051 not in admitted  # creditgate's gRPC stays inside the pod


# --- Istio ----------------------------------------------------------------------------------


def _istio() -> list[Doc]:
    return [d for p in sorted(ISTIO.glob("*.yaml")) for d in yaml_documents(p)]


def test_the_custom_authorization_policy_names_the_mesh_provider() -> None:
    docs = _istio()
    providers = {
        p["name"]: p
        for p in one_doc(docs, "IstioOperator", "creditgate")["spec"]["meshConfig"][
            "extensionProviders"
        ]
    }
    policy = one_doc(docs, "AuthorizationPolicy", "creditgate-ext-authz")
    assert policy["spec"]["action"] == "CUSTOM"
    assert policy["spec"]["rules"]
    grpc = providers[policy["spec"]["provider"]["name"]]["envoyExtAuthzGrpc"]
    # the provider names creditgate's Service and port
    service = one_doc(docs, "Service", "creditgate")
    fqdn = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    assert grpc["service"] == fqdn
    assert grpc["port"] in [p["port"] for p in service["spec"]["ports"]]
    # and fails as deploy/envoy/ext_authz.yaml does
    ext_authz = http_filter(read_yaml(EXT_AUTHZ), "envoy.filters.http.ext_authz")["typed_config"]
    assert grpc["failOpen"] is ext_authz["failure_mode_allow"] is False
    assert grpc["statusOnError"] == "503"
    assert ext_authz["status_on_error"] == {"code": "ServiceUnavailable"}
    assert grpc["timeout"] == ext_authz["grpc_service"]["timeout"] == "1s"


def test_the_envoy_filter_is_ratelimit_yaml_asking_creditgates_service() -> None:
    """The same filters and descriptor actions; only the cluster and the token differ."""
    docs = _istio()
    envoy_filter = one_doc(docs, "EnvoyFilter", "creditgate-ratelimit")
    patches = envoy_filter["spec"]["configPatches"]
    values = {p["patch"]["value"].get("name", p["applyTo"]): p["patch"]["value"] for p in patches}
    base = read_yaml(BOOTSTRAP)
    set_state = "envoy.filters.http.set_filter_state"
    assert values[set_state] == http_filter(base, set_state)
    ratelimit = values[RATELIMIT]["typed_config"]
    assert ratelimit["domain"] in demo_domains()
    expected = copy.deepcopy(http_filter(base, RATELIMIT)["typed_config"])
    grpc_service = expected["rate_limit_service"]["grpc_service"]
    del grpc_service["initial_metadata"]  # Istio's mTLS identity admits the call instead
    service = one_doc(docs, "Service", "creditgate")
    port = service["spec"]["ports"][0]["port"]
    namespace = service["metadata"]["namespace"]
    grpc_service["envoy_grpc"]["cluster_name"] = (
        f"outbound|{port}||creditgate.{namespace}.svc.cluster.local"
    )
    assert ratelimit == expected
    route = http_manager(base)["route_config"]["virtual_hosts"][0]["routes"][0]
    assert values["VIRTUAL_HOST"]["rate_limits"] == route["route"]["rate_limits"]
    # set_filter_state must run before the rate-limit filter: the patched chain's order
    patched = apply_envoy_filter(without_gate(base), envoy_filter, like_creditgate(base))
    assert [f["name"] for f in http_manager(patched)["http_filters"]] == [
        set_state,
        RATELIMIT,
        ROUTER,
    ]


def test_creditgate_in_the_mesh_admits_only_the_envoy_services() -> None:
    docs = _istio()
    env = {
        e["name"]: e.get("value")
        for e in one_doc(docs, "Deployment", "creditgate")["spec"]["template"]["spec"][
            "containers"
        ][0]["env"]
    }
    assert env["CREDITGATE_AUTH"] == "none"  # the ext_authz provider sends no token
    assert one_doc(docs, "PeerAuthentication", "creditgate")["spec"]["mtls"]["mode"] == "STRICT"
    policy = one_doc(docs, "AuthorizationPolicy", "creditgate")
    assert policy["spec"]["action"] == "ALLOW"
    grpc_rules = [r for r in policy["spec"]["rules"] if "50051" in r["to"][0]["operation"]["ports"]]
    assert len(grpc_rules) == 1
    assert set(grpc_rules[0]["to"][0]["operation"]["paths"]) == {
        "/envoy.service.auth.v3.Authorization/Check",
        "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
    }
    assert grpc_rules[0]["from"][0]["source"]["principals"]
