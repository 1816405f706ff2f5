"""ExaBGP as its own container: the compose wiring, and the image's entry point run for real
(mitigate with ``VOXGUARD_EXABGP=external`` drives it over the shared socket into gobgpd)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from vghelpers import example_config_on_free_ports, free_port, stop_process, wait_http_ready

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "docker" / "exabgp" / "Dockerfile"


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text()))


def instruction(dockerfile: Path, name: str) -> list[str]:
    """Every value of one Dockerfile instruction (continuation lines joined)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    return [m[1].strip() for m in re.finditer(rf"^{name} (.*)$", text, re.M)]


def entry_point_script() -> Path:
    """The repository file behind the image's ENTRYPOINT (``python /opt/voxguard/<script>``)."""
    entry = json.loads(instruction(DOCKERFILE, "ENTRYPOINT")[0])
    assert entry[0] == "python" and len(entry) == 2, entry
    copies = [c.split() for c in instruction(DOCKERFILE, "COPY") if not c.startswith("--from")]
    src = next(s for s, dst in (c for c in copies if len(c) == 2) if dst == entry[1])
    return REPO_ROOT / src


def test_compose_runs_exabgp_beside_mitigate() -> None:
    doc = compose()
    exa, mit = doc["services"]["exabgp"], doc["services"]["mitigate"]
    assert exa["build"]["dockerfile"] == "docker/exabgp/Dockerfile"
    assert exa["depends_on"]["mitigate"]["condition"] == "service_started"  # mitigate waits for its bridge
    assert "exabgp_entrypoint.py" in " ".join(exa["healthcheck"]["test"]) and exa["restart"] == "unless-stopped"
    assert mit["environment"]["VOXGUARD_EXABGP"] == "external"
    # one named volume at mitigate's socket dir (<VOXGUARD_VAR_DIR>/mitigate) in both containers
    mit_dockerfile = REPO_ROOT / mit["build"]["dockerfile"]
    var_dir = re.search(r"VOXGUARD_VAR_DIR=(\S+)", " ".join(instruction(mit_dockerfile, "ENV")))
    assert var_dir
    sock_dir = f"{var_dir[1]}/mitigate"
    shared = {v.split(":")[0] for v in exa["volumes"] if v.endswith(f":{sock_dir}")}
    assert shared and shared == {v.split(":")[0] for v in mit["volumes"] if v.endswith(f":{sock_dir}")}
    assert shared <= set(doc["volumes"])
    # the script's default socket is that path, and the config is the one mitigate reads
    assert f'DEFAULT_SOCKET = "{sock_dir}/exabgp.sock"' in entry_point_script().read_text()
    assert exa["environment"]["VOXGUARD_CONFIG"] == mit["environment"]["VOXGUARD_CONFIG"]
    assert [c["target"] for c in exa["configs"]] == [exa["environment"]["VOXGUARD_CONFIG"]]


def test_exabgp_dockerfile_multistage_same_user_as_mitigate() -> None:
    text = DOCKERFILE.read_text()
    assert text.count("FROM ") >= 2 and " AS build" in text and 'build-venv.sh "bgp"' in text
    user = instruction(DOCKERFILE, "USER")
    assert user and user == instruction(REPO_ROOT / "services" / "mitigate" / "Dockerfile", "USER")  # socket is 0600
    assert user[0] not in ("root", "0")
    assert entry_point_script().is_file()


def test_k8s_mitigate_pod_carries_exabgp(need_tool: Callable[[str], Path]) -> None:
    from test_manifests import render_prod

    dep = next(d for d in render_prod(need_tool) if d["kind"] == "Deployment" and d["metadata"]["name"] == "mitigate")
    mit, exa = dep["spec"]["template"]["spec"]["containers"]
    assert mit["name"] == "mitigate" and exa["image"] == "voxguard/exabgp:0.1.0"
    assert {"name": "VOXGUARD_EXABGP", "value": "external"} in mit["env"]
    assert exa["readinessProbe"]["exec"]["command"] == ["python", "/opt/voxguard/exabgp_entrypoint.py", "check"]
    mounts = [{(m["name"], m["mountPath"]) for m in c["volumeMounts"]} for c in (mit, exa)]
    shared = mounts[0] & mounts[1]
    assert ("exabgp-socket", "/var/lib/voxguard/mitigate") in shared  # <VOXGUARD_VAR_DIR>/mitigate
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["exabgp-socket"]


@pytest.fixture
def gobgp(tmp_path: Path, need_tool: Callable[[str], Path]) -> Iterator[Any]:
    """The mitigate tests' gobgpd lab (a passive upstream on 127.0.0.2)."""
    lab_dir = str(REPO_ROOT / "tests" / "mitigate")
    if lab_dir not in sys.path:
        sys.path.insert(0, lab_dir)
    from mitigate_lab import GoBGP

    lab = GoBGP(tmp_path / "gobgp", need_tool("gobgpd"), need_tool("gobgp"))
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.2)


@pytest.mark.slow
def test_exabgp_entry_point_is_driven_by_mitigate(tmp_path: Path, nats_url: str, gobgp: Any) -> None:
    """The image's entry point renders ExaBGP's config from voxguard.yaml, its bridge connects to
    an external-mode mitigate, a rule reaches the router, and ExaBGP ends with mitigate."""
    config = example_config_on_free_ports(tmp_path / "voxguard.yaml")
    cfg = yaml.safe_load(config.read_text())
    cfg["bgp"] = {
        "local_as": 65000,
        "router_id": "127.0.0.1",
        "local_address": "127.0.0.1",
        "peers": [{"address": "127.0.0.2", "asn": 65001, "port": gobgp.bgp_port}],
        "reconcile_interval_seconds": 0.5,
    }
    config.write_text(yaml.safe_dump(cfg))
    var = tmp_path / "var"
    sock = var / "mitigate" / "exabgp.sock"
    assert len(str(sock)) <= 100  # else mitigate would fall back to a private dir nobody else knows
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        NATS_URL=nats_url,
        VOXGUARD_VAR_DIR=str(var),
        VOXGUARD_CONFIG=str(config),
        VOXGUARD_HTTP=f"127.0.0.1:{port}",
        VOXGUARD_EXABGP="external",
    )
    cli = [sys.executable, "-m", "voxguard.cli.main"]
    made = subprocess.run(
        [*cli, "keys", "create", "noc", "--scope", "operate"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.split()[-1]
    base = f"http://127.0.0.1:{port}"
    script = entry_point_script()
    exa_cmd = [sys.executable, str(script), "--config", str(config), "--socket", str(sock)]
    exa_env = {k: v for k, v in env.items() if k != "VOXGUARD_EXABGP"}
    mit = subprocess.Popen(
        [*cli, "serve", "mitigate"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    exa = subprocess.Popen(
        [*exa_cmd, "--workdir", str(tmp_path / "exabgp")],
        env=exa_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    check = [sys.executable, str(script), "check", "--socket", str(sock), "--mitigate", base]
    try:
        # mitigate is ready only once the external ExaBGP's bridge has connected
        wait_http_ready(base, mit, timeout=60)
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10)
        status = api.get("/v1/bgp/status").json()
        assert status["exabgp_external"] and status["bridge_connected"] and status["exabgp_pid"] is None, status
        assert "neighbor 127.0.0.2" in (tmp_path / "exabgp" / "exabgp.conf").read_text()
        assert subprocess.run(check, env=exa_env, timeout=20).returncode == 0
        wait_for(gobgp.established, 30, "BGP session with gobgpd")
        rule = api.post(
            "/v1/mitigations",
            json={"destination": "203.0.113.10/32", "sources": ["198.19.1.0/24"], "protocol": "udp",
                  "destination_ports": "5060", "action": "discard"},
        )  # fmt: skip
        assert rule.status_code == 201, rule.text
        wait_for(lambda: any("198.19.1.0/24" in nlri for nlri in gobgp.rib()), 20, "flow route in gobgpd's RIB")
        wait_for(lambda: api.get(f"/v1/mitigations/{rule.json()['id']}").json()["state"] == "announced", 10, "ack")
        # mitigate stops: ExaBGP shuts down with it, the session closes and the router forgets the rule
        mit.send_signal(signal.SIGINT)
        mit.wait(30)
        assert mit.returncode == 0
        exa.wait(30)
        assert exa.returncode is not None
        wait_for(lambda: not gobgp.rib(), 20, "routes withdrawn after ExaBGP ended")
        assert subprocess.run(check, env=exa_env, timeout=20).returncode == 1
    finally:
        stop_process(mit)
        if exa.poll() is None:
            exa.send_signal(signal.SIGTERM)
            try:
                exa.wait(15)
            except subprocess.TimeoutExpired:
                exa.kill()
                exa.wait(5)
        out = exa.stdout.read() if exa.stdout else ""
    assert "Traceback" not in out, out
