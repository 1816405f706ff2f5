"""Scale-out end to end: two collectors, two sharded baseline workers, one nats-server, PostgreSQL.

Real processes (``voxguard serve ingest`` x2, ``voxguard serve baseline`` x2 with
``VOXGUARD_BASELINE_SHARDS=4``) in their own bus namespace, fed by two ``voxguard simulate``
processes, each playing a different set of routers to a different collector (exporters pinned
to a replica). Checked: every target is decided by exactly one worker; a SIP flood opens one
incident; after SIGKILL of the worker that holds it, the survivor owns every partition within
seconds and finishes the same incident (same id, no second ``opened``, no event twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats.js.errors
import pytest
import yaml

from vghelpers import free_port, stop_process, wait_http_ready
from voxguard.baseline.shards import BUCKET
from voxguard.baseline.store import BaselineStore
from voxguard.shared.auth import KeyStore
from voxguard.shared.bus import STREAM_EVENTS, Bus, Delivery, default_streams
from voxguard.shared.config import VECTORS, example_config_path, load_config
from voxguard.shared.db import make_engine
from voxguard.shared.messages import IncidentEvent
from voxguard.shared.partition import partition_of

SHARDS = 4
ATTACK_AT_S = 22  # after the 15 s the one-minute short-term baseline needs before it detects
ATTACK_S = 18
SIM_S = 70
FAILOVER_S = 10.0  # lease TTL (5 s) + a renew round + loading the partition, with room to spare
SBC_SIP = "sbc-eu-1 udp/5060"


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    base: str = ""

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


def _udp_ports() -> dict[str, int]:
    return {k: free_port(socket.SOCK_DGRAM) for k in ("netflow_port", "ipfix_port", "sflow_port")}


def write_configs(tmp: Path) -> dict[str, Path]:
    """The example platform with a one-minute short-term baseline (so a fresh worker detects after
    15 s) and quick resolution; collector A hears the SBC and core routers, B the others."""
    doc = yaml.safe_load(example_config_path().read_text())
    for tier in doc["tiers"].values():
        tier["baseline"] = {**tier.get("baseline", {}), "short_term_minutes": 1, "learning_days": 0}
        vectors = tier.setdefault("detection", {}).setdefault("vectors", {})
        for v in VECTORS:  # only quiet_ticks set: ratios stay the example's or the catalogue's
            vectors[v] = {**vectors.get(v, {}), "quiet_ticks": 5}
    out: dict[str, Path] = {}
    groups = {"a": ("sbc", "registrar"), "b": ("media", "api", "turn")}
    for name, tiers in groups.items():
        ingest = {**doc["ingest"], "host": "127.0.0.1", **_udp_ports()}
        full = {**doc, "ingest": ingest}
        part = {**full, "tiers": {t: v for t, v in doc["tiers"].items() if t in tiers}}
        for kind, body in (("full", full), ("sim", part)):
            path = tmp / f"{kind}-{name}.yaml"
            path.write_text(yaml.safe_dump(body))
            out[f"{kind}-{name}"] = path
    return out


@pytest.fixture
def namespace(nats_url: str) -> Iterator[str]:
    """A bus namespace of its own on the shared server; its streams and lease bucket go afterwards."""
    ns = f"t{uuid.uuid4().hex[:10]}"
    yield ns

    async def clean() -> None:
        async with Bus(nats_url, namespace=ns) as bus:
            await bus.delete_streams()
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await bus.js.delete_key_value(bus.stream_name(BUCKET))

    asyncio.run(clean())


def _spawn(name: str, args: list[str], env: dict[str, str], tmp: Path) -> Proc:
    log = tmp / f"{name}.log"
    with log.open("wb") as fh:
        popen = subprocess.Popen(
            [sys.executable, "-m", "voxguard.cli.main", *args], env=env, cwd=tmp, stdout=fh, stderr=subprocess.STDOUT
        )
    return Proc(name, popen, log)


def _until(
    what: str, cond: Callable[[], Any], timeout: float, procs: list[Proc], every: float = 0.25, note: Any = ""
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except httpx.TransportError:
            last = None
        if last:
            return last
        time.sleep(every)
    logs = "\n".join(f"--- {p.name}\n{p.tail()}" for p in procs)
    extra = note() if callable(note) else note
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r}) {extra}\n{logs}")


@pytest.mark.timeout(180)
def test_two_workers_split_targets_and_fail_over(tmp_path: Path, nats_url: str, pg_url: str, namespace: str) -> None:
    configs = write_configs(tmp_path)
    keys = KeyStore(make_engine(pg_url))
    keys.migrate()
    token = keys.create_key("sharding-test", "read")
    auth = {"Authorization": f"Bearer {token}"}
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("VOXGUARD_")}
    base_env.update(NATS_URL=nats_url, DATABASE_URL=pg_url, VOXGUARD_NATS_NAMESPACE=namespace,
                    VOXGUARD_BASELINE_SHARDS=str(SHARDS), VOXGUARD_LOG_FORMAT="console")  # fmt: skip

    events: list[IncidentEvent] = []
    loop = asyncio.new_event_loop()
    watch_bus = Bus(nats_url, namespace=namespace)

    async def on_event(ev: IncidentEvent, _d: Delivery) -> None:
        events.append(ev)

    async def watch() -> None:
        await watch_bus.connect()
        await watch_bus.ensure_streams(default_streams(traffic_max_bytes=256 * 1024 * 1024))
        await watch_bus.subscribe_durable(STREAM_EVENTS, "watch", "voxguard.incident.v1.>", IncidentEvent, on_event)

    loop.run_until_complete(watch())

    def seen() -> list[tuple[str, str, str, str, float]]:
        return [(e.ts.strftime("%T"), e.event, e.incident.id[:8], e.incident.target, e.incident.peak_ratio)
                for e in events]  # fmt: skip

    def pump() -> None:  # let the watcher's consumer run between polls
        loop.run_until_complete(asyncio.sleep(0.05))

    procs: list[Proc] = []
    workers: list[Proc] = []
    collectors: list[Proc] = []
    try:
        for i, cfg in enumerate(("full-a", "full-b")):
            port = free_port()
            env = dict(base_env, VOXGUARD_CONFIG=str(configs[cfg]), VOXGUARD_HTTP=f"127.0.0.1:{port}",
                       VOXGUARD_VAR_DIR=str(tmp_path / f"var-c{i}"))  # fmt: skip
            p = _spawn(f"collector-{i}", ["serve", "ingest"], env, tmp_path)
            p.base = f"http://127.0.0.1:{port}"
            collectors.append(p)
        for i in range(2):
            port = free_port()
            env = dict(base_env, VOXGUARD_CONFIG=str(configs["full-a"]), VOXGUARD_HTTP=f"127.0.0.1:{port}",
                       VOXGUARD_VAR_DIR=str(tmp_path / f"var-w{i}"))  # fmt: skip
            p = _spawn(f"worker-{i}", ["serve", "baseline"], env, tmp_path)
            p.base = f"http://127.0.0.1:{port}"
            workers.append(p)
        procs = collectors + workers
        for p in procs:
            wait_http_ready(p.base, p.popen, timeout=60)

        def shards(p: Proc) -> dict[str, Any]:
            r = httpx.get(f"{p.base}/v1/shards", headers=auth, timeout=5)
            r.raise_for_status()
            return dict(r.json())

        def split() -> bool:
            owned = [set(shards(w)["owned"]) for w in workers]
            fair = [len(o) for o in owned] == [SHARDS // 2, SHARDS // 2]
            return fair and not (owned[0] & owned[1]) and owned[0] | owned[1] == set(range(SHARDS))

        _until("the two workers split the partitions evenly", split, 20, procs)

        sims = []
        for name in ("a", "b"):
            # sFlow: packet samples are exported at once (a NetFlow cache would hold long flows
            # back for its active timeout, which a one-minute baseline would take for floods)
            extra = ["--sampling", "1", "--attack", f"sip_flood@{ATTACK_AT_S}s+{ATTACK_S}s"] if name == "a" else \
                ["--sampling", "16"]  # fmt: skip
            args = ["simulate", "--config", str(configs[f"sim-{name}"]), "--duration", str(SIM_S),
                    "--formats", "sflow5", "--seed", "1", *extra]  # fmt: skip
            sims.append(_spawn(f"simulate-{name}", args, dict(base_env), tmp_path))
        started = time.monotonic()
        procs = procs + sims

        # exporters pinned to a replica: each collector hears its own routers, never the other's
        # (the core switch exports its long-lived flows rarely, so it need not have spoken yet)
        pinned = {"collector-0": {"edge-sbc-01", "sw-core-01"},
                "collector-1": {"edge-media-01", "edge-api-01", "edge-turn-01"}}  # fmt: skip
        early = {"collector-0": {"edge-sbc-01"}, "collector-1": {"edge-media-01", "edge-api-01"}}

        def heard(p: Proc) -> set[str]:
            r = httpx.get(f"{p.base}/v1/exporters", headers=auth, timeout=5)
            return {e["name"] for e in r.json()}

        for c in collectors:
            _until(f"{c.name} hears its exporters", lambda c=c: early[c.name] <= heard(c), 15, procs)  # type: ignore[misc]

        store = BaselineStore(make_engine(pg_url))

        def owned_targets(p: Proc) -> set[str]:
            r = httpx.get(f"{p.base}/v1/shards/targets", headers=auth, params={"limit": 100_000}, timeout=5)
            return set(r.json()["items"])

        def targets_settled() -> bool:
            stored = {t.id: t for t in store.targets()}
            return len(stored) >= 40 and any(t.host for t in stored.values())

        _until("targets stored by their owners", targets_settled, 20, procs)
        for c in collectors:
            assert heard(c) <= pinned[c.name], (c.name, heard(c))
        parts = [set(shards(w)["owned"]) for w in workers]

        def every_target_has_one_owner() -> bool:
            stored = {t.id for t in store.targets()}  # written by the owners as ticks arrive,
            per_worker = [owned_targets(w) for w in workers]  # known to the engine a tick later
            assert not per_worker[0] & per_worker[1], f"decided by both workers: {per_worker[0] & per_worker[1]}"
            for i, tids in enumerate(per_worker):
                assert {partition_of(t, SHARDS) for t in tids} <= parts[i]
            return stored <= per_worker[0] | per_worker[1]

        _until("every stored target owned by a worker", every_target_has_one_owner, 10, procs)
        per_worker = [owned_targets(w) for w in workers]
        assert all(len(t) >= 5 for t in per_worker), [len(t) for t in per_worker]

        # the flood opens one incident, on the worker owning the SBC's SIP target
        sbc_id = next(td.id for td in load_config(configs["full-a"]).iter_targets() if td.name == SBC_SIP)

        def opened() -> IncidentEvent | None:
            pump()
            return next((e for e in events if e.event == "opened" and e.incident.target_id == sbc_id), None)

        first = _until("the SIP flood is detected", opened, ATTACK_AT_S + 25 - (time.monotonic() - started), procs)

        def named() -> IncidentEvent | None:
            # on a loaded machine the flood's ramp can cross the TDoS bar (3x) a tick before the
            # SIP-flood bar (5x): the same incident then names sip_flood in its next update
            pump()
            return next((e for e in events if e.incident.id == first.incident.id and "sip_flood" in
                         e.incident.vectors), None)  # fmt: skip

        _until("the incident names the SIP flood", named, 10, procs)
        victim = next(w for w in workers if sbc_id in owned_targets(w))
        survivor = next(w for w in workers if w is not victim)
        victim_parts = set(shards(victim)["owned"])

        # SIGKILL: no hand-over, the leases expire and the survivor takes over
        victim.popen.send_signal(signal.SIGKILL)
        victim.popen.wait(10)
        killed_at = time.monotonic()
        killed_wall = dt.datetime.now(dt.UTC)
        _until("the survivor owns every partition",
               lambda: set(shards(survivor)["owned"]) == set(range(SHARDS)), FAILOVER_S, procs)  # fmt: skip
        failover_s = time.monotonic() - killed_at
        assert victim_parts <= set(shards(survivor)["owned"])
        assert sbc_id in owned_targets(survivor)
        stored_ids = {t.id for t in store.targets()}
        _until("the survivor decides for every target", lambda: stored_ids <= owned_targets(survivor), 20, procs,
               note=lambda: sorted(stored_ids - owned_targets(survivor)))  # fmt: skip

        def resolved() -> IncidentEvent | None:
            pump()
            return next((e for e in events if e.event == "resolved" and e.incident.target_id == sbc_id), None)

        remaining = ATTACK_AT_S + ATTACK_S + 25 - (time.monotonic() - started)
        end = _until("the survivor resolves the incident", resolved, max(remaining, 10), procs, note=lambda: seen())
        for _ in range(20):  # any straggler
            pump()
    finally:
        for p in procs:
            stop_process(p.popen, timeout=20)
        loop.run_until_complete(watch_bus.close())
        loop.close()

    mine = [e for e in events if e.incident.target_id == sbc_id]
    assert [e.event for e in mine].count("opened") == 1, seen()
    assert {e.incident.id for e in mine} == {first.incident.id}, "the survivor opened a second incident"
    assert end.incident.id == first.incident.id and end.ts > killed_wall
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids)), "an incident event was delivered twice"
    items = [i for i in store.incidents(limit=500)[0] if i.target_id == sbc_id]
    assert [(i.id, i.state) for i in items] == [(first.incident.id, "resolved")]
    timeline = store.incident(first.incident.id)
    assert timeline is not None and timeline[1][0]["event"] == "opened"
    assert failover_s < FAILOVER_S
