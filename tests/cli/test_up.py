"""``voxguard up`` as a user runs it: embedded NATS and SQLite, admin key, every service ready."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx

from vghelpers import example_config_on_free_ports, free_port, wait_http_ready


def start(tmp: Path, http_port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "DATABASE_URL", "VOXGUARD_CONFIG")}
    env["VOXGUARD_VAR_DIR"] = str(tmp / "var")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voxguard.cli.main",
            "up",
            "--config",
            str(tmp / "voxguard.yaml"),
            "--http",
            f"127.0.0.1:{http_port}",
        ],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return out


def test_up_runs_all_services_and_resumes(tmp_path: Path) -> None:
    example_config_on_free_ports(tmp_path / "voxguard.yaml")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start(tmp_path, port)
    try:
        ready = wait_http_ready(base, proc).json()
        assert {"ingest", "baseline", "mitigate", "notify"} <= set(ready["services"])
        assert all(c["ok"] for c in ready["checks"].values())
        key_file = tmp_path / "var" / "admin.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        assert httpx.get(f"{base}/v1/exporters").status_code == 401
        r = httpx.get(f"{base}/v1/exporters", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and r.json() == []
        assert "voxguard_http_requests_total" in httpx.get(f"{base}/metrics").text
        paths = httpx.get(f"{base}/openapi.json").json()["paths"]
        assert "/v1/exporters" in paths and "/v1/targets/{target_id}/evidence.pcap" in paths
    finally:
        out = stop(proc) if proc.poll() is None else (proc.stdout.read() if proc.stdout else "")
    assert "admin API key created" in out and str(key_file) in out
    assert (tmp_path / "var" / "voxguard.db").exists() and (tmp_path / "var" / "nats").is_dir()
    # a second start resumes: the same key works, no new admin key
    proc = start(tmp_path, port)
    try:
        wait_http_ready(base, proc)
        r = httpx.get(f"{base}/v1/ingest/stats", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
    finally:
        out = stop(proc)
    assert "admin API key created" not in out and key_file.read_text().strip() == key


def test_up_refuses_invalid_config(tmp_path: Path) -> None:
    (tmp_path / "voxguard.yaml").write_text("tiers: {sbc: {components: [], monitors: [{protocol: tcp, ports: 9-1}]}}\n")
    proc = start(tmp_path, free_port())
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "tiers.sbc.components" in out and "inverted" in out
