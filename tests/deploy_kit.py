"""The deploy/ examples as data, for the tests of tests/behind_envoy/ (tests/ is on sys.path).

Paths and names in deploy/, YAML read as it is shipped, the parts of an Envoy bootstrap the tests
look at, and an Istio EnvoyFilter's patches applied to deploy/envoy/ratelimit.yaml as Istio
applies them to one listener.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from envoy_kit import ROOT

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


def read_yaml(path: Path) -> Any:  # noqa: ANN401 - YAML is whatever the file holds
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def yaml_documents(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def one_doc(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def http_manager(config: Doc) -> Doc:
    listener = config["static_resources"]["listeners"][0]
    chain_filter = listener["filter_chains"][0]["filters"][0]
    assert chain_filter["name"] == HCM
    manager: Doc = chain_filter["typed_config"]
    return manager


def http_filter(config: Doc, name: str) -> Doc:
    found = [f for f in http_manager(config)["http_filters"] if f["name"] == name]
    assert len(found) == 1, name
    return found[0]


def clusters_by_name(config: Doc) -> dict[str, Doc]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


def socket_address(cluster: Doc) -> Doc:
    address: Doc = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    return address["address"]["socket_address"]


def demo_domains() -> set[str]:
    return set(read_yaml(DEMO)["gateway"]["envoy_rate_limit"]["domains"])


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


def apply_envoy_filter(base: Doc, envoy_filter: Doc, asked: Callable[[str], Doc]) -> Doc:
    """``base`` with the EnvoyFilter's patches applied as Istio applies them to one listener.

    ``asked(cluster_name)`` gives a cluster for every cluster a patch refers to (Istio makes
    the outbound clusters from the Services).
    """
    config = copy.deepcopy(base)
    manager = http_manager(config)
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


def without_gate(base: Doc) -> Doc:
    """deploy/envoy/ratelimit.yaml without what the EnvoyFilter adds: a plain Istio listener."""
    config = copy.deepcopy(base)
    manager = http_manager(config)
    manager["http_filters"] = [f for f in manager["http_filters"] if f["name"] == ROUTER]
    for host in manager["route_config"]["virtual_hosts"]:
        for route in host["routes"]:
            route["route"].pop("rate_limits", None)
    config["static_resources"]["clusters"] = [
        c for c in config["static_resources"]["clusters"] if c["name"] != "creditgate"
    ]
    return config


def like_creditgate(base: Doc) -> Callable[[str], Doc]:
    def asked(name: str) -> Doc:
        cluster = copy.deepcopy(clusters_by_name(base)["creditgate"])
        cluster["name"] = name
        cluster["load_assignment"]["cluster_name"] = name
        return cluster

    return asked
