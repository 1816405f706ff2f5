"""ExaBGP command text for IPv4/IPv6 flow routes, and refusal of malformed rules."""

from __future__ import annotations

import ipaddress

import pytest

from voxguard.mitigate.flowspec import FlowRoute, RuleError, parse_ports, parse_prefix


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def test_ipv4_discard_with_source_port_and_protocol() -> None:
    r = FlowRoute(net("198.51.100.10/32"), net("203.0.113.0/24"), "udp", (5060, 5060), "discard")
    assert r.announce() == (
        "announce flow route { match { destination 198.51.100.10/32; source 203.0.113.0/24; protocol udp; "
        "destination-port =5060; } then { discard; } }"
    )
    assert r.withdraw().startswith("withdraw flow route { match { destination 198.51.100.10/32;")


def test_ipv4_rate_limit_over_a_port_range_without_source() -> None:
    r = FlowRoute(net("198.51.100.0/28"), None, "udp", (10000, 20000), "rate_limit", 125000)
    assert "source" not in r.key
    assert "destination-port >=10000&<=20000;" in r.key
    assert r.announce().endswith("then { rate-limit 125000; } }")


def test_ipv6_uses_offsets_and_next_header() -> None:
    r = FlowRoute(net("2001:db8::1/128"), net("2001:db8:1::/48"), "udp", (5060, 5060), "discard")
    assert "destination 2001:db8::1/128/0; source 2001:db8:1::/48/0; next-header udp;" in r.key
    icmp6 = FlowRoute(net("2001:db8::1/128"), None, "icmp", None, "discard")
    assert "next-header =58;" in icmp6.key
    icmp4 = FlowRoute(net("198.51.100.1/32"), None, "icmp", None, "discard")
    assert "protocol =icmp;" in icmp4.key


def test_accept_has_no_action_community() -> None:
    r = FlowRoute(net("198.51.100.0/28"), net("203.0.113.0/28"), "udp", (10000, 20000), "accept")
    assert r.announce().endswith("then { accept; } }")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("10000-2000", "inverted"), ("70000", "outside"), ("http", "not a port"), ("5060-", "not a port")],
)
def test_bad_ports_are_refused(text: str, fragment: str) -> None:
    with pytest.raises(RuleError, match=fragment):
        parse_ports(text)


def test_ports_parse() -> None:
    assert parse_ports("5060") == (5060, 5060)
    assert parse_ports("10000-20000") == (10000, 20000)
    assert parse_ports(None) is None


@pytest.mark.parametrize("text", ["203.0.113.5/24", "300.1.1.0/24", "banana", "203.0.113.0/33", ""])
def test_malformed_prefixes_are_refused(text: str) -> None:
    with pytest.raises(RuleError, match="not a valid IP prefix"):
        parse_prefix(text, "sources[0]")


def test_mixed_families_and_ports_without_transport_are_refused() -> None:
    with pytest.raises(RuleError, match="different IP versions"):
        FlowRoute(net("198.51.100.1/32"), net("2001:db8::/48"), "udp", None, "discard")
    with pytest.raises(RuleError, match="ports need protocol"):
        FlowRoute(net("198.51.100.1/32"), None, "icmp", (1, 2), "discard")
    with pytest.raises(RuleError, match="rate_bps"):
        FlowRoute(net("198.51.100.1/32"), None, "udp", None, "rate_limit", None)
