"""Known-answer tests of each detector on hand-built frames: it fires on the attack's shape and
stays quiet on the nearest legitimate look-alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from voxguard.baseline import detectors as det
from voxguard.baseline.profile import M_INDEX, NM
from voxguard.shared.config import example_config_path, load_config

CONFIG = load_config(example_config_path())
TH = det.Thresholds.from_config(CONFIG)


def _vec(values: Mapping[str, float], fill: float = 0.0) -> np.ndarray:
    v = np.full(NM, fill, np.float32)
    for k, x in values.items():
        v[M_INDEX[k]] = x
    return v


def frame(rows: list[dict[str, Any]], *, sessions: list[float] | None = None,
          per_session: list[float] | None = None) -> det.Frame:  # fmt: skip
    """Rows: tier, role, region, expected {metric: rate}, observed {metric: rate} held steady over
    the whole hold window (or ``window`` for a different window mean)."""
    n = len(rows)
    last = np.stack([_vec(r["observed"]) for r in rows])
    win = np.stack([_vec(r.get("window", r["observed"])) for r in rows])
    exp = np.stack([_vec(r["expected"]) for r in rows])
    return det.Frame(
        dt=1.0,
        last=last,
        windows={h: win for h in range(1, 5)},
        expected=exp,
        spread=np.full((n, NM), 0.1, np.float32),
        tier=np.array([det.TIERS.index(r["tier"]) for r in rows]),
        role=np.array([det.ROLES.index(r["role"]) for r in rows]),
        region=np.array([r.get("region", 1) for r in rows]),
        aggregate=np.array([r.get("aggregate", True) for r in rows]),
        live=np.ones(n, bool),
        sessions=np.array(sessions if sessions is not None else [np.nan] * n, dtype=np.float64),
        per_session=np.array(per_session if per_session is not None else [np.nan] * n, dtype=np.float64),
        th=TH,
    )


SBC_SIG: dict[str, float] = {"packets": 100, "bytes": 60_000, "flows": 50, "distinct_sources": 50, "sip_invite": 10,
           "sip_register": 60, "odd_size_packets": 1}  # fmt: skip
MEDIA: dict[str, float] = {"packets": 50_000, "bytes": 10_000_000, "flows": 8, "distinct_sources": 500}
REGISTRAR: dict[str, float] = {
    "packets": 140,
    "bytes": 100_000,
    "sip_invite": 10,
    "sip_register": 100,
    "distinct_sources": 2,
}


def scaled(base: Mapping[str, float], **mult: float) -> dict[str, float]:
    return {k: v * mult.get(k, 1.0) for k, v in base.items()}


def hot(fr: det.Frame, vector: str) -> list[bool]:
    return [bool(x) for x in det.DETECTORS[vector](fr).hot]


def test_sip_flood_fires_above_5x_only() -> None:
    fr = frame([
        {"tier": "sbc", "role": "signalling", "expected": SBC_SIG, "observed": scaled(SBC_SIG, packets=6)},
        {"tier": "sbc", "role": "signalling", "expected": SBC_SIG, "observed": scaled(SBC_SIG, packets=4)},
        {"tier": "sbc", "role": "signalling", "expected": SBC_SIG, "observed": scaled(SBC_SIG, flows=7)},
        {"tier": "media", "role": "media", "expected": SBC_SIG, "observed": scaled(SBC_SIG, packets=9)},
    ])  # fmt: skip
    assert hot(fr, "sip_flood") == [True, False, True, False]
    r = det.sip_flood(fr)
    assert r.ratio[0] == pytest.approx(6.0)
    assert r.observed[0] == pytest.approx(600.0)
    assert r.baseline[0] == pytest.approx(100.0)


def test_spike_that_already_ended_does_not_open() -> None:
    big = scaled(SBC_SIG, packets=10)
    fr = frame([{"tier": "sbc", "role": "signalling", "expected": SBC_SIG, "observed": SBC_SIG, "window": big}])
    assert hot(fr, "sip_flood") == [False]


def test_malformed_sip_needs_odd_sizes_or_parse_failures() -> None:
    odd = scaled(SBC_SIG, packets=3) | {"odd_size_packets": 150}
    bad = SBC_SIG | {"sip_malformed_packets": 30}
    normal_sizes = scaled(SBC_SIG, packets=3)
    fr = frame([
        {"tier": "sbc", "role": "signalling", "expected": SBC_SIG, "observed": odd},
        {"tier": "sbc", "role": "signalling", "expected": SBC_SIG, "observed": bad},
        {"tier": "sbc", "role": "signalling", "expected": SBC_SIG, "observed": normal_sizes},
    ])  # fmt: skip
    assert hot(fr, "malformed_sip") == [True, True, False]


def test_tls_exhaustion_needs_few_bytes_per_connection() -> None:
    base = {"packets": 160, "bytes": 15_000, "new_connections": 1.0, "flows": 1.0}
    handshakes = base | {"new_connections": 6.0, "bytes": 16_000}  # 2.7 kB/conn instead of 15 kB
    real_logins = base | {"new_connections": 6.0, "bytes": 90_000}  # same bytes per connection
    fr = frame([
        {"tier": "sbc", "role": "tls", "expected": base, "observed": handshakes},
        {"tier": "sbc", "role": "tls", "expected": base, "observed": real_logins},
    ])  # fmt: skip
    assert hot(fr, "tls_exhaustion") == [True, False]


def test_icmp_flood_respects_ratio_and_min_rate() -> None:
    base = {"packets": 40, "icmp_packets": 40}
    fr = frame([
        {"tier": "sbc", "role": "icmp", "expected": base, "observed": {"packets": 1000, "icmp_packets": 1000}},
        {"tier": "sbc", "role": "icmp", "expected": base, "observed": {"packets": 450, "icmp_packets": 450}},
        {"tier": "sbc", "role": "icmp", "expected": {"icmp_packets": 10}, "observed": {"icmp_packets": 400}},
    ])  # fmt: skip
    # 25x, above 500/s; 11x but under the example config's min_rate 500; 40x but under 500
    assert hot(fr, "icmp_flood") == [True, False, False]


def test_register_storm_on_register_rate() -> None:
    storm = REGISTRAR | {"sip_register": 600, "packets": 640}
    invites = REGISTRAR | {"sip_invite": 500, "packets": 640}
    fr = frame([
        {"tier": "registrar", "role": "signalling", "expected": REGISTRAR, "observed": storm},
        {"tier": "registrar", "role": "signalling", "expected": REGISTRAR, "observed": invites},
    ])  # fmt: skip
    assert hot(fr, "register_storm") == [True, False]
    assert hot(fr, "call_routing_exhaustion") == [False, True]


def test_sbc_not_filtering_needs_external_sip_elevated() -> None:
    spike = scaled(REGISTRAR, packets=5)
    rows = [
        {"tier": "registrar", "role": "signalling", "expected": REGISTRAR, "observed": spike, "region": 1},
        {"tier": "sbc", "role": "signalling", "expected": SBC_SIG, "observed": scaled(SBC_SIG, packets=5), "region": 1},
        {"tier": "registrar", "role": "signalling", "expected": REGISTRAR, "observed": spike, "region": 2},
        {"tier": "sbc", "role": "signalling", "expected": SBC_SIG, "observed": SBC_SIG, "region": 2},
    ]  # fmt: skip
    assert hot(frame(rows), "sbc_not_filtering") == [True, False, False, False]


def test_rtp_flood_and_codec_exhaustion_are_told_apart() -> None:
    flood = scaled(MEDIA, packets=4, bytes=4)
    big_codecs = {"packets": 60_000, "bytes": 30_000_000}  # bytes/packet 200 -> 500
    fr = frame([
        {"tier": "media", "role": "media", "expected": MEDIA, "observed": flood},
        {"tier": "media", "role": "media", "expected": MEDIA, "observed": big_codecs},
        {"tier": "media", "role": "media", "expected": MEDIA, "observed": scaled(MEDIA, packets=1.3, bytes=1.3)},
    ])  # fmt: skip
    assert hot(fr, "rtp_flood") == [True, False, False]
    assert hot(fr, "codec_exhaustion") == [False, True, False]


def test_rtp_flood_needs_a_flood_shape_or_twice_the_ratio() -> None:
    """More RTP with the usual packets per source and per flow is more calls (as at night, when a
    gateway with six streams gets twenty more): it must clear twice the ratio; spoofed sources
    (few packets each, a flow every few packets) or a few sources blasting are a flood at 3x."""
    night = {"packets": 300, "bytes": 60_000, "flows": 0.2, "distinct_sources": 6}
    calls = scaled(night, packets=4.5, bytes=4.5, distinct_sources=4.2, flows=3)
    spoofed = scaled(night, packets=4.5, bytes=12, distinct_sources=12, flows=300)
    blast = scaled(night, packets=4.5, bytes=4.5, distinct_sources=1.2)
    many_calls = scaled(night, packets=8, bytes=8, distinct_sources=8, flows=3)
    rows = [{"tier": "media", "role": "media", "expected": night, "observed": o, "aggregate": False}
            for o in (calls, spoofed, blast, many_calls)]  # fmt: skip
    assert hot(frame(rows), "rtp_flood") == [False, True, True, True]


def test_relay_traffic_shaped_like_calls_is_not_turn_abuse_at_the_ratio() -> None:
    """Without pushed session counts, a relay that carries twenty more calls at night is not
    abused at 4.5x; a pump from a few allocations (far more packets per source) is."""
    night = {"packets": 300, "bytes": 60_000, "flows": 0.2, "distinct_sources": 6}
    calls = scaled(night, packets=4.5, bytes=4.5, distinct_sources=4.2, flows=3)
    pump = scaled(night, packets=4.5, bytes=4.5, distinct_sources=1.0)
    rows = [{"tier": "turn", "role": "relay", "expected": night, "observed": o} for o in (calls, pump)]
    assert hot(frame(rows), "turn_abuse") == [False, True]


def test_codec_shift_needs_the_volume_of_many_streams() -> None:
    """Three night calls switching to a wideband codec shift a gateway's bytes per packet by half:
    no exhaustion. The same shift over the busy aggregate is."""
    small = {"packets": 150, "bytes": 30_000, "flows": 0.1, "distinct_sources": 3}
    rows = [
        {"tier": "media", "role": "media", "expected": small, "observed": scaled(small, bytes=1.6)},
        {"tier": "media", "role": "media", "expected": MEDIA, "observed": scaled(MEDIA, bytes=1.6)},
    ]
    assert hot(frame(rows), "codec_exhaustion") == [False, True]


def test_dispersion_widens_the_noise_of_clustered_counts() -> None:
    """INVITEs counted in pairs (or scaled up from 1:N sampling) scatter more than Poisson: the same
    burst is significant for independent events and noise for a count with dispersion 4."""
    base = {"packets": 20, "bytes": 16_000, "sip_invite": 2.0, "distinct_sources": 1}
    burst = base | {"sip_invite": 9.0, "packets": 40}
    rows = [{"tier": "registrar", "role": "signalling", "expected": base, "observed": burst}] * 2
    fr = frame(rows)
    fr.disp = np.ones((2, NM), np.float32)
    fr.disp[1, M_INDEX["sip_invite"]] = 4.0
    assert hot(fr, "call_routing_exhaustion") == [True, False]


def test_tls_exhaustion_judges_what_the_extra_connections_carry() -> None:
    """Twelve phones reconnecting together each send a handshake and a REGISTER (1.5 KB): not
    exhaustion, whatever the ratio; the same connections carrying a partial ClientHello are."""
    tls = {"packets": 100, "bytes": 10_000, "new_connections": 1.0, "flows": 1.0}
    fr = frame([
        {"tier": "sbc", "role": "tls", "expected": tls, "observed": tls | {"new_connections": 12, "bytes": 26_500}},
        {"tier": "sbc", "role": "tls", "expected": tls, "observed": tls | {"new_connections": 12, "bytes": 15_500}},
    ])  # fmt: skip
    assert hot(fr, "tls_exhaustion") == [False, True]


def test_turn_abuse_per_session_when_sessions_are_known() -> None:
    base = {"packets": 2000, "bytes": 400_000}
    more_calls = {"packets": 8000, "bytes": 1_600_000}
    rows = [{"tier": "turn", "role": "relay", "expected": base, "observed": more_calls}] * 2
    # 4x traffic from 4x sessions is not abuse; 5x per session is
    fr = frame(rows, sessions=[200, 40], per_session=[40.0, 40.0])
    assert hot(fr, "turn_abuse") == [False, True]
    assert det.turn_abuse(fr).ratio[1] == pytest.approx(5.0)
    # without session counts, relay traffic against its own baseline
    fr2 = frame([{"tier": "turn", "role": "relay", "expected": base, "observed": scaled(base, packets=6)}])
    assert hot(fr2, "turn_abuse") == [True]


def test_api_flood_and_websocket_exhaustion() -> None:
    rest = {"packets": 600, "bytes": 190_000, "new_connections": 30, "flows": 30, "long_lived_flows": 0.05}
    ws = {"packets": 580, "bytes": 84_000, "new_connections": 6, "flows": 6, "long_lived_flows": 7}
    fr = frame([
        {"tier": "api", "role": "api", "expected": rest, "observed": rest | {"new_connections": 200}},
        {"tier": "api", "role": "api", "expected": ws, "observed": ws | {"new_connections": 25}},
        {"tier": "api", "role": "api", "expected": ws, "observed": ws | {"long_lived_flows": 30}},
        {"tier": "api", "role": "api", "expected": rest, "observed": rest | {"new_connections": 60}},
    ])  # fmt: skip
    assert hot(fr, "api_flood") == [True, False, False, False]
    assert hot(fr, "websocket_exhaustion") == [False, True, True, False]


def test_tdos_versus_flash_crowd() -> None:
    media = {"tier": "media", "role": "media", "expected": MEDIA, "observed": MEDIA, "region": 1}
    media_up = media | {"observed": scaled(MEDIA, packets=3, bytes=3)}
    bots = scaled(SBC_SIG, flows=4, distinct_sources=20, packets=2)
    known = scaled(SBC_SIG, flows=4, distinct_sources=1.5, packets=2)
    sbc = {"tier": "sbc", "role": "signalling", "expected": SBC_SIG, "region": 1}
    # signalling up from a bot army with media flat: TDoS
    assert hot(frame([sbc | {"observed": bots}, media]), "tdos") == [True, False]
    # the same signalling growth with media growing too: a flash crowd, not TDoS
    assert hot(frame([sbc | {"observed": bots}, media_up]), "tdos") == [False, False]
    # signalling up from the usual sources: not TDoS either
    assert hot(frame([sbc | {"observed": known}, media]), "tdos") == [False, False]


def test_a_scanning_tool_is_a_sip_flood_not_tdos() -> None:
    """The same bot-army shape, but sampled SIP shows the scanner's User-Agent on most packets:
    a SIPVicious-style flood, not automated calls."""
    media = {"tier": "media", "role": "media", "expected": MEDIA, "observed": MEDIA, "region": 1}
    bots = scaled(SBC_SIG, flows=4, distinct_sources=20, packets=2)
    tool = bots | {"sip_scanner_packets": 150.0}
    sbc = {"tier": "sbc", "role": "signalling", "expected": SBC_SIG, "region": 1}
    assert hot(frame([sbc | {"observed": tool}, media]), "tdos") == [False, False]
    assert hot(frame([sbc | {"observed": bots}, media]), "tdos") == [True, False]


def test_noise_floor_keeps_tiny_baselines_quiet() -> None:
    tiny = {"packets": 0.2, "new_connections": 0.01}
    fr = frame([
        {"tier": "sbc", "role": "tls", "expected": tiny, "observed": {"packets": 2, "new_connections": 1}},
        {"tier": "api", "role": "api", "expected": tiny, "observed": {"packets": 2, "new_connections": 1}},
    ])  # fmt: skip
    assert not any(r.hot.any() for r in det.run_all(fr))


def test_unknown_baseline_never_fires() -> None:
    fr = frame([{"tier": "sbc", "role": "signalling", "expected": {}, "observed": scaled(SBC_SIG, packets=50)}])
    fr.expected[:] = np.nan
    assert not any(r.hot.any() for r in det.run_all(fr))


def test_outage_tier_never_fires() -> None:
    fr = frame([{"tier": "sbc", "role": "signalling", "expected": SBC_SIG, "observed": scaled(SBC_SIG, packets=50)}])
    fr.live[:] = False
    assert not any(r.hot.any() for r in det.run_all(fr))


def test_thresholds_from_config_with_catalogue_defaults() -> None:
    v = det.V_INDEX
    sbc, media, api = det.TIERS.index("sbc"), det.TIERS.index("media"), det.TIERS.index("api")
    assert TH.ratio[sbc, v["tls_exhaustion"]] == 4.0  # set in the example config
    assert TH.min_rate[sbc, v["icmp_flood"]] == 500.0
    assert TH.ratio[media, v["rtp_flood"]] == 3.0
    assert TH.ratio[sbc, v["sip_flood"]] == 5.0
    assert TH.ratio[api, v["websocket_exhaustion"]] == det.CATALOGUE["websocket_exhaustion"]["ratio"]
    assert TH.close[sbc, v["sip_flood"]] < TH.ratio[sbc, v["sip_flood"]]  # hysteresis
    only_floor = det.resolve_threshold(det.VectorThreshold(min_rate=10), "rtp_flood")
    assert only_floor.ratio == 3.0 and only_floor.min_rate == 10


def test_flash_crowd_demand_raises_the_bar_for_media_and_call_routing() -> None:
    calls_up = scaled(SBC_SIG, sip_invite=3, flows=1.5, packets=1.5)
    rows = [
        {"tier": "sbc", "role": "signalling", "expected": SBC_SIG, "observed": calls_up},
        {"tier": "media", "role": "media", "expected": MEDIA, "observed": scaled(MEDIA, packets=3.3, bytes=3.3)},
        {"tier": "registrar", "role": "signalling", "expected": REGISTRAR,
         "observed": scaled(REGISTRAR, sip_invite=4.5)},
    ]  # fmt: skip
    fired = {v: [bool(x) for x in r.hot] for v, _, r in det.run_by_tier(frame(rows))}
    # more answered calls from the usual sources: media and registrar INVITEs follow, no attack
    assert not fired["rtp_flood"][0] and not fired["call_routing_exhaustion"][0]
    # the same media surge without the calls behind it is an RTP flood
    rows[0]["observed"] = SBC_SIG
    fired = {v: [bool(x) for x in r.hot] for v, _, r in det.run_by_tier(frame(rows))}
    assert fired["rtp_flood"] == [True] and fired["call_routing_exhaustion"] == [True]
    # calls up from a bot army (sources x20) are not demand either
    rows[0]["observed"] = scaled(SBC_SIG, sip_invite=3, distinct_sources=20)
    fired = {v: [bool(x) for x in r.hot] for v, _, r in det.run_by_tier(frame(rows))}
    assert fired["rtp_flood"] == [True]
