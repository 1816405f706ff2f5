"""The ``bgp:`` section: dry-run by default, invalid input refused with the key and the reason."""

from __future__ import annotations

import pytest

from voxguard.mitigate.exabgp import render_config
from voxguard.mitigate.settings import parse_bgp
from voxguard.shared.config import ConfigError


def test_no_peer_means_dry_run() -> None:
    assert parse_bgp({}).is_dry_run
    assert not parse_bgp({"peers": [{"address": "192.0.2.2", "asn": 65001}]}).is_dry_run
    assert parse_bgp({"peers": [{"address": "192.0.2.2", "asn": 65001}], "dry_run": True}).is_dry_run


@pytest.mark.parametrize(
    ("data", "key", "fragment"),
    [
        ({"peers": [{"address": "nope", "asn": 65001}]}, "bgp.peers.0.address", "IP"),
        ({"whitelists": {"sip_trunks": ["192.0.2.1/24"]}}, "bgp.whitelists", "not a prefix"),
        ({"whitelists": {"friends": ["192.0.2.0/24"]}}, "bgp.whitelists.friends", "Input should be"),
        ({"max_total_rules": 0}, "bgp.max_total_rules", "greater than or equal"),
        ({"bogus": 1}, "bgp.bogus", "Extra inputs"),
    ],
)
def test_invalid_bgp_section_names_the_key(data: dict[str, object], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_bgp(data)
    assert any(k.startswith(key) and fragment in reason for k, reason in err.value.errors), err.value.errors


def test_exabgp_config_has_one_neighbor_per_peer_and_the_bridge() -> None:
    bgp = parse_bgp(
        {"peers": [{"address": "192.0.2.2", "asn": 65001, "port": 1790}, {"address": "2001:db8::2", "asn": 65002}]}
    )
    text = render_config(bgp, "/usr/bin/python3 -m voxguard.mitigate.bridge --socket /s")
    assert "run /usr/bin/python3 -m voxguard.mitigate.bridge --socket /s;" in text
    assert "neighbor 192.0.2.2 {" in text and "connect 1790;" in text and "peer-as 65002;" in text
    assert text.count("family { ipv4 flow; ipv6 flow; }") == 2
