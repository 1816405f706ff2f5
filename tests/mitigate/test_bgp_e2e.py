"""End to end with real BGP on loopback: incident event -> mitigate -> ExaBGP -> gobgpd's RIB."""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from mitigate_helpers import example_config, incident
from mitigate_lab import GoBGP, wait_for

from voxguard.mitigate.engine import ManualRule, MitigateService
from voxguard.mitigate.settings import BgpSettings
from voxguard.shared.bus import STREAM_EVENTS, Bus, Delivery
from voxguard.shared.db import make_engine
from voxguard.shared.messages import MitigationEvent

pytestmark = pytest.mark.slow


@pytest.fixture
def gobgp_lab(tmp_path: Path, need_tool: Callable[[str], Path]) -> Iterator[GoBGP]:
    """A running gobgpd (skips, or fails under CI=true, when gobgpd/gobgp are missing).

    Defined here, not in a tests/mitigate/conftest.py: other suites ``from conftest import ...``,
    and a second per-directory conftest module would shadow theirs.
    """
    lab = GoBGP(tmp_path / "gobgp", need_tool("gobgpd"), need_tool("gobgp"))
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()


CFG = example_config()
ATTACK = ["198.19.1.0/24", "198.19.2.0/24", "192.0.2.192/27", "198.19.3.0/24"]


@contextlib.asynccontextmanager
async def running(tmp_path: Path, bus: Bus, bgp: BgpSettings, name: str = "svc") -> AsyncIterator[MitigateService]:
    engine = make_engine(f"sqlite:///{tmp_path / name}.db")
    svc = MitigateService(CFG, bus, engine, tmp_path / name, bgp=bgp)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()
        engine.dispose()


async def collect_events(bus: Bus, into: list[MitigationEvent]) -> None:
    async def handler(ev: MitigationEvent, _d: Delivery) -> None:
        into.append(ev)

    await bus.subscribe_durable(
        STREAM_EVENTS, "test-mitigation-events", "voxguard.mitigation.v1.>", MitigationEvent, handler
    )


def sources_in(rib: dict[str, str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = []
    for nlri in rib:
        m = re.search(r"\[source: ([^\]/]+/\d+)", nlri)
        if m:
            out.append(ipaddress.ip_network(m.group(1)))
    return out


async def test_incident_to_rib_whitelist_respected_and_withdrawn_on_resolution(
    tmp_path: Path, bus: Bus, gobgp_lab: GoBGP
) -> None:
    events: list[MitigationEvent] = []
    await collect_events(bus, events)
    async with running(tmp_path, bus, gobgp_lab.bgp()) as svc:
        await wait_for(gobgp_lab.established, 20)
        ev = incident(CFG, top_prefixes=ATTACK)
        await bus.publish(ev.subject(), ev)

        expected = {
            f"[destination: 203.0.113.10/32][source: {p}][protocol: ==udp][destination-port: ==5060]"
            for p in ("198.19.1.0/24", "198.19.2.0/24", "198.19.3.0/24")
        }
        await wait_for(lambda: set(gobgp_lab.rib()) == expected, 10)
        assert all("discard" in attrs for attrs in gobgp_lab.rib().values())
        for src in sources_in(gobgp_lab.rib()):
            assert not src.overlaps(ipaddress.ip_network("192.0.2.192/27")), src

        rows = svc.store.list_rules(incident_id=ev.incident.id)
        states = sorted(r.state for r in rows)
        assert states == ["announced", "announced", "announced", "rejected"]
        rejected = next(r for r in rows if r.state == "rejected")
        assert "192.0.2.192/27 (SIP trunk provider" in (rejected.reason or "")

        resolved = incident(CFG, incident_id=ev.incident.id, event="resolved", top_prefixes=ATTACK)
        await bus.publish(resolved.subject(), resolved)
        await wait_for(lambda: gobgp_lab.rib() == {}, 10)
        await wait_for(lambda: all(r.state in ("withdrawn", "rejected") for r in svc.store.list_rules()), 5)

    await wait_for(lambda: {e.event for e in events} >= {"proposed", "announced", "withdrawn", "rejected"}, 10)
    rej = next(e for e in events if e.event == "rejected")
    assert rej.mitigation.reason and "192.0.2.192/27" in rej.mitigation.reason
    assert all(e.subject() == "voxguard.mitigation.v1.sbc" for e in events)


async def test_exabgp_killed_mid_incident_rules_come_back(tmp_path: Path, bus: Bus, gobgp_lab: GoBGP) -> None:
    async with running(tmp_path, bus, gobgp_lab.bgp()) as svc:
        await wait_for(gobgp_lab.established, 20)
        ev = incident(CFG, top_prefixes=ATTACK[:2])
        await bus.publish(ev.subject(), ev)
        await wait_for(lambda: len(gobgp_lab.rib()) == 2, 10)
        before = set(gobgp_lab.rib())
        old_pid = svc.exabgp.proc.pid if svc.exabgp.proc else None

        svc.exabgp.kill()
        await wait_for(lambda: gobgp_lab.rib() == {}, 15)  # session gone: gobgpd dropped the routes
        await wait_for(lambda: svc.exabgp.proc is not None and svc.exabgp.proc.pid != old_pid, 15)
        await wait_for(lambda: set(gobgp_lab.rib()) == before, 30)
        assert svc.exabgp.restarts == 1


async def test_service_restart_reannounces_from_the_database(tmp_path: Path, bus: Bus, gobgp_lab: GoBGP) -> None:
    ev = incident(CFG, top_prefixes=ATTACK[:1])
    async with running(tmp_path, bus, gobgp_lab.bgp()):
        await wait_for(gobgp_lab.established, 20)
        await bus.publish(ev.subject(), ev)
        await wait_for(lambda: len(gobgp_lab.rib()) == 1, 10)
    await wait_for(lambda: gobgp_lab.rib() == {}, 15)  # ExaBGP stopped with the service
    async with running(tmp_path, bus, gobgp_lab.bgp()):
        await wait_for(lambda: len(gobgp_lab.rib()) == 1, 30)


async def test_rtp_flood_accept_guards_ipv6_and_same_destination_rules(
    tmp_path: Path, bus: Bus, gobgp_lab: GoBGP
) -> None:
    bgp = gobgp_lab.bgp(whitelists={"sbc_sources": ["203.0.113.0/28"], "registered_endpoints": ["2001:db8:5::/48"]})
    async with running(tmp_path, bus, bgp) as svc:
        await wait_for(gobgp_lab.established, 20)
        ev = incident(
            CFG,
            tier="media",
            component="media-gw-eu",
            label="udp/10000-20000",
            vectors=("rtp_flood",),
            top_sources=["198.19.9.1", "198.19.9.2"],
        )
        await svc.on_incident(ev)
        dest = "[destination: 198.51.100.0/28]"
        rng = "[protocol: ==udp][destination-port: >=10000&<=20000]"
        want = {
            f"{dest}[source: 198.19.9.1/32]{rng}": "discard",
            f"{dest}[source: 198.19.9.2/32]{rng}": "discard",
            f"{dest}[source: 203.0.113.0/28]{rng}": None,  # accept: no traffic action
            f"{dest}[source: 192.0.2.192/27]{rng}": None,
            f"{dest}{rng}": "rate: 10000000",
        }
        await wait_for(lambda: set(gobgp_lab.rib()) == set(want), 10)
        rib = gobgp_lab.rib()
        for nlri, action in want.items():
            if action is None:
                assert "Extcomms" not in rib[nlri], rib[nlri]
            else:
                assert action in rib[nlri], rib[nlri]

        manual = ManualRule(
            destination="2001:db8::10/128",
            sources=["2001:db8:1::/48", "2001:db8:5:8000::/49"],
            protocol="udp",
            destination_ports="5060",
            action="discard",
            rate_bps=None,
            tier=None,
            ttl_seconds=None,
            why="v6 test",
        )
        with pytest.raises(Exception, match="registered_endpoints"):
            await svc.create_manual(manual, "tester")  # inside a whitelisted /48
        manual.sources = ["2001:db8:1::/48", "2001:db8:2::/48"]
        row = await svc.create_manual(manual, "tester")
        v6 = {
            "[destination: 2001:db8::10/128/0][source: 2001:db8:1::/48/0][protocol: ==udp][destination-port: ==5060]",
            "[destination: 2001:db8::10/128/0][source: 2001:db8:2::/48/0][protocol: ==udp][destination-port: ==5060]",
        }
        await wait_for(lambda: set(gobgp_lab.rib("ipv6-flowspec")) == v6, 10)
        await svc.withdraw(row.id, "tester", "done")
        await wait_for(lambda: gobgp_lab.rib("ipv6-flowspec") == {}, 10)
        assert len(gobgp_lab.rib()) == 5  # the IPv4 rules are untouched


async def test_dry_run_without_peer_never_starts_exabgp(tmp_path: Path, bus: Bus) -> None:
    from voxguard.mitigate.settings import parse_bgp

    async with running(tmp_path, bus, parse_bgp({})) as svc:
        assert svc.dry_run and svc.exabgp.proc is None
        ev = incident(CFG, top_prefixes=ATTACK[:1])
        await svc.on_incident(ev)
        row = svc.store.list_rules()[0]
        assert row.state == "proposed" and row.dry_run and "dry-run" in (row.reason or "")
        assert row.command.startswith("announce flow route { match { destination 203.0.113.10/32;")
        res = await svc.reconciler.run_once()
        assert res.desired == 0


async def test_bgp_session_restart_rules_come_back(tmp_path: Path, bus: Bus, gobgp_lab: GoBGP) -> None:
    async with running(tmp_path, bus, gobgp_lab.bgp()):
        await wait_for(gobgp_lab.established, 20)
        ev = incident(CFG, top_prefixes=ATTACK[:2])
        await bus.publish(ev.subject(), ev)
        await wait_for(lambda: len(gobgp_lab.rib()) == 2, 10)
        before = set(gobgp_lab.rib())
        old = gobgp_lab.proc.pid if gobgp_lab.proc else None
        gobgp_lab.stop()  # the upstream router restarts: a new session, an empty RIB
        gobgp_lab.start()
        assert gobgp_lab.proc is not None and gobgp_lab.proc.pid != old
        await wait_for(lambda: set(gobgp_lab.rib()) == before, 60)


async def test_relative_var_dir_as_voxguard_up_uses(
    tmp_path: Path, bus: Bus, gobgp_lab: GoBGP, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``./var`` (the default VOXGUARD_VAR_DIR) must work although ExaBGP runs in another cwd."""
    monkeypatch.chdir(tmp_path)
    engine = make_engine(f"sqlite:///{tmp_path / 'rel.db'}")
    svc = MitigateService(CFG, bus, engine, Path("var"), bgp=gobgp_lab.bgp())
    await svc.start()
    try:
        await wait_for(gobgp_lab.established, 20)
        await svc.on_incident(incident(CFG, top_prefixes=ATTACK[:1]))
        await wait_for(lambda: len(gobgp_lab.rib()) == 1, 10)
    finally:
        await svc.stop()
        engine.dispose()
