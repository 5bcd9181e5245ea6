"""Every YAML document in deploy/ parses, every Envoy config there validates.

Every Envoy configuration shipped in deploy/ is validated with the real Envoy 1.40
(``envoy --mode validate``): the bootstraps in deploy/envoy/ (compose mounts one of them), the
bootstrap embedded in the Kubernetes ConfigMap, and the Istio EnvoyFilter's patch values applied
to deploy/envoy/ratelimit.yaml. What each example says beside it (and that the copies match
deploy/envoy/ratelimit.yaml, the one source) is test_deploy_manifests.py's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import yaml

from deploy_kit import (
    COMPOSE,
    DEPLOY,
    RATELIMIT,
    Doc,
    apply_envoy_filter,
    demo_domains,
    http_filter,
    like_creditgate,
    read_yaml,
    without_gate,
    yaml_documents,
)
from envoy_kit import BOOTSTRAP, validate

if TYPE_CHECKING:
    from pathlib import Path


def _all_documents() -> list[tuple[Path, Doc]]:
    return [(p, d) for p in sorted(DEPLOY.rglob("*.y*ml")) for d in yaml_documents(p)]


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
        docs = yaml_documents(path)
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


def _patched_bootstraps() -> list[tuple[str, str]]:
    base = read_yaml(BOOTSTRAP)
    return [
        (
            f"EnvoyFilter/{f['metadata']['name']}",
            yaml.safe_dump(apply_envoy_filter(without_gate(base), f, like_creditgate(base))),
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
    envoys = [s for s in read_yaml(COMPOSE)["services"].values() if "envoy" in s["image"]]
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
    assert http_filter(read_yaml(BOOTSTRAP), RATELIMIT)["typed_config"]["domain"] in demo_domains()
