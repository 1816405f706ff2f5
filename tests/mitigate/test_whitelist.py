"""Prefix arithmetic: a candidate covering whitelisted space is split around it or dropped."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from voxguard.mitigate.whitelist import Whitelist, WhitelistEntry, subtract


def n(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


WL = Whitelist(
    [
        WhitelistEntry(n("192.0.2.192/27"), "sip_trunks", "carrier"),
        WhitelistEntry(n("203.0.113.0/28"), "sbc_sources", "SBC"),
        WhitelistEntry(n("2001:db8:5::/48"), "registered_endpoints", "v6 customers"),
    ]
)


def test_disjoint_source_is_untouched() -> None:
    out = WL.apply(n("198.18.7.0/24"))
    assert out.kept == [n("198.18.7.0/24")] and out.reason() is None


def test_source_inside_a_whitelisted_prefix_is_dropped_with_the_entry_named() -> None:
    out = WL.apply(n("192.0.2.200/32"))
    assert out.dropped
    assert "sip_trunks 192.0.2.192/27 (carrier)" in (out.reason() or "")


def test_source_covering_a_whitelisted_prefix_is_split_around_it() -> None:
    out = WL.apply(n("192.0.2.0/24"))
    assert out.kept == [n("192.0.2.0/25"), n("192.0.2.128/26"), n("192.0.2.224/27")]
    assert (out.reason() or "").startswith("split around whitelist sip_trunks")
    for piece in out.kept:
        assert not piece.overlaps(n("192.0.2.192/27"))


def test_ipv6_split() -> None:
    out = WL.apply(n("2001:db8:4::/46"))
    assert n("2001:db8:5::/48") not in out.kept
    assert all(not p.overlaps(n("2001:db8:5::/48")) for p in out.kept)
    assert sum(p.num_addresses for p in out.kept) == n("2001:db8:4::/46").num_addresses - 2**80


def test_for_version_drops_nested_entries() -> None:
    wl = Whitelist([WhitelistEntry(n("10.0.0.0/8"), "static", "a"), WhitelistEntry(n("10.1.0.0/16"), "static", "b")])
    assert [e.prefix for e in wl.for_version(4)] == [n("10.0.0.0/8")]


@given(
    base=st.integers(0, 2**24 - 1),
    plen=st.integers(20, 28),
    holes=st.lists(st.tuples(st.integers(0, 4095), st.integers(18, 32)), max_size=6),
)
def test_subtract_keeps_exactly_the_non_whitelisted_addresses(
    base: int, plen: int, holes: list[tuple[int, int]]
) -> None:
    source = ipaddress.ip_network((base << 8, plen), strict=False)
    hole_nets = [ipaddress.ip_network((int(source.network_address) + h, hl), strict=False) for h, hl in holes]
    pieces = subtract(source, hole_nets)
    for p in pieces:
        assert p.subnet_of(source)  # type: ignore[arg-type]
        assert not any(p.overlaps(h) for h in hole_nets)
    covered = {int(a) for p in pieces for a in p}
    expected = {int(a) for a in source if not any(a in h for h in hole_nets)}
    assert covered == expected
