"""Notification fan-out: a burst of incident events to 5 channels against local vendor servers.

1,000 incident events, each routed to Slack, PagerDuty, two signed webhooks and e-mail (a real
aiosmtpd server when installed, else a third webhook). The local vendor servers (the contract-
checking fakes of ``tests/notify``) run in their own thread with a small per-request delay.
Reports how fast the events are *accepted* (what the bus consumer waits for: routing plus the
durable outbox insert), deliveries/s, p50/p99 per-attempt latency, p99 event-to-sent latency,
and the busiest second per channel against the configured provider rate limit.

    .venv/bin/python benchmarks/notify.py
    .venv/bin/python benchmarks/notify.py --events 2000 --delay-ms 20 --rate 300
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from voxguard.notify.config import load_notify_config
from voxguard.notify.service import NotifyService
from voxguard.notify.store import MIGRATIONS, Store
from voxguard.shared.config import VoxGuardConfig
from voxguard.shared.db import make_engine, upgrade_to_head
from voxguard.shared.messages import IncidentEvent, IncidentView, SourceCount

ROOT = Path(__file__).resolve().parent.parent


def _load_fakes() -> Any:
    """tests/notify/fakesaas.py by path (benchmarks/notify.py would shadow a package named notify)."""
    spec = importlib.util.spec_from_file_location("notify_fakesaas", ROOT / "tests" / "notify" / "fakesaas.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["notify_fakesaas"] = mod
    spec.loader.exec_module(mod)
    return mod


def _serve_forever(spec_dir: Path, delay_s: float) -> None:
    """Child-process mode: the vendor fakes (and their jsonschema checks) get their own core."""
    fakes = _load_fakes()

    async def main() -> None:
        server = await fakes.FakeSaaS(spec_dir, delay_s=delay_s).start()
        print(server.port, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def _spawn_server(spec_dir: Path, delay_s: float) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, __file__, "--serve", "--delay-ms", str(delay_s * 1000)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}"


def _smtp() -> tuple[Any, int] | None:
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        return None

    class Sink:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 OK"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    ctl = Controller(Sink(), hostname="127.0.0.1", port=port)
    ctl.start()
    return ctl, port


def _event(n: int) -> IncidentEvent:
    view = IncidentView(
        id=f"inc-{n}",
        tier="sbc",  # type: ignore[arg-type]
        target_id="t",
        target="sbc-eu-1 udp/5060",
        vectors=["sip_flood"],
        state="open",
        severity="critical",
        opened_at=dt.datetime.now(dt.UTC),
        peak_ratio=8.0 + n % 7,
        top_sources=[SourceCount(source=f"198.51.100.{n % 250}", packets=1000, bytes=80000)],
    )
    return IncidentEvent(event="opened", tier="sbc", incident=view)  # type: ignore[arg-type]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


async def run(args: argparse.Namespace) -> None:
    fakes = _load_fakes()
    spec_dir = ROOT.parent / "shared" / "data" / "api-specs"
    proc, base = _spawn_server(spec_dir, args.delay_ms / 1000)
    smtp = None if args.no_email else _smtp()
    limits = {"rate_per_s": args.rate, "burst": args.rate // 5 or 1, "concurrency": args.concurrency}
    retry = {"max_attempts": 6, "base_s": 0.2, "cap_s": 2.0, "timeout_s": 5.0}
    chans: dict[str, Any] = {
        "slack": {"type": "slack", "url": f"{base}{fakes.SLACK_PATH}", **limits, "retry": retry},
        "pd": {
            "type": "pagerduty",
            "routing_key": fakes.PD_KEY,
            "url": f"{base}/pagerduty/v2/enqueue",
            **limits,
            "retry": retry,
        },
        "hook-a": {"type": "webhook", "url": f"{base}/webhook/a", "secret": fakes.WH_SECRET, **limits, "retry": retry},
        "hook-b": {"type": "webhook", "url": f"{base}/webhook/b", "secret": fakes.WH_SECRET, **limits, "retry": retry},
    }
    if smtp is not None:
        chans["mail"] = {
            "type": "email",
            "host": "127.0.0.1",
            "port": smtp[1],
            "starttls": "never",
            "from": "vg@example.net",
            "to": ["noc@example.net"],
            **limits,
            "retry": retry,
        }
    else:
        chans["hook-c"] = {
            "type": "webhook",
            "url": f"{base}/webhook/c",
            "secret": fakes.WH_SECRET,
            **limits,
            "retry": retry,
        }
    raw = VoxGuardConfig.model_validate(
        {
            "tiers": {
                "sbc": {
                    "components": [{"name": "s", "addresses": ["192.0.2.1/32"]}],
                    "monitors": [{"protocol": "udp", "ports": "5060"}],
                }
            },
            "notifications": {"channels": chans, "routes": [{"name": "all", "channels": list(chans)}]},
        }
    )
    cfg = load_notify_config(raw)
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/bench.db")
        upgrade_to_head(engine, MIGRATIONS)
        store = Store(engine)
        svc = NotifyService(cfg, store, poll_s=0.05, tick_s=3600)
        svc.dispatcher.max_in_flight = args.in_flight
        await svc.start()
        evs = [_event(n) for n in range(args.events)]
        t0, cpu0 = time.perf_counter(), time.process_time()
        for ev in evs:
            await svc.on_incident(ev)
        accepted = time.perf_counter() - t0
        await svc.dispatcher.drain(timeout_s=600)
        total = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        await svc.stop()
        rows = store.list(limit=1_000_000)
        lat = [a.latency_ms or 0.0 for r in rows for a in store.attempts(r.id) if a.status == "sent"]
        e2e = [(r.updated_at - r.created_at).total_seconds() * 1000 for r in rows if r.status == "sent"]
        sent = sum(1 for r in rows if r.status == "sent")
        engine.dispose()
    stats = httpx.get(f"{base}/_stats", timeout=30).json()
    proc.terminate()
    proc.wait(10)
    per_second: Counter[tuple[str, int]] = Counter()
    for vendor, ts in stats["stamps"]:
        per_second[(vendor, int(ts))] += 1
    if smtp is not None:
        smtp[0].stop()
    n = len(chans) * args.events
    print(
        f"events: {args.events} x {len(chans)} channels = {n} deliveries; sent {sent}; "
        f"contract violations {len(stats['violations'])}"
    )
    print(
        f"accepted (routed + persisted) in {accepted:.2f} s = {args.events / accepted:,.0f} events/s "
        "(the bus consumer's cost)"
    )
    print(f"all delivered in {total:.2f} s = {sent / total:,.0f} deliveries/s")
    print(
        f"attempt latency p50 {pct(lat, 0.5):.1f} ms, p99 {pct(lat, 0.99):.1f} ms; "
        f"event-to-sent p99 {pct(e2e, 0.99) / 1000:.2f} s"
    )
    print(
        f"sender process CPU {cpu:.2f} s = {cpu / max(1, sent) * 1000:.2f} ms per delivery; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    busiest = Counter[str]()
    for (vendor, _), count in per_second.items():
        busiest[vendor] = max(busiest[vendor], count)
    if busiest:
        print(f"busiest second per vendor (limit {args.rate}/s + burst {limits['burst']} per channel): {dict(busiest)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=250, help="provider rate limit per channel (requests/s)")
    ap.add_argument("--concurrency", type=int, default=8, help="in-flight requests per channel")
    ap.add_argument("--in-flight", type=int, default=64, help="in-flight deliveries overall")
    ap.add_argument("--delay-ms", type=float, default=5.0, help="server think time per request")
    ap.add_argument("--no-email", action="store_true", help="a third webhook instead of SMTP")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        _serve_forever(ROOT.parent / "shared" / "data" / "api-specs", args.delay_ms / 1000)
        return
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
