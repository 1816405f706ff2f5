"""Peers of calls in progress before an attack are learned from media traffic and never blocked."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from mitigate_helpers import example_config, incident, target_id

from voxguard.mitigate.engine import MitigateService
from voxguard.mitigate.learned_sources import RTP_PEERS as KIND
from voxguard.mitigate.learned_sources import rtp_peer_learner
from voxguard.mitigate.settings import parse_bgp
from voxguard.shared.bus import Bus
from voxguard.shared.config import Tier
from voxguard.shared.db import make_engine
from voxguard.shared.messages import SourceCount, TrafficTick

CFG = example_config()
MEDIA = target_id(CFG, "media-gw-eu", "udp/10000-20000")


def media_tick(sources: list[str], target: str = MEDIA) -> TrafficTick:
    return TrafficTick(
        tier=Tier.MEDIA, target_id=target, target="media-gw-eu udp/10000-20000", component="media-gw-eu",
        protocol="udp", ports="10000-20000", role="media", tick_start=dt.datetime.now(dt.UTC), tick_seconds=1.0,
        bytes=1, packets=1, flows=1,
        top_sources=[SourceCount(source=s, packets=100, bytes=20_000) for s in sources],
    )  # fmt: skip


def test_learner_expires_caps_and_freezes_under_attack() -> None:
    rl = rtp_peer_learner(3)
    rl.ttl, rl.per_target, rl.min_span = 60, 2, 0
    assert rl.on_tick(media_tick(["198.18.5.7", "2001:db8:7::9", "198.18.6.1"]), now=0) == 2  # per-target cap
    assert {str(e.prefix) for e in rl.entries(now=10)} == {"198.18.5.0/24", "2001:db8:7::/64"}
    assert all(e.kind == KIND for e in rl.entries(now=10))
    rl.on_tick(media_tick(["198.18.8.1", "198.18.9.1"]), now=20)
    assert len(rl.entries(now=21)) == 3  # total cap: the least recently seen went
    assert rl.entries(now=200) == []  # expired
    rl.on_incident(
        incident(CFG, tier="media", component="media-gw-eu", label="udp/10000-20000", vectors=("rtp_flood",))
    )
    assert rl.on_tick(media_tick(["203.0.113.99"]), now=300) == 0  # attackers are not learned
    assert rl.on_tick(media_tick(["bogus"], target="other"), now=300) == 0


def test_only_networks_seen_for_min_span_are_peers() -> None:
    """A flood ramping up before its incident opens must not whitelist its own sources."""
    rl = rtp_peer_learner(32)
    rl.ttl, rl.min_span = 60, 8
    for t in range(5):  # a call's peer, seen over 8 s, and a new source in every tick (spoofed)
        rl.on_tick(media_tick(["198.18.5.7", f"100.64.{t}.1"]), now=2 * t)
    assert {str(e.prefix) for e in rl.entries(now=9)} == {"198.18.5.0/24"}
    rl.on_tick(media_tick(["198.18.5.7"]), now=100)  # gone longer than the ttl: starts over
    assert rl.entries(now=100) == []


async def test_active_peer_networks_are_spared(tmp_path: Path, bus: Bus, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    svc = MitigateService(CFG, bus, engine, tmp_path / "var", bgp=parse_bgp({}), consume=False)
    await svc.start()
    try:
        svc.rtp_peers.on_tick(media_tick(["198.18.5.7"]), now=time.time() - 30)  # a call in progress
        await svc.on_media_tick(media_tick(["198.18.5.7"]))  # ... still there when the attack begins
        ev = incident(
            CFG,
            tier="media",
            component="media-gw-eu",
            label="udp/10000-20000",
            vectors=("rtp_flood",),
            top_sources=["198.18.5.7", "100.64.9.9"],
        )
        await svc.on_incident(ev)
        rules = svc.store.list_rules(incident_id=ev.incident.id)
        blocking = [r.view() for r in rules if r.state != "rejected" and r.view().action != "accept"]
        assert not any(s.startswith("198.18.5.") for v in blocking for s in v.match.sources)
        spared = [r for r in rules if r.state == "rejected" and "active RTP peer" in (r.view().reason or "")]
        assert spared, [(r.state, r.view().match.sources, r.view().reason) for r in rules]
        # the rate limit on unknown sources goes out only behind an accept guard for the peers
        if any(v.action == "rate_limit" and not v.match.sources for v in blocking):
            accepts = [r.view() for r in rules if r.view().action == "accept"]
            assert any("198.18.5.0/24" in v.match.sources for v in accepts)
        blocked = [r for r in rules if r.view().action == "discard" and r.state != "rejected"]
        assert any("100.64.9.9/32" in r.view().match.sources for r in blocked)
    finally:
        await svc.stop()
        engine.dispose()
