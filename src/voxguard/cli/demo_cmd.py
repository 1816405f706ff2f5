"""``voxguard demo``: a newcomer's tour of the whole product on one machine, in a few minutes.

It backfills a week of traffic for the example config, starts ``voxguard up`` on embedded
defaults, plays live VoIP traffic with the three origin runbooks' attacks one after another
(SIP flood on the SBC, RTP flood on the media gateways, TDoS), and narrates what VoxGuard saw,
decided, announced (FlowSpec in ExaBGP syntax; dry-run: no BGP peer is configured) and
notified (to a local webhook sink started by the demo). Everything stays on 127.0.0.1, runs
in its own working directory and stops by itself.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from voxguard.shared.config import example_config_path

ATTACKS = [  # (runbook, vector, target tier, spec); times relative to the start of live traffic
    ("SIP flood on the SBC", "sip_flood", "sbc", "sip_flood@25s+50s*10"),
    ("RTP flood on the media gateways", "rtp_flood", "media", "rtp_flood@105s+50s*6"),
    # on the US SBC, tagged as an emergency-services trunk: the incident carries the regulatory checklist
    ("TDoS (automated call flood)", "tdos", "sbc", "tdos:sbc-us-1@185s+50s*5"),
]
LIVE_SECONDS = 260


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Sink(BaseHTTPRequestHandler):
    """The demo's notification endpoint: keeps what the notify service delivers."""

    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
        body = self.rfile.read(length)
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            payload = {"raw": body[:200].decode(errors="replace")}
        type(self).received.append({"path": self.path, "payload": payload, "at": time.time()})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:  # quiet
        return


def _items(x: Any) -> list[dict[str, Any]]:
    if isinstance(x, list):
        return x
    if isinstance(x, dict):
        for key in ("items", "incidents", "mitigations", "deliveries"):
            if isinstance(x.get(key), list):
                return list(x[key])
    return []


@dataclass
class _Seen:
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    mitigations: dict[str, dict[str, Any]] = field(default_factory=dict)
    notifications: int = 0
    held_back: int = 0  # candidate rules past the per-incident cap
    mitigation_notes: int = 0  # mitigation notifications (not narrated one by one)
    quiet_notes: int = 0  # incident updates (not narrated one by one)
    told: set[str] = field(default_factory=set)  # incidents narrated (the others are summarised)
    hosts: dict[tuple[str, str], int] = field(default_factory=dict)  # (component, vectors) -> host incidents
    rules_told: dict[str, int] = field(default_factory=dict)  # incident id -> rules narrated
    rules_named: set[str] = field(default_factory=set)  # mitigation ids narrated


RULES_PER_INCIDENT = 3  # rules narrated per incident; the rest are counted
HOSTS_PER_GROUP = 1  # per-host incidents narrated per (component, vectors); the rest are counted


def write_demo_config(workdir: Path, sink_port: int) -> Path:
    """The example config on free ports, with notifications going to the demo's sink."""
    cfg = yaml.safe_load(example_config_path().read_text())
    cfg["ingest"].update(
        host="127.0.0.1",
        netflow_port=_free_port(socket.SOCK_DGRAM),
        ipfix_port=_free_port(socket.SOCK_DGRAM),
        sflow_port=_free_port(socket.SOCK_DGRAM),
    )
    sink = f"http://127.0.0.1:{sink_port}"
    cfg["notifications"] = {
        "channels": {
            "noc": {
                "type": "webhook",
                "url": f"{sink}/noc",
                "secret": "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode(),
            },
        },
        "routes": [{"name": "everything-to-the-noc", "channels": ["noc"]}],
    }
    path = workdir / "voxguard.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def demo(
    workdir: Path = typer.Option(Path("var/demo"), "--workdir", help="Where the demo keeps its database and logs."),
    days: float = typer.Option(7.0, "--days", min=1, max=14, help="Days of history to backfill first."),
    backfill: bool = typer.Option(True, "--backfill/--no-backfill", help="Skip the backfill when re-running."),
    keep_running: bool = typer.Option(
        sys.stdin.isatty(), "--keep-running/--exit", help="Leave VoxGuard running after the report (Ctrl-C stops)."
    ),
) -> None:
    """Run a guided tour: backfill, start VoxGuard, play three attacks, narrate, report."""
    console = Console(highlight=False, soft_wrap=True)
    workdir.mkdir(parents=True, exist_ok=True)
    var = workdir / "var"
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "DATABASE_URL", "VOXGUARD_CONFIG")}
    env["VOXGUARD_VAR_DIR"] = str(var)
    env["VOXGUARD_LOG_LEVEL"] = "WARNING"
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    config = write_demo_config(workdir, sink.server_address[1])
    cli = [sys.executable, "-m", "voxguard.cli.main"]
    console.rule("[bold]VoxGuard demo")
    console.print(f"Working directory {workdir} (SQLite and NATS store in {var}); config {config}")

    if backfill:
        _backfill(console, cli, env, config, days)

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    console.print(f"[bold]2/4[/] Starting VoxGuard (voxguard up) on {base} ...")
    log = (workdir / "voxguard-up.log").open("w")
    up = subprocess.Popen(
        [*cli, "up", "--config", str(config), "--http", f"127.0.0.1:{port}"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    sim: subprocess.Popen[bytes] | None = None
    try:
        try:
            key = _wait_up(base, up, var)
        except typer.Exit:
            log.flush()
            tail = (workdir / "voxguard-up.log").read_text()[-3000:]
            console.print(f"[red]voxguard up did not become ready:[/]\n{escape(tail)}")
            raise
        console.print(f"    ready. Admin key in {var / 'admin.key'}; dashboard at {base}/")
        console.print(f"[bold]3/4[/] Playing {LIVE_SECONDS} s of live traffic with three attacks:")
        for title, _, tier, spec in ATTACKS:
            console.print(f"    - {title} ({tier}): {spec}")
        attack_args = [a for _, _, _, spec in ATTACKS for a in ("--attack", spec)]
        sim = subprocess.Popen(
            [*cli, "simulate", "--config", str(config), "--duration", str(LIVE_SECONDS), *attack_args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        seen = _narrate(console, base, key, sim, started=time.time())
        console.print("[bold]4/4[/] Report")
        _report(console, seen, base)
        if keep_running:
            console.print(f"VoxGuard keeps running at {base}/ with the demo's data; Ctrl-C stops it.")
            with contextlib.suppress(KeyboardInterrupt):
                up.wait()
    finally:
        if sim is not None and sim.poll() is None:
            sim.terminate()
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            try:
                up.wait(30)
            except subprocess.TimeoutExpired:
                up.kill()
        sink.shutdown()
        log.close()


def _backfill(console: Console, cli: list[str], env: dict[str, str], config: Path, days: float) -> None:
    console.print(f"[bold]1/4[/] Backfilling {days:g} days of normal traffic so the baselines are learned ...")
    started = time.monotonic()
    res = subprocess.run(
        [*cli, "backfill", "--days", str(days), "--config", str(config)], env=env, capture_output=True, text=True
    )
    if res.returncode != 0:
        console.print(f"[red]backfill failed:[/] {escape(res.stderr[-2000:])}")
        raise typer.Exit(1)
    summary = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    console.print(f"    done in {time.monotonic() - started:.0f} s. {escape(summary)}")


def _wait_up(base: str, proc: subprocess.Popen[bytes], var: Path, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise typer.Exit(1)
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return (var / "admin.key").read_text().strip()
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise typer.Exit(1)


def _narrate(console: Console, base: str, key: str, sim: subprocess.Popen[bytes], started: float) -> _Seen:
    seen = _Seen()
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=5)
    stamp = lambda: f"[dim]t+{time.time() - started:5.0f}s[/]"  # noqa: E731
    end = time.time() + LIVE_SECONDS + 75  # the tail lets the last incident resolve
    while time.time() < end:
        try:
            incs = _items(client.get("/v1/incidents", params={"limit": 200}).json())
            mits = _items(client.get("/v1/mitigations").json())
        except (httpx.HTTPError, ValueError):
            incs, mits = [], []
        more_hosts: dict[tuple[str, str], int] = {}
        for inc in incs:
            old = seen.incidents.get(inc["id"])
            seen.incidents[inc["id"]] = inc
            if old is None:
                group = (str(inc.get("component") or "?"), ", ".join(inc.get("vectors", [])))
                if inc.get("host"):
                    seen.hosts[group] = seen.hosts.get(group, 0) + 1
                    if seen.hosts[group] > HOSTS_PER_GROUP:
                        more_hosts[group] = more_hosts.get(group, 0) + 1
                        continue
                seen.told.add(inc["id"])
                console.print(
                    f"{stamp()} [bold red]DETECTED[/] {escape(group[1])} on "
                    f"{escape(inc.get('target', '?'))}: {float(inc.get('peak_ratio', 0)):.1f}x baseline, "
                    f"severity {inc.get('severity')}"
                    + (f", runbook {inc['runbook']}" if inc.get("runbook") else "")
                    + (" (learning: monitor only)" if inc.get("learning") else "")
                )
            elif old.get("state") != inc.get("state") and inc.get("state") == "resolved" and inc["id"] in seen.told:
                console.print(f"{stamp()} [green]RESOLVED[/] {escape(inc.get('target', '?'))}")
        for (component, vectors), count in more_hosts.items():
            where = escape(component)
            console.print(f"{stamp()} [red]DETECTED[/] {escape(vectors)} on {count} more host(s) of {where}")
        for m in mits:
            old = seen.mitigations.get(m["id"])
            seen.mitigations[m["id"]] = m
            if old is not None and old.get("state") == m.get("state"):
                continue
            state, reason = m.get("state", ""), str(m.get("reason") or "")
            if state == "rejected" and "whitelist" not in reason:
                seen.held_back += 1  # the per-incident cap: counted, not narrated line by line
                continue
            inc_id = str(m.get("incident_id") or "")
            if old is None:
                told = seen.rules_told.get(inc_id, 0)
                seen.rules_told[inc_id] = told + 1
                if told >= RULES_PER_INCIDENT or "whitelist" in reason:
                    continue  # summarised in the report (accept guards and spared networks too)
                seen.rules_named.add(m["id"])
            elif m["id"] not in seen.rules_named:
                continue  # only the rules that were narrated are followed
            verb = {
                "announced": "[bold yellow]ANNOUNCED[/]",
                "withdrawn": "[cyan]WITHDRAWN[/]",
                "rejected": "[magenta]SPARED[/]",
            }.get(state, state.upper())
            text = m.get("command") or json.dumps(m.get("match"))
            console.print(f"{stamp()} {verb} {escape(str(text))}" + (f" ({escape(reason)})" if reason else ""))
        for note in _Sink.received[seen.notifications :]:
            p = note["payload"]
            what = str(p.get("type") or p.get("event") or "notification")
            if "mitigation" in what:
                seen.mitigation_notes += 1
                continue
            if what.endswith(".updated"):
                seen.quiet_notes += 1
                continue
            console.print(f"{stamp()} [blue]NOTIFIED[/] webhook {escape(note['path'])}: {escape(what)}")
        seen.notifications = len(_Sink.received)
        if sim.poll() is not None and incs and all(i.get("state") == "resolved" for i in incs):
            break
        time.sleep(1.0)
    return seen


def _report(console: Console, seen: _Seen, base: str) -> None:
    table = Table("runbook", "detected", "incident", "peak", "rules", "state")
    for title, vector, tier, _ in ATTACKS:
        incs = [i for i in seen.incidents.values() if vector in i.get("vectors", []) and i.get("tier") == tier]
        inc = incs[0] if incs else None
        rules = [m for m in seen.mitigations.values() if inc and m.get("incident_id") == inc["id"]]
        table.add_row(
            title,
            "yes" if inc else "[red]no[/]",
            inc["id"][:12] if inc else "-",
            f"{float(inc.get('peak_ratio', 0)):.1f}x" if inc else "-",
            str(len(rules)),
            inc.get("state", "-") if inc else "-",
        )
    console.print(table)
    narrated = len(seen.rules_named)
    console.print(
        f"{len(seen.mitigations) - narrated - seen.held_back} further rules not narrated; "
        f"{seen.held_back} candidate rules held back by the max-rules-per-incident rail; "
        f"{seen.mitigation_notes} mitigation and {seen.quiet_notes} incident-update notifications.\n"
        f"{len(seen.incidents)} incidents, {len(seen.mitigations)} mitigations, "
        f"{seen.notifications} notifications delivered to the demo's webhook sink."
    )
    console.print(
        f"Look further: {base}/ (dashboard), {base}/docs (API), /v1/incidents, /v1/mitigations, "
        "/v1/notify/deliveries, /v1/status-components."
    )
