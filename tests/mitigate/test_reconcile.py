"""Reconciler logic against a recording speaker: ordering, batching, refusal isolation, restarts, TTL."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from voxguard.mitigate.policy import Candidate
from voxguard.mitigate.reconcile import Reconciler
from voxguard.mitigate.store import RuleRow, Store
from voxguard.shared.db import make_engine

BAD = "198.19.66.0/24"  # the speaker refuses any command carrying this source


class Recorder:
    """Acknowledges like ExaBGP: 'error' for a whole command when any of its routes is bad."""

    def __init__(self) -> None:
        self.connected = True
        self.commands: list[str] = []
        self.rib: set[str] = set()

    async def send_many(self, commands: list[str], timeout: float) -> list[bool | None]:
        out: list[bool | None] = []
        for cmd in commands:
            self.commands.append(cmd)
            if BAD in cmd:
                out.append(False)
                continue
            verb, _, rest = cmd.partition(" flow ")
            bodies = ["route " + b for b in rest.split("route ") if b.strip()]
            for b in bodies:
                key = b.split(" then ")[0]
                (self.rib.add if verb == "announce" else self.rib.discard)(key)
            out.append(True)
        return out


def cand(src: str | None, action: str = "discard", group: str | None = None) -> Candidate:
    return Candidate(
        action,  # type: ignore[arg-type]
        ipaddress.ip_network("198.51.100.0/28"),
        [ipaddress.ip_network(src)] if src else [],
        "udp",
        (10000, 20000),
        125000 if action == "rate_limit" else None,
        group=group,
    )


async def test_guards_first_batches_isolated_failures_restart_and_ttl(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    store = Store(engine)
    store.migrate()
    events: list[tuple[str, str]] = []

    async def notify(rows: list[RuleRow], event: str) -> None:
        events.extend((event, r.id) for r in rows)

    speaker = Recorder()
    rec = Reconciler(store, speaker, notify)
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    kw = {
        "incident_id": "i",
        "tier": "media",
        "target_id": "t",
        "expires_at": soon,
        "created_by": "x",
        "dry_run": False,
    }
    rows = store.add_candidates(
        [
            cand(None, "rate_limit", group="g"),
            cand("203.0.113.0/28", "accept", group="g"),
            *[cand(f"198.19.{i}.0/24") for i in range(60)],
            cand(BAD),
        ],
        **kw,  # type: ignore[arg-type]
    )
    res = await rec.run_once()
    assert res.announced == 62 and res.failed == 1
    first = speaker.commands[0]
    assert first.startswith("announce flow route") and "then { accept; }" in first  # guards go alone, first
    assert "rate-limit" not in first
    assert any(c.count("route {") == 50 for c in speaker.commands)  # batched
    # the bad route was isolated: its batch retried route by route, the rest announced
    states = {r.id: r.state for r in store.list_rules(limit=1000)}
    bad_id = rows[-1].id
    assert states[bad_id] == "failed"
    assert sum(1 for s in states.values() if s == "announced") == 62
    assert ("failed", bad_id) in events

    # ExaBGP restarted: empty RIB, everything desired goes out again
    speaker.rib.clear()
    rec.reset()
    res = await rec.run_once()
    assert res.announced == 62 and len(speaker.rib) == 62

    # steady state: nothing to send
    n = len(speaker.commands)
    res = await rec.run_once()
    assert res.announced == 0 and len(speaker.commands) == n

    # the incident ends: the guarded rule is withdrawn before its accept guard
    store.schedule_incident_withdrawal("i", dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    res = await rec.run_once()
    assert res.expired == 62 and speaker.rib == set()
    withdraws = [c for c in speaker.commands[n:] if c.startswith("withdraw")]
    assert "then { accept; }" in withdraws[-1] and all("accept" not in c for c in withdraws[:-1])
    engine.dispose()


async def test_large_work_is_split_into_passes_new_rules_first(tmp_path: Path, monkeypatch: object) -> None:
    import voxguard.mitigate.reconcile as rc

    monkeypatch.setattr(rc, "MAX_ROUTES_PER_PASS", 20)  # type: ignore[attr-defined]
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    store = Store(engine)
    store.migrate()

    async def notify(rows: list[RuleRow], event: str) -> None:
        return None

    speaker = Recorder()
    rec = Reconciler(store, speaker, notify)
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    kw = {
        "incident_id": "i",
        "tier": "media",
        "target_id": "t",
        "expires_at": soon,
        "created_by": "x",
        "dry_run": False,
    }
    store.add_candidates([cand(f"198.19.{i}.0/24") for i in range(50)], **kw)  # type: ignore[arg-type]
    passes = 0
    while True:
        res = await rec.run_once()
        passes += 1
        if not res.more:
            break
    assert passes == 3 and len(speaker.rib) == 50

    speaker.rib.clear()
    rec.reset()  # ExaBGP restarted with 50 rules to re-announce; meanwhile a new rule arrives
    new = store.add_candidates([cand("198.18.200.0/24")], **{**kw, "incident_id": "j"})  # type: ignore[arg-type]
    res = await rec.run_once()
    assert res.more and res.announced == 20
    assert store.get(new[0].id).state == "announced"  # type: ignore[union-attr]
    engine.dispose()
