"""Containers and Kubernetes: validated offline (no Docker engine or cluster runs here)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from vghelpers import example_config_on_free_ports, free_port, stop_process, wait_http_ready
from voxguard.cli.stack import SERVICES
from voxguard.shared.config import example_config_path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_compose_file_follows_the_compose_spec(shared_dir: Path) -> None:
    schema = json.loads((shared_dir / "data" / "schemas" / "compose-spec.json").read_text())
    doc = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]
    services = doc["services"]
    assert {"timescaledb", "nats", *SERVICES} <= set(services)
    for name in SERVICES:
        svc = services[name]
        assert svc["depends_on"]["timescaledb"]["condition"] == "service_healthy"
        assert svc["depends_on"]["nats"]["condition"] == "service_healthy"
        assert "healthcheck" in svc
    assert "--jetstream" in services["nats"]["command"] and services["nats"]["volumes"]


def dockerfile_entrypoint(service: str) -> list[str]:
    text = (REPO_ROOT / "services" / service / "Dockerfile").read_text()
    m = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    assert m, f"no exec-form ENTRYPOINT in services/{service}/Dockerfile"
    return list(json.loads(m[1]))


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfiles_are_multistage_non_root(service: str) -> None:
    text = (REPO_ROOT / "services" / service / "Dockerfile").read_text()
    assert text.count("FROM ") >= 2 and " AS build" in text
    assert re.search(r"^USER (?!root|0\b)\S+", text, re.M)
    assert dockerfile_entrypoint(service) == ["voxguard", "serve", service]
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    assert compose["services"][service]["build"]["dockerfile"] == f"services/{service}/Dockerfile"


def render_prod(need_tool: Callable[[str], Path]) -> list[dict[str, Any]]:
    kubectl = need_tool("kubectl")
    out = subprocess.run(
        [str(kubectl), "kustomize", str(REPO_ROOT / "k8s" / "overlays" / "prod")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_kustomize_prod_renders_and_validates(need_tool: Callable[[str], Path]) -> None:
    docs = render_prod(need_tool)
    for doc in docs:
        kubernetes_validate.validate(doc, "1.37", strict=True)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for name in SERVICES:
        assert ("Deployment", name) in kinds and ("PodDisruptionBudget", name) in kinds
    assert ("Service", "ingest-udp") in kinds and ("ConfigMap" in {k for k, _ in kinds})
    assert {n for k, n in kinds if k == "HorizontalPodAutoscaler"} >= {"ingest", "notify"}
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        c = d["spec"]["template"]["spec"]["containers"][0]
        assert c["args"] == ["serve", d["metadata"]["name"]]  # the image entry point is `voxguard`
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["resources"]["requests"]
    udp = next(d for d in docs if d["metadata"]["name"] == "ingest-udp")
    assert udp["spec"]["sessionAffinity"] == "ClientIP" and udp["spec"]["externalTrafficPolicy"] == "Local"
    assert {p["protocol"] for p in udp["spec"]["ports"]} == {"UDP"}


def test_k8s_config_is_the_example_config() -> None:
    assert (REPO_ROOT / "k8s" / "base" / "voxguard.yaml").read_text() == example_config_path().read_text()


@pytest.mark.parametrize("service", SERVICES)
def test_image_entry_point_serves(service: str, nats_url: str, tmp_path: Path) -> None:
    """`voxguard serve SERVICE` (every image's entry point) starts and becomes ready."""
    config = example_config_on_free_ports(tmp_path / "voxguard.yaml")
    port = free_port()
    env = dict(
        os.environ,
        NATS_URL=nats_url,
        VOXGUARD_VAR_DIR=str(tmp_path / "var"),
        VOXGUARD_CONFIG=str(config),
        VOXGUARD_HTTP=f"127.0.0.1:{port}",
    )
    env.pop("DATABASE_URL", None)
    cmd = [sys.executable, "-m", "voxguard.cli.main", *dockerfile_entrypoint(service)[1:]]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ready = wait_http_ready(f"http://127.0.0.1:{port}", proc, timeout=60).json()
        assert service in ready["services"]
    finally:
        stop_process(proc)
    assert proc.returncode == 0
