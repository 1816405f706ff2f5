"""The NOC dashboard in headless Chromium against a running ``voxguard up``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from vghelpers import example_config_on_free_ports, free_port, stop_process, wait_http_ready

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Stack:
    base: str
    key: str
    config: Path


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    config = example_config_on_free_ports(tmp_path / "voxguard.yaml")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "DATABASE_URL", "VOXGUARD_CONFIG")}
    env["VOXGUARD_VAR_DIR"] = str(tmp_path / "var")
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxguard.cli.main", "up", "--config", str(config), "--http", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_ready(base, proc)
        yield Stack(base, (tmp_path / "var" / "admin.key").read_text().strip(), config)
    finally:
        stop_process(proc)


def test_dashboard_shows_live_traffic(stack: Stack, need_tool: Callable[[str], Path], tmp_path: Path) -> None:
    chromium = need_tool("chromium")
    from playwright.sync_api import sync_playwright

    r = httpx.get(stack.base + "/")
    assert r.status_code == 200 and "VoxGuard" in r.text
    assert httpx.get(stack.base + "/dashboard/vendor/uPlot.iife.min.js").status_code == 200
    assert httpx.get(stack.base + "/dashboard/../../../../etc/passwd").status_code == 404
    sim = subprocess.Popen(
        [sys.executable, "-m", "voxguard.cli.main", "simulate", "--config", str(stack.config), "--duration", "12"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(stack.base + "/")
            page.fill("#key", stack.key)
            page.click("#keyform button")
            # charts for the simulated tiers appear within seconds
            page.wait_for_selector("#tiers [data-tier='sbc'] .chart canvas", timeout=20_000)
            page.wait_for_selector("#tiers [data-tier='media'] .chart", timeout=20_000)
            page.wait_for_function(
                "[...window.voxguard.charts.values()].some(c => c.points.length >= 4)", timeout=30_000
            )
            assert page.text_content("#error") == ""
            assert page.locator("#incidents tbody tr").count() >= 1  # a row, or the "none" row
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            # a wrong key is reported, not ignored
            page.fill("#key", "vg_nope_nope")
            page.click("#keyform button")
            page.wait_for_function("document.querySelector('#error').textContent.includes('401')", timeout=10_000)
            browser.close()
    finally:
        sim.wait(60)
