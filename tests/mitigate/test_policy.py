"""Runbooks and rails: incident -> candidate rules, per the tier policy, whitelist enforced."""

from __future__ import annotations

import ipaddress

from mitigate_helpers import example_config, incident

from voxguard.mitigate.policy import Candidate, enforce, plan_incident
from voxguard.mitigate.settings import BgpSettings, parse_bgp
from voxguard.mitigate.whitelist import Whitelist, WhitelistEntry
from voxguard.shared.config import MitigationSettings

CFG = example_config()
BGP = parse_bgp({"whitelists": {"registered_endpoints": ["198.18.5.0/26"]}})
WL = Whitelist(
    [
        WhitelistEntry(ipaddress.ip_network("192.0.2.192/27"), "sip_trunks", "carrier"),
        WhitelistEntry(ipaddress.ip_network("203.0.113.0/28"), "sbc_sources", "SBC"),
        WhitelistEntry(ipaddress.ip_network("198.18.5.0/26"), "registered_endpoints", "customers"),
    ]
)
ATTACK = [f"198.19.{i}.0/24" for i in range(1, 9)]


def planned(ev_kwargs: dict[str, object], bgp: BgpSettings = BGP) -> list[Candidate]:
    ev = incident(CFG, **ev_kwargs)
    plan = plan_incident(ev.incident, CFG, bgp)
    assert plan.skipped is None, plan.skipped
    return enforce(plan.candidates, WL, CFG.tiers[ev.tier].mitigation, bgp)


def test_sip_flood_blocks_the_top_five_24s_to_the_sbc_port() -> None:
    out = planned({"top_prefixes": ATTACK})
    live = [c for c in out if c.state == "proposed"]
    assert [str(c.sources[0]) for c in live] == ATTACK[:5]
    for c in live:
        assert c.action == "discard" and str(c.destination) == "203.0.113.10/32"
        assert c.protocol == "udp" and c.ports == (5060, 5060)


def test_sip_flood_preserves_registered_endpoint_subnets_by_splitting() -> None:
    out = planned({"top_prefixes": ["198.18.5.0/24", *ATTACK[:2]]})
    first = out[0]
    assert first.state == "proposed"
    assert ipaddress.ip_network("198.18.5.0/26") not in first.sources
    assert all(not s.overlaps(ipaddress.ip_network("198.18.5.0/26")) for s in first.sources)
    assert "registered_endpoints" in (first.reason or "")


def test_whitelisted_source_is_dropped_and_the_entry_recorded() -> None:
    out = planned({"top_prefixes": ["192.0.2.192/27", ATTACK[0]]})
    assert out[0].state == "rejected" and "sip_trunks 192.0.2.192/27" in (out[0].reason or "")
    assert out[1].state == "proposed"


def test_short_source_prefix_is_rejected_by_the_rail() -> None:
    out = planned({"top_prefixes": ["0.0.0.0/0", "198.0.0.0/8", ATTACK[0]]})
    assert out[0].state == "rejected" and "every address" in (out[0].reason or "")
    assert out[1].state == "rejected" and "min_prefix_length" in (out[1].reason or "")
    assert out[2].state == "proposed"


def test_rtp_flood_blocks_sources_and_rate_limits_the_range_behind_accept_guards() -> None:
    out = planned(
        {
            "tier": "media",
            "component": "media-gw-eu",
            "label": "udp/10000-20000",
            "vectors": ("rtp_flood",),
            "top_sources": ["198.18.9.1", "198.18.9.2"],
        }
    )
    discards = [c for c in out if c.action == "discard"]
    accepts = [c for c in out if c.action == "accept"]
    limits = [c for c in out if c.action == "rate_limit"]
    assert [str(c.sources[0]) for c in discards] == ["198.18.9.1/32", "198.18.9.2/32"]
    assert len(limits) == 1 and limits[0].sources == [] and limits[0].rate_bps == 10_000_000
    assert limits[0].ports == (10000, 20000) and str(limits[0].destination) == "198.51.100.0/28"
    assert {str(c.sources[0]) for c in accepts} == {"192.0.2.192/27", "203.0.113.0/28", "198.18.5.0/26"}
    assert all(c.group == limits[0].group for c in accepts)
    # guards come before the rule they guard (announce order)
    assert out.index(accepts[0]) < out.index(limits[0])


def test_any_source_rule_rejected_when_too_many_accept_guards_needed() -> None:
    bgp = parse_bgp({"max_accept_rules": 2})
    out = planned(
        {"tier": "media", "component": "media-gw-eu", "label": "udp/10000-20000", "vectors": ("rtp_flood",)}, bgp
    )
    limit = next(c for c in out if c.action == "rate_limit")
    assert limit.state == "rejected" and "max_accept_rules" in (limit.reason or "")


def test_tdos_rate_limits_top_networks() -> None:
    out = planned({"vectors": ("tdos",), "top_prefixes": ATTACK[:3]})
    assert [c.action for c in out] == ["rate_limit"] * 3
    assert all(c.rate_bps == BGP.default_rate_limit_bps for c in out)


def test_per_host_incident_targets_the_host() -> None:
    out = planned(
        {
            "tier": "api",
            "component": "api-gw",
            "label": "tcp/443",
            "vectors": ("api_flood",),
            "host": "192.0.2.81",
            "top_prefixes": ATTACK[:1],
        }
    )
    assert str(out[0].destination) == "192.0.2.81/32" and out[0].action == "rate_limit"
    assert out[0].rate_bps == 50_000_000 and out[0].protocol == "tcp" and out[0].ports == (443, 443)


def test_alert_only_and_learning_never_mitigate() -> None:
    reg = incident(CFG, tier="registrar", component="registrar-core", label="udp/5060", vectors=("register_storm",))
    assert "alert-only" in (plan_incident(reg.incident, CFG, BGP).skipped or "")
    learning = incident(CFG, top_prefixes=ATTACK, learning=True)
    assert "learning" in (plan_incident(learning.incident, CFG, BGP).skipped or "")


def test_max_rules_per_incident_and_approval() -> None:
    ev = incident(CFG, top_prefixes=ATTACK)
    plan = plan_incident(ev.incident, CFG, BGP, budget=8)
    policy = MitigationSettings(mode="flowspec", max_rules_per_incident=3, approval_required=True)
    out = enforce(plan.candidates, WL, policy, BGP)
    assert [c.state for c in out] == ["pending_approval"] * 3 + ["rejected"] * 5
    assert "max_rules_per_incident" in (out[-1].reason or "")


def test_geoip_is_optional() -> None:
    """GeoIP configured but unusable (no maxminddb package or no database): the runbook still runs."""
    bgp = parse_bgp({"geoip": {"database": "/nonexistent.mmdb", "rate_limit_countries": ["XX"]}})
    out = planned({"vectors": ("tdos",), "top_prefixes": ATTACK[:2], "top_sources": ["198.19.1.7"]}, bgp)
    assert [str(c.sources[0]) for c in out] == ATTACK[:2]
