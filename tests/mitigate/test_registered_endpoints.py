"""The SBC's registered endpoints are learned from its signalling and never blocked; top networks are
blocked only once the attacked target's own ticks confirm them (sampled telemetry)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import time
from pathlib import Path

from mitigate_helpers import example_config, incident, target_id

from voxguard.mitigate.attack_evidence import AttackEvidence
from voxguard.mitigate.engine import MitigateService, traffic_consumers
from voxguard.mitigate.learned_sources import (
    REGISTERED_ENDPOINTS,
    endpoint_learner,
    rtp_peer_learner,
    share_budget,
)
from voxguard.mitigate.policy import enforce, plan_incident, runbook
from voxguard.mitigate.settings import parse_bgp
from voxguard.mitigate.whitelist import Whitelist, WhitelistEntry
from voxguard.shared.bus import Bus
from voxguard.shared.config import Tier
from voxguard.shared.db import make_engine
from voxguard.shared.messages import SourceCount, TrafficTick
from voxguard.shared.partition import traffic_subject

CFG = example_config()
SIP = target_id(CFG, "sbc-eu-1", "udp/5060")
TLS = target_id(CFG, "sbc-eu-1", "tcp/5061")
ENDPOINT = "41.8.246.0/24"  # a busy registered-endpoint network
ATTACKERS = [f"100.64.{i}.0/24" for i in range(1, 5)]
CALLER = "77.7.7.0/24"  # an endpoint sampled once, during the attack only
NOW = dt.datetime.now(dt.UTC)


def sbc_tick(prefixes: list[str], *, at: dt.datetime = NOW, target: str = SIP, role: str = "signalling") -> TrafficTick:
    """A sampled SBC tick: each top network one or two 1:64 samples."""
    return TrafficTick(
        tier=Tier.SBC, target_id=target, target="sbc-eu-1 udp/5060", component="sbc-eu-1", protocol="udp",
        ports="5060", role=role, tick_start=at, tick_seconds=1.0, bytes=1, packets=64 * len(prefixes),
        flows=len(prefixes), sampled=True,
        top_prefixes=[SourceCount(source=p, packets=64, bytes=40_000 - i) for i, p in enumerate(prefixes)],
    )  # fmt: skip


def test_signalling_learner_learns_endpoints_before_the_attack_only() -> None:
    el = endpoint_learner(8)
    assert el.on_tick(sbc_tick([ENDPOINT, "198.18.7.0/24"]), now=0) == 2
    assert el.on_tick(sbc_tick([ENDPOINT], role="tls"), now=1) == 0  # signalling only
    assert el.entries(now=2) == []  # seen once: not yet an endpoint
    el.on_tick(sbc_tick([ENDPOINT]), now=6)
    (entry,) = el.entries(now=7)
    assert str(entry.prefix) == ENDPOINT and entry.kind == REGISTERED_ENDPOINTS
    assert "registered endpoint network of sbc-eu-1 udp/5060" in entry.label()
    # an incident on any target of the component (here TLS) freezes learning on the whole SBC
    el.on_incident(incident(CFG, label="tcp/5061", vectors=("tls_exhaustion",)))
    assert el.on_tick(sbc_tick(ATTACKERS), now=8) == 0
    assert el.on_tick(sbc_tick(ATTACKERS), now=30) == 0
    assert [str(e.prefix) for e in el.entries(now=31)] == [ENDPOINT]
    el.on_incident(incident(CFG, label="tcp/5061", vectors=("tls_exhaustion",), event="resolved"))
    assert el.on_tick(sbc_tick([ENDPOINT]), now=40) == 1
    assert el.entries(now=40 + 3601) == []  # an hour after last seen


def test_busiest_endpoints_are_kept_and_the_learners_share_the_budget() -> None:
    el = endpoint_learner(2)
    el.min_span = 0
    for t in range(5):
        el.on_tick(sbc_tick(["198.18.1.0/24", "198.18.2.0/24"] if t else ["198.18.3.0/24"]), now=t)
    el.on_tick(sbc_tick(["198.18.4.0/24"]), now=6)  # the most recent, but seen once
    assert {str(e.prefix) for e in el.entries(now=7)} == {"198.18.1.0/24", "198.18.2.0/24"}

    def wl(n: int, third: int) -> list[WhitelistEntry]:
        return [WhitelistEntry(ipaddress.ip_network(f"10.{third}.{i}.0/24"), "k", "r") for i in range(n)]

    rtp, eps = wl(10, 1), wl(3, 2)
    both = share_budget([rtp, eps], 8)
    assert len(both) == 8 and eps[:3] == [e for e in both if e in eps]  # the small one all, the rest to RTP
    assert share_budget([wl(10, 1), wl(10, 2)], 8) == wl(10, 1)[:4] + wl(10, 2)[:4]
    assert share_budget([rtp, eps], 0) == [] and share_budget([[], eps], 8) == eps
    assert rtp_peer_learner(5).kind == "active_rtp_peers"


def test_evidence_confirms_networks_that_persist_in_the_attacked_targets_ticks() -> None:
    ev = AttackEvidence(min_ticks=3, min_share=0.25)
    at = [NOW + dt.timedelta(seconds=i) for i in range(40)]
    ev.on_tick(sbc_tick([CALLER], at=at[0]))  # before the incident: not counted
    ev.on_tick(sbc_tick([ATTACKERS[0], CALLER], at=at[1]))  # the tick the incident opened on ...
    ev.track(SIP, at[1])  # ... arrived before its event: counted from the recent ticks
    assert not ev.on_tick(sbc_tick([ATTACKERS[0]], at=at[1]))  # the same tick again counts once
    assert ev.on_tick(sbc_tick([ATTACKERS[0], ATTACKERS[1]], at=at[2]))
    assert not ev.on_tick(sbc_tick([ATTACKERS[0]], at=at[3], target=TLS))  # another target
    net = ipaddress.ip_network
    assert not ev.confirmed(SIP, net(ATTACKERS[0]))
    ev.on_tick(sbc_tick([ATTACKERS[0]], at=at[3]))
    assert ev.confirmed(SIP, net(ATTACKERS[0])) and not ev.confirmed(SIP, net(ATTACKERS[1]))
    for i in range(4, 24):  # a long incident: a caller sampled now and then never adds up
        ev.on_tick(sbc_tick([ATTACKERS[0], *([CALLER] if i % 8 == 0 else [])], at=at[i]))
    assert ev.confirmed(SIP, net(ATTACKERS[0])) and not ev.confirmed(SIP, net(CALLER))
    assert "in 3 of 23 ticks" in ev.describe(SIP, net(CALLER))
    ev.untrack(SIP)
    assert not ev.confirmed(SIP, net(ATTACKERS[0])) and not AttackEvidence(min_ticks=0).enabled


def test_planner_blocks_confirmed_attackers_and_spares_learned_endpoints() -> None:
    """A top-5 /24 that is a learned endpoint network is refused by the whitelist; an attacker /24
    is blocked; a network the traffic does not confirm waits."""
    bgp = parse_bgp({})
    el = endpoint_learner(8)
    el.on_tick(sbc_tick([ENDPOINT]), now=0)
    el.on_tick(sbc_tick([ENDPOINT]), now=10)
    wl = Whitelist(el.entries(now=11))
    inc = incident(CFG, top_prefixes=[ENDPOINT, ATTACKERS[0], CALLER, ATTACKERS[1]]).incident
    ok = {ipaddress.ip_network(a) for a in ATTACKERS[:2]}
    plan = plan_incident(inc, CFG, bgp, confirmed=lambda n: n in ok or bool(wl.overlapping(n)))
    assert [str(n) for n in plan.held] == [CALLER]
    out = enforce(plan.candidates, wl, CFG.tiers[Tier.SBC].mitigation, bgp)
    blocked = [str(s) for c in out if c.state == "proposed" for s in c.sources]
    assert blocked == ATTACKERS[:2] and all(c.action == "discard" for c in out)
    (spared,) = [c for c in out if c.state == "rejected"]
    assert spared.sources == [ipaddress.ip_network(ENDPOINT)]
    assert "whitelist registered_endpoints" in (spared.reason or "") and "registered endpoint network" in (
        spared.reason or ""
    )


def test_a_sip_flood_that_also_looks_like_tdos_follows_its_runbook() -> None:
    ev = incident(CFG, vectors=("sip_flood", "tdos"), top_prefixes=ATTACKERS)
    assert runbook(ev.incident) == "tdos"  # no runbook named: vector priority
    inc = ev.incident.model_copy(update={"runbook": "sip-flood-sbc"})
    assert runbook(inc) == "block_top_networks"
    plan = plan_incident(inc, CFG, parse_bgp({}))
    assert {c.action for c in plan.candidates} == {"discard"} and len(plan.candidates) == 4
    tdos = ev.incident.model_copy(update={"runbook": "tdos-sbc", "vectors": ["tdos"]})
    assert {c.action for c in plan_incident(tdos, CFG, parse_bgp({})).candidates} == {"rate_limit"}


async def test_service_blocks_attackers_once_their_traffic_confirms_them(
    tmp_path: Path, bus: Bus, sqlite_url: str
) -> None:
    engine = make_engine(sqlite_url)
    svc = MitigateService(CFG, bus, engine, tmp_path / "var", bgp=parse_bgp({}), consume=False)
    svc.evidence = AttackEvidence(min_ticks=3, min_share=0.25)  # what consume=True sets up
    await svc.start()
    try:
        t0 = time.time()
        svc.endpoints.on_tick(sbc_tick([ENDPOINT]), now=t0 - 30)  # registered before the attack ...
        await svc.on_traffic_tick(sbc_tick([ENDPOINT]))  # ... and still there
        at = [NOW + dt.timedelta(seconds=i) for i in range(1, 6)]
        opened = incident(CFG, top_prefixes=[CALLER, ENDPOINT, ATTACKERS[0], ATTACKERS[1], ATTACKERS[2]])
        opened.incident.opened_at = at[0]
        opened.incident.runbook = "sip-flood-sbc"
        inc_id = opened.incident.id
        await svc.on_traffic_tick(sbc_tick([CALLER, ENDPOINT, *ATTACKERS[:3]], at=at[0]))  # the opening tick
        await svc.on_incident(opened)

        def rules() -> list[tuple[str, str, str]]:
            views = [(r.state, r.view()) for r in svc.store.list_rules(incident_id=inc_id)]
            return [(state, v.match.sources[0], v.reason or "") for state, v in views]

        assert [(s, src) for s, src, _ in rules()] == [("rejected", ENDPOINT)]  # nothing confirmed yet
        assert "registered_endpoints" in rules()[0][2]
        await svc.on_traffic_tick(sbc_tick([ATTACKERS[0], ATTACKERS[1]], at=at[1]))
        await svc.on_traffic_tick(sbc_tick([ATTACKERS[0], ATTACKERS[3]], at=at[2]))  # 3 of 3 ticks
        live = {src for s, src, _ in rules() if s != "rejected"}
        assert live == {ATTACKERS[0]}, rules()
        await svc.on_traffic_tick(sbc_tick([ATTACKERS[1], ATTACKERS[3]], at=at[3]))
        live = {src for s, src, _ in rules() if s != "rejected"}
        assert live == {ATTACKERS[0], ATTACKERS[1]}  # ATTACKERS[3] is no top network of the incident
        assert CALLER not in {src for _, src, _ in rules()}
        assert all(r.view().action == "discard" for r in svc.store.list_rules(incident_id=inc_id))

        resolved = opened.model_copy(update={"event": "resolved"})
        resolved.incident = opened.incident.model_copy(update={"state": "resolved"})
        await svc.on_incident(resolved)
        await svc.on_traffic_tick(sbc_tick([ATTACKERS[2]], at=at[4]))  # nothing planned after the end
        assert {src for s, src, _ in rules() if s != "rejected"} == {ATTACKERS[0], ATTACKERS[1]}
    finally:
        await svc.stop()
        engine.dispose()


def test_traffic_consumers_cover_component_and_partitioned_subjects() -> None:
    filters = [f for _, f in traffic_consumers()]
    assert len({name for name, _ in traffic_consumers()}) == len(filters) == 4
    for tier in ("sbc", "media"):
        for host, shards in ((None, 1), ("203.0.113.10", 8), (None, 8)):
            subj = traffic_subject(tier, "t1", host=host, shards=shards)
            assert sum(_matches(f, subj) for f in filters) == 1, subj
    assert not any(_matches(f, traffic_subject("api", "t1", host="192.0.2.81", shards=8)) for f in filters)


def _matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    return len(p) == len(s) and all(a in ("*", b) for a, b in zip(p, s, strict=True))


async def test_sbc_ticks_reach_the_learner_on_both_subject_forms(tmp_path: Path, bus: Bus, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    svc = MitigateService(CFG, bus, engine, tmp_path / "var", bgp=parse_bgp({}), consume=True)
    await svc.start()
    try:
        host_tick = sbc_tick(["198.18.9.0/24"]).model_copy(update={"host": "203.0.113.10"})
        await bus.publish(traffic_subject("sbc", SIP, host=None, shards=4), sbc_tick([ENDPOINT]))
        await bus.publish(traffic_subject("sbc", host_tick.target_id, host="203.0.113.10", shards=4), host_tick)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(svc.endpoints.networks()) < 2:
            await asyncio.sleep(0.1)
        assert {str(n) for n in svc.endpoints.networks()} == {ENDPOINT, "198.18.9.0/24"}
    finally:
        await svc.stop()
        engine.dispose()


async def test_without_traffic_of_the_target_its_top_networks_are_planned_as_named(
    tmp_path: Path, bus: Bus, sqlite_url: str
) -> None:
    """No tick of the attacked SBC ever reached the service: nothing to wait for."""
    engine = make_engine(sqlite_url)
    svc = MitigateService(CFG, bus, engine, tmp_path / "var", bgp=parse_bgp({}), consume=False)
    svc.evidence = AttackEvidence(min_ticks=3, min_share=0.25)
    await svc.start()
    try:
        await svc.on_traffic_tick(sbc_tick(ATTACKERS))  # sbc-eu-1 udp/5060 only
        ev = incident(CFG, component="sbc-us-1", top_prefixes=ATTACKERS[:2])
        await svc.on_incident(ev)
        rows = svc.store.list_rules(incident_id=ev.incident.id)
        assert sorted(s for r in rows if r.state != "rejected" for s in r.view().match.sources) == ATTACKERS[:2]
    finally:
        await svc.stop()
        engine.dispose()


async def test_a_partly_whitelisted_top_network_needs_evidence_too(tmp_path: Path, bus: Bus, sqlite_url: str) -> None:
    """The trunk /27 is whitelisted; its /24 sampled once must not be blocked around it."""
    engine = make_engine(sqlite_url)
    svc = MitigateService(CFG, bus, engine, tmp_path / "var", bgp=parse_bgp({}), consume=False)
    svc.evidence = AttackEvidence(min_ticks=3, min_share=0.25)
    await svc.start()
    try:
        trunk_net = "192.0.2.0/24"  # holds the config's SIP trunk provider 192.0.2.192/27
        await svc.on_traffic_tick(sbc_tick([trunk_net, ATTACKERS[0]], at=NOW))
        ev = incident(CFG, top_prefixes=[trunk_net, ATTACKERS[0]])
        ev.incident.opened_at = NOW
        await svc.on_incident(ev)
        assert svc.store.list_rules(incident_id=ev.incident.id) == []
        for i in (1, 2):
            await svc.on_traffic_tick(sbc_tick([trunk_net, ATTACKERS[0]], at=NOW + dt.timedelta(seconds=i)))
        rows = [r.view() for r in svc.store.list_rules(incident_id=ev.incident.id)]
        split = next(v for v in rows if v.match.sources and v.match.sources[0].startswith("192.0.2."))
        assert "split around whitelist static 192.0.2.192/27" in (
            split.reason or ""
        )  # with evidence: blocked around it
        assert not any(ipaddress.ip_network(s).overlaps(ipaddress.ip_network("192.0.2.192/27")) for v in rows
                       for s in v.match.sources if v.action != "accept")  # fmt: skip
    finally:
        await svc.stop()
        engine.dispose()


async def test_per_host_batches_reach_the_learner(tmp_path: Path, bus: Bus, sqlite_url: str) -> None:
    """Per-host ticks travel as batches (TrafficBatch): each record is a tick for the learners."""
    import orjson

    from voxguard.shared.batches import ticks_to_batch

    engine = make_engine(sqlite_url)
    svc = MitigateService(CFG, bus, engine, tmp_path / "var", bgp=parse_bgp({}), consume=True)
    await svc.start()
    try:
        host_tick = sbc_tick(["198.18.9.0/24"]).model_copy(update={"host": "203.0.113.10"})
        doc = ticks_to_batch([host_tick.model_dump(mode="json")])
        subj = traffic_subject("sbc", host_tick.target_id, host="203.0.113.10", shards=4)
        sent = await bus.publish_raw_many([(subj, orjson.dumps(doc), str(doc["id"]))])
        assert sent == 1
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not svc.endpoints.networks():
            await asyncio.sleep(0.1)
        assert {str(n) for n in svc.endpoints.networks()} == {"198.18.9.0/24"}
    finally:
        await svc.stop()
        engine.dispose()
