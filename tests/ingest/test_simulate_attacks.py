"""The attack catalogue scenarios: each raises its catalogue metric on its target by its intensity,
with the physics of the real attack, and says what it did; plus the spec grammar."""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest

from voxguard.ingest.decode.flows import SipFlag, SipMethod, halves_to_addr
from voxguard.ingest.simulate.attacks import (
    SCENARIOS,
    AttackTruth,
    Scenario,
    add_attacks,
    describe_scenarios,
    parse_attack_spec,
    parse_attack_specs,
)
from voxguard.ingest.simulate.model import ModelParams, TargetTotals, Totals, TrafficModel
from voxguard.shared.config import VECTORS, VoxGuardConfig, example_config_path, load_config

T0 = 1_700_438_400 + 10 * 3600  # Monday 10:00 UTC (11:00 in eu-west)
PARAMS = ModelParams(scale=0.3)
START, DUR = 60, 300


@pytest.fixture(scope="module")
def config() -> VoxGuardConfig:
    return load_config(example_config_path())


def _play(config: VoxGuardConfig, spec: str, seed: int = 5) -> tuple[TrafficModel, AttackTruth, Totals, Totals]:
    m = TrafficModel(config, seed=seed, params=PARAMS)
    [truth] = add_attacks(m, parse_attack_specs(spec), T0)
    n = START + DUR + 60
    return m, truth, m.totals(T0, n, per_host=False), m.totals(T0, n, per_host=False, include_attacks=False)


def _metric(tt: TargetTotals, metric: str) -> np.ndarray:
    return tt.sip_method(metric[4:]) if metric.startswith("sip:") else np.asarray(getattr(tt, metric))


@pytest.mark.parametrize("vector", [*VECTORS, "flash_crowd"])
def test_each_scenario_raises_its_metric_by_its_intensity(config: VoxGuardConfig, vector: str) -> None:
    _, truth, tot, base = _play(config, f"{vector}@{START}s+{DUR}s")
    info = SCENARIOS[vector]
    assert truth.metric == info.metric and truth.intensity == info.intensity
    assert truth.start == T0 + START and truth.end == T0 + START + DUR
    assert truth.target_ids and truth.baseline > 0
    by_id = tot.by_id()
    base_by_id = base.by_id()
    tt = by_id[truth.target_ids[0]]
    assert tt.target.tier.value == info.tier.value
    series, ref = _metric(tt, truth.metric), _metric(base_by_id[truth.target_ids[0]], truth.metric)
    # before the window: untouched
    assert np.array_equal(series[:START], ref[:START])
    # after it: gone (long-lived sessions of a flash crowd's calls may still run)
    if not info.legitimate:
        assert np.array_equal(series[START + DUR + 5 :], ref[START + DUR + 5 :])
    inside = slice(START + 40, START + DUR)
    if vector == "websocket_exhaustion":  # grows all along: reaches the intensity at the end
        ratio = series[START + DUR - 10 : START + DUR].mean() / ref[START + DUR - 10 : START + DUR].mean()
        assert series[START + DUR // 2] < series[START + DUR - 1]
    else:
        ratio = series[inside].mean() / ref[inside].mean()
    assert ratio == pytest.approx(info.intensity, rel=0.15), (vector, ratio)


def test_flash_crowd_grows_media_with_signalling_and_tdos_does_not(config: VoxGuardConfig) -> None:
    _, crowd, tot_c, base = _play(config, f"flash_crowd@{START}s+{DUR}s*3")
    _, tdos, tot_t, _ = _play(config, f"tdos@{START}s+{DUR}s*3")
    late = slice(START + DUR - 60, START + DUR)
    media_base = base.find("media").packets[late].mean()
    assert tot_c.find("media").packets[late].mean() > 1.8 * media_base  # calls answered: RTP follows
    assert tot_t.find("media").packets[late].mean() == pytest.approx(media_base, rel=0.01)
    sbc = ("sbc", "sbc-eu-1", "udp/5060")
    inside = slice(START + 30, START + DUR)
    invites = base.find(*sbc).sip_method("INVITE")[inside].mean()
    assert tot_c.find(*sbc).sip_method("INVITE")[inside].mean() > 2.5 * invites
    assert tot_t.find(*sbc).sip_method("INVITE")[inside].mean() > 5 * invites
    # TDoS comes from far more sources than a crowd of regular callers
    sources = base.find(*sbc).distinct_sources[inside].mean()
    assert tot_t.find(*sbc).distinct_sources[inside].mean() > 2.5 * sources
    assert len(tdos.prefixes) >= 500 and not crowd.sources and crowd.legitimate and not tdos.legitimate


def test_sip_flood_rows_carry_scanner_agents_from_the_truth_prefixes(config: VoxGuardConfig) -> None:
    m, truth, _, _ = _play(config, "sip_flood@10s+20s*8")
    prefixes = [ipaddress.ip_network(p) for p in truth.prefixes]
    assert 20 <= len(prefixes) <= 60
    sf = m.second(T0 + 20)
    scan = (sf.flows["sip_flags"] & SipFlag.SCANNER_UA) != 0
    assert scan.sum() > 20
    assert set(sf.flows["sip_method"][scan].tolist()) <= {SipMethod.INVITE, SipMethod.OPTIONS}
    srcs = {ipaddress.ip_address(halves_to_addr(0, lo)) for lo in sf.flows["src_lo"][scan]}
    assert all(any(a in p for p in prefixes) for a in srcs)
    assert {str(a) for a in srcs} <= set(truth.sources)
    # none of the attackers is a registered endpoint, and no baseline flow is flagged
    normal = ~scan & (sf.flows["dst_port"] == 5060)
    base_srcs = {ipaddress.ip_address(halves_to_addr(0, lo)) for lo in sf.flows["src_lo"][normal]}
    assert not srcs & base_srcs
    assert not scan[np.isin(sf.kind, [k.index for k in m.kinds if not k.name.startswith("attack")])].any()


def test_attack_physics(config: VoxGuardConfig) -> None:
    """A few shapes detection relies on: malformed sizes, TLS bytes/connection, spoofed RTP, codec bpp."""
    m, _, tot, base = _play(config, "malformed_sip@60s+300s")
    sf = m.second(T0 + 100)
    bad = (sf.flows["sip_flags"] & SipFlag.MALFORMED) != 0
    assert bad.sum() > 10 and not sf.flows["sip_method"][bad].any()
    bpp = sf.flows["bytes"][bad] / sf.flows["packets"][bad]
    assert (bpp < 120).any() and (bpp > 1300).any()

    _, _, tot, base = _play(config, "tls_exhaustion@60s+300s")
    tls, tls0 = tot.find("sbc", "sbc-eu-1", "tcp/5061"), base.find("sbc", "sbc-eu-1", "tcp/5061")
    inside = slice(100, 360)
    added_conn = (tls.new_connections - tls0.new_connections)[inside].sum()
    added_bytes = (tls.bytes - tls0.bytes)[inside].sum()
    assert added_bytes / added_conn < 700  # a handshake at most: few bytes per connection

    m, truth, tot, base = _play(config, "rtp_flood@60s+300s")
    assert truth.spoofed and not truth.prefixes
    media, media0 = tot.find("media"), base.find("media")
    assert media.distinct_sources[inside].mean() > 10 * media0.distinct_sources[inside].mean()
    assert media.bytes_per_packet()[inside].mean() > 1.5 * media0.bytes_per_packet()[inside].mean()

    _, _, tot, base = _play(config, "codec_exhaustion@60s+300s*3")
    media, media0 = tot.find("media"), base.find("media")
    assert media.bytes_per_packet()[inside].mean() > 2 * media0.bytes_per_packet()[inside].mean()
    assert media.packets[inside].mean() < 1.5 * media0.packets[inside].mean()

    _, truth, tot, base = _play(config, "turn_abuse@60s+300s")
    relay, relay0 = tot.find("turn", None, "udp/3478"), base.find("turn", None, "udp/3478")
    assert relay.sessions[inside].mean() - relay0.sessions[inside].mean() == pytest.approx(8, abs=1)

    _, truth, tot, base = _play(config, "sbc_not_filtering@60s+300s*5")
    ext = tot.find("sbc", "sbc-eu-1", "udp/5060").packets[inside].mean()
    ext0 = base.find("sbc", "sbc-eu-1", "udp/5060").packets[inside].mean()
    assert ext / ext0 == pytest.approx(5, rel=0.15)
    assert len(truth.target_ids) == 2

    _, truth, tot, base = _play(config, "register_storm@60s+300s*5")
    reg, reg0 = tot.find("registrar", None, "udp/5060"), base.find("registrar", None, "udp/5060")
    assert reg.sip_method("REGISTER")[inside].mean() > 4 * reg0.sip_method("REGISTER")[inside].mean()
    assert truth.sources == ["203.0.113.10"]  # the SBC itself, on the internal segment
    sbc = ("sbc", "sbc-eu-1", "udp/5060")
    assert np.array_equal(tot.find(*sbc).packets, base.find(*sbc).packets)  # outside sees nothing


def test_component_choice_and_registrar_alias(config: VoxGuardConfig) -> None:
    m = TrafficModel(config, seed=1, params=PARAMS)
    [us, reg] = add_attacks(m, parse_attack_specs("sip_flood:sbc-us-1@0s+30s,register_storm:registrar-core+30s"), T0)
    assert us.component == "sbc-us-1" and us.targets == ["sbc-us-1 udp/5060"]
    assert reg.component == "registrar-core"
    with pytest.raises(ValueError, match="no sbc component"):
        add_attacks(m, [Scenario("sip_flood", component="nope")], T0)


def test_spec_grammar() -> None:
    assert parse_attack_spec("sip_flood@30s+60s*8") == Scenario("sip_flood", 30, 60, 8)
    assert parse_attack_spec("tdos:sbc-us-1@2m+1.5m*4x") == Scenario("tdos", 120, 90, 4, "sbc-us-1")
    assert parse_attack_spec("rtp_flood") == Scenario("rtp_flood", 0, 60, None)
    assert parse_attack_spec("api_flood+1h") == Scenario("api_flood", 0, 3600, None)
    assert parse_attack_spec("flash_crowd@90*2").factor == 2
    assert parse_attack_spec("icmp_flood").factor == SCENARIOS["icmp_flood"].intensity
    assert [s.vector for s in parse_attack_specs("sip_flood, tdos@10s")] == ["sip_flood", "tdos"]
    assert parse_attack_specs(["sip_flood", "tdos,icmp_flood"])[2].vector == "icmp_flood"
    spec = Scenario("tdos", 120, 90, 4, "sbc-us-1").spec()
    assert parse_attack_spec(spec) == Scenario("tdos", 120, 90, 4, "sbc-us-1")
    for bad in ("nonsense", "sip_flood@", "sip_flood@10x", "sip_flood+0s", "sip_flood*0", "sip_flood@1..2s"):
        with pytest.raises(ValueError):
            parse_attack_spec(bad)


def test_describe_lists_every_scenario() -> None:
    text = describe_scenarios()
    for name in [*VECTORS, "flash_crowd"]:
        assert name in text
    assert "sip_flood@30s+60s*8" in text
