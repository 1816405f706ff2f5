"""TDoS geographic filtering against a real MaxMind-format database (written here with mmdb-writer)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mitigate_helpers import example_config, incident
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from voxguard.mitigate.policy import geoip_networks, plan_incident
from voxguard.mitigate.settings import parse_bgp

CFG = example_config()


@pytest.fixture
def geo_db(tmp_path: Path) -> Path:
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-Country")
    w.insert_network(IPSet(["198.51.77.0/24"]), {"country": {"iso_code": "XX"}})
    w.insert_network(IPSet(["100.64.0.0/16"]), {"country": {"iso_code": "FR"}})
    path = tmp_path / "country.mmdb"
    w.to_db_file(str(path))
    return path


def test_tdos_rate_limits_sources_from_the_configured_countries(geo_db: Path) -> None:
    bgp = parse_bgp({"geoip": {"database": str(geo_db), "rate_limit_countries": ["xx"]}})
    ev = incident(CFG, vectors=("tdos",), top_sources=["100.64.3.3", "198.51.77.5", "198.51.77.9"],
                  top_prefixes=["100.64.3.0/24", "198.51.77.0/24"])  # fmt: skip
    assert [str(n) for n in geoip_networks(ev.incident, bgp)] == ["198.51.77.0/24"]
    plan = plan_incident(ev.incident, CFG, bgp)
    geo = [c for c in plan.candidates if any(str(s) == "198.51.77.0/24" for s in c.sources)]
    assert geo and all(c.action == "rate_limit" for c in geo)
    assert not any(str(s) == "100.64.0.0/16" for c in plan.candidates for s in c.sources)


def test_geoip_is_skipped_without_countries_or_with_a_bad_database(tmp_path: Path, geo_db: Path) -> None:
    ev = incident(CFG, vectors=("tdos",), top_sources=["198.51.77.5"])
    assert geoip_networks(ev.incident, parse_bgp({"geoip": {"database": str(geo_db)}})) == []
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(b"not a database")
    broken = parse_bgp({"geoip": {"database": str(bad), "rate_limit_countries": ["XX"]}})
    assert geoip_networks(ev.incident, broken) == []  # a broken database is a warning, not a crash


def test_a_wide_country_block_gives_rules_the_rails_accept(geo_db: Path) -> None:
    """Rate-limiting FR: the database's block is a /16, wider than the rails' /24 minimum, so each
    top source's own /24 is limited (a /16 rule would be refused and nothing would happen)."""
    bgp = parse_bgp({"geoip": {"database": str(geo_db), "rate_limit_countries": ["FR"]}})
    ev = incident(CFG, vectors=("tdos",), top_sources=["100.64.3.3", "100.64.9.1", "198.51.77.5"],
                  top_prefixes=["198.51.77.0/24"])  # fmt: skip
    assert [str(n) for n in geoip_networks(ev.incident, bgp)] == ["100.64.3.0/24", "100.64.9.0/24"]
    assert [str(n) for n in geoip_networks(ev.incident, bgp, (16, 48))] == ["100.64.0.0/16"]
    plan = plan_incident(ev.incident, CFG, bgp)
    srcs = {str(s) for c in plan.candidates for s in c.sources}
    assert {"100.64.3.0/24", "100.64.9.0/24"} <= srcs and "100.64.0.0/16" not in srcs
