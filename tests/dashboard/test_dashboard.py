"""The NOC dashboard in headless Chromium against a running ``voxguard up``."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import yaml

from vghelpers import example_config_on_free_ports, free_port, stop_process, wait_http_ready

if TYPE_CHECKING:
    from playwright.sync_api import Page

CLI = [sys.executable, "-m", "voxguard.cli.main"]
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


def stack_env(tmp_path: Path) -> dict[str, str]:
    """Embedded NATS and SQLite under ``tmp_path/var``, as ``voxguard up`` defaults to."""
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "DATABASE_URL", "VOXGUARD_CONFIG")}
    env["VOXGUARD_VAR_DIR"] = str(tmp_path / "var")
    return env


@contextlib.contextmanager
def running_stack(tmp_path: Path, config: Path) -> Iterator[Stack]:
    """``voxguard up`` on ``config`` until the block ends (Ctrl-C)."""
    port = free_port()
    proc = subprocess.Popen(
        [*CLI, "up", "--config", str(config), "--http", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        env=stack_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_ready(base, proc)
        yield Stack(base, (tmp_path / "var" / "admin.key").read_text().strip(), config)
    finally:
        stop_process(proc)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path, example_config_on_free_ports(tmp_path / "voxguard.yaml")) as s:
        yield s


def test_dashboard_shows_live_traffic(stack: Stack, need_tool: Callable[[str], Path], tmp_path: Path) -> None:
    chromium = need_tool("chromium")
    from playwright.sync_api import sync_playwright

    r = httpx.get(stack.base + "/")
    assert r.status_code == 200 and "VoxGuard" in r.text
    assert httpx.get(stack.base + "/dashboard/vendor/uPlot.iife.min.js").status_code == 200
    assert httpx.get(stack.base + "/dashboard/../../../../etc/passwd").status_code == 404
    sim = subprocess.Popen(
        [*CLI, "simulate", "--config", str(stack.config), "--duration", "12"],
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


LEARNING_DAYS = 0.5  # less than the one backfilled day: targets are past learning, so incidents get rules
ACTIVE_RULE = ("proposed", "pending_approval", "announced")
IP = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


def learned_config(tmp_path: Path) -> Path:
    """The example config on free ports with a short learning period, and a day of history
    backfilled into the stack's var dir (as ``voxguard demo`` does with a week)."""
    config = example_config_on_free_ports(tmp_path / "voxguard.yaml")
    cfg = yaml.safe_load(config.read_text())
    for tier in cfg["tiers"].values():
        tier.setdefault("baseline", {})["learning_days"] = LEARNING_DAYS
    config.write_text(yaml.safe_dump(cfg))
    res = subprocess.run(
        [*CLI, "backfill", "--days", "1", "--config", str(config)],
        env=stack_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return config


def create_key(tmp_path: Path, name: str, scope: str) -> str:
    res = subprocess.run(
        [*CLI, "keys", "create", name, "--scope", scope],
        env=stack_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1]


def connect(page: Page, key: str) -> None:
    page.fill("#key", key)
    page.click("#keyform button")


@pytest.mark.timeout(150)
def test_attack_shows_up_and_an_operator_withdraws_its_rule(tmp_path: Path, need_tool: Callable[[str], Path]) -> None:
    """The issue's tour in a browser: a SIP flood appears as an incident within seconds, its
    FlowSpec rule is listed, a read key cannot withdraw it, an operate key can."""
    chromium = need_tool("chromium")
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    config = learned_config(tmp_path)
    trigger = yaml.safe_load(config.read_text())["tiers"]["sbc"]["detection"]["vectors"]["sip_flood"]["ratio"]
    with running_stack(tmp_path, config) as stack:
        reader = create_key(tmp_path, "noc-screen", "read")
        operator = create_key(tmp_path, "noc-operator", "operate")
        api = httpx.Client(base_url=stack.base, headers={"Authorization": f"Bearer {stack.key}"}, timeout=5)
        sim = subprocess.Popen(
            [*CLI, "simulate", "--config", str(config), "--duration", "45", "--attack", "sip_flood@5s+40s*10"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(stack.base + "/")
                connect(page, reader)

                # the flood is listed within seconds of starting, with its vector, ratio and sources
                # the flood's own incident: the simulator attacks the EU SBC (another SBC's incident,
                # if any, gets no rule for these sources)
                row = page.locator("#incidents tbody tr", has_text="sbc-eu-1 udp/5060").filter(
                    has=page.locator("td.vectors", has_text="sip_flood")
                )
                row.first.wait_for(timeout=30_000)
                inc_id = row.first.get_attribute("data-id")
                inc = api.get(f"/v1/incidents/{inc_id}").json()["incident"]
                assert inc["tier"] == "sbc" and "sip_flood" in inc["vectors"] and not inc["learning"], inc
                shown_ratio = float((row.first.locator("td.ratio").text_content() or "").rstrip("x"))
                assert trigger <= shown_ratio <= inc["peak_ratio"] + 0.05
                deadline = time.monotonic() + 10
                while True:  # the page shows the incident's current top sources (they move as it goes on)
                    shown = (row.first.locator("td.sources").text_content() or "").split(", ")
                    want = [
                        s["source"] for s in api.get(f"/v1/incidents/{inc_id}").json()["incident"]["top_sources"][:3]
                    ]
                    if shown == want or time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
                assert shown == want and len(shown) == 3 and all(IP.match(s) for s in shown), (shown, want)

                # its rule appears; a read-only key is refused and the page says why
                rule = page.locator(f"#mitigations tbody tr[data-incident='{inc_id}']").filter(
                    has=page.locator("button.withdraw")
                )
                rule.first.wait_for(timeout=20_000)
                # rules follow the evidence: wait for a second one, so withdrawing one can be seen
                # to leave the other alone
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    rows = api.get("/v1/mitigations", params={"incident_id": inc_id}).json()
                    if sum(m["state"] in ACTIVE_RULE for m in rows) >= 2:
                        break
                    time.sleep(0.5)
                rule_id = rule.first.get_attribute("data-id")
                assert "ago" not in (rule.first.locator("td").nth(5).text_content() or "")  # expiry is ahead
                assert api.get(f"/v1/mitigations/{rule_id}").json()["state"] in ACTIVE_RULE
                rule.first.locator("button.withdraw").click()
                page.wait_for_function("document.querySelector('#error').textContent.includes('403')", timeout=10_000)
                assert api.get(f"/v1/mitigations/{rule_id}").json()["state"] in ACTIVE_RULE

                # an operator withdraws it from the page; the row goes and the API agrees
                connect(page, operator)
                mine = page.locator(f"#mitigations tbody tr[data-id='{rule_id}'] button.withdraw")
                mine.click(timeout=10_000)
                page.locator(f"#mitigations tbody tr[data-id='{rule_id}']").wait_for(state="detached", timeout=10_000)
                withdrawn = {m["id"]: m for m in api.get("/v1/mitigations", params={"state": "withdrawn"}).json()}
                assert rule_id in withdrawn and "noc-operator" in (withdrawn[rule_id]["reason"] or "")
                before = {m["id"] for m in rows if m["state"] in ACTIVE_RULE and m["id"] != rule_id}
                others = {m["id"]: m for m in api.get("/v1/mitigations", params={"incident_id": inc_id}).json()}
                assert before and all(others[i]["state"] in ACTIVE_RULE for i in before)  # only that one
                page.screenshot(path=str(tmp_path / "withdrawn.png"), full_page=True)
                browser.close()
        finally:
            sim.terminate()
            sim.wait(10)
    assert time.monotonic() - started < 120
