"""The traffic model: determinism, realistic shapes, and the totals fast path against the flows."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from voxguard.ingest.decode.flows import SipMethod, halves_to_addr
from voxguard.ingest.simulate.model import (
    BLOCK,
    Activity,
    ModelParams,
    SecondFlows,
    Totals,
    TrafficModel,
    weekly_shape,
)
from voxguard.shared.config import VoxGuardConfig, example_config_path, load_config
from voxguard.shared.messages import TrafficTick

MONDAY = 1_700_438_400  # 2023-11-20 00:00 UTC, a Monday
HOUR = 3600
DAY = 86_400
SMALL = ModelParams(scale=0.3)


@pytest.fixture(scope="module")
def config() -> VoxGuardConfig:
    return load_config(example_config_path())


@pytest.fixture(scope="module")
def model(config: VoxGuardConfig) -> TrafficModel:
    return TrafficModel(config, seed=7, params=SMALL)


def _by_target(m: TrafficModel, secs: list[SecondFlows]) -> dict[str, np.ndarray]:
    """Per-target per-second sums of the flow rows, as the totals path reports them."""
    nt, n = len(m.targets), len(secs)
    out = {k: np.zeros((nt, n)) for k in ("packets", "bytes", "flows", "new_connections", "invite", "register")}
    for extra in ("distinct", "rows", *(f"size{b}" for b in range(len(TrafficTick.SIZE_BUCKETS) + 1))):
        out[extra] = np.zeros((nt, n))
    for i, sf in enumerate(secs):
        f = sf.flows
        pk = f["packets"].astype(float)
        cols = {
            "packets": pk,
            "bytes": f["bytes"].astype(float),
            "flows": sf.new.astype(float),
            "new_connections": (sf.new & (f["proto"] == 6)).astype(float),
            "invite": pk * (f["sip_method"] == SipMethod.INVITE),
            "register": pk * (f["sip_method"] == SipMethod.REGISTER),
        }
        for name, w in cols.items():
            out[name][:, i] = np.bincount(sf.target, weights=w, minlength=nt)
        out["rows"][:, i] = np.bincount(sf.target, minlength=nt)
        bucket = np.searchsorted(TrafficTick.SIZE_BUCKETS, f["bytes"] / np.maximum(f["packets"], 1), side="left")
        for b in range(len(TrafficTick.SIZE_BUCKETS) + 1):
            sel = bucket == b
            out[f"size{b}"][:, i] = np.bincount(sf.target[sel], weights=pk[sel], minlength=nt)
        for t in range(nt):
            sel = sf.target == t
            out["distinct"][t, i] = len(np.unique(f["src_lo"][sel])) if sel.any() else 0
    return out


def test_same_seed_same_traffic_and_other_seed_other_traffic(config: VoxGuardConfig) -> None:
    t = MONDAY + 10 * HOUR
    a = TrafficModel(config, seed=11, params=SMALL)
    b = TrafficModel(config, seed=11, params=SMALL)
    c = TrafficModel(config, seed=12, params=SMALL)
    b.second(t + 500)  # a different query history must not change anything
    sa, sb, sc = a.second(t), b.second(t), c.second(t)
    assert len(sa) > 100
    assert np.array_equal(sa.flows, sb.flows) and np.array_equal(sa.target, sb.target)
    assert not (len(sa) == len(sc) and np.array_equal(sa.flows, sc.flows))
    ta, tb = a.totals(t, 30), b.totals(t, 30)
    for x, y in zip(ta.targets, tb.targets, strict=True):
        assert np.array_equal(x.packets, y.packets) and np.array_equal(x.distinct_sources, y.distinct_sources)


def test_totals_fast_path_agrees_with_the_flows(model: TrafficModel) -> None:
    t0 = MONDAY + 10 * HOUR - 15  # crosses an hour block boundary
    n = 30
    secs = list(model.seconds(t0, n))
    got = _by_target(model, secs)
    tot = model.totals(t0, n)
    for i, tt in enumerate(tot.targets[: len(model.targets)]):
        assert tt.target == model.targets[i]
        for name, want in (("packets", tt.packets), ("bytes", tt.bytes), ("flows", tt.flows),
                           ("new_connections", tt.new_connections), ("invite", tt.sip_method("INVITE")),
                           ("register", tt.sip_method("REGISTER"))):  # fmt: skip
            assert np.array_equal(got[name][i], want), (tt.target.name, name)
        # (the registrar's standing SBC flows merge messages of several sizes into one row per second;
        # totals bucket each message, as sFlow samples of them would be)
        for b in range(tt.size_histogram.shape[1] if tt.target.tier.value != "registrar" else 0):
            assert np.array_equal(got[f"size{b}"][i], tt.size_histogram[:, b]), (tt.target.name, b)
        if tt.packets.sum():
            # an expectation against one draw of correlated sessions: close, not equal
            assert tt.distinct_sources.mean() == pytest.approx(got["distinct"][i].mean(), rel=0.25, abs=2.0)
    # RTP streams send every second: one row per open session
    media = model.targets.index(tot.find("media").target)
    assert np.array_equal(got["rows"][media], tot.find("media").sessions)
    # per-host targets split the aggregate exactly
    hosts = [tt for tt in tot.targets if tt.target.host is not None and tt.target.component == "media-gw-eu"]
    assert len(hosts) == 14
    assert np.array_equal(sum(h.packets for h in hosts), tot.find("media").packets)
    gw = hosts[3]
    addr = gw.target.host
    by_host = []
    for sf in secs:
        r = sf.flows[sf.target == 6]
        mine = [halves_to_addr(h, lo) == addr for h, lo in zip(r["dst_hi"], r["dst_lo"], strict=True)]
        by_host.append(int(r["packets"][mine].sum()))
    assert by_host == gw.packets.astype(int).tolist()


def test_iter_totals_chunks_match_one_call(model: TrafficModel) -> None:
    t0 = MONDAY + 9 * HOUR + 1234
    whole = model.totals(t0, 900, per_host=False)
    parts = list(model.iter_totals(t0, 900, chunk=250, per_host=False))
    assert [p.seconds for p in parts] == [250, 250, 250, 150]
    for i in range(len(whole.targets)):
        joined = np.concatenate([p.targets[i].packets for p in parts])
        assert np.array_equal(joined, whole.targets[i].packets)
        sessions = np.concatenate([p.targets[i].sessions for p in parts])
        assert np.array_equal(sessions, whole.targets[i].sessions)


def _mean(tot: Totals, tier: str, what: str, label: str | None = None) -> float:
    tt = tot.find(tier, "sbc-eu-1" if tier == "sbc" else None, label)
    return float(tt.sip_method("INVITE").mean() if what == "invite" else getattr(tt, what).mean())


def test_diurnal_and_weekly_shape(model: TrafficModel) -> None:
    def window(day: int, hour_local: float) -> Totals:  # sbc-eu-1 is in eu-west (UTC+1)
        return model.totals(MONDAY + day * DAY + int((hour_local - 1) * HOUR), 600, per_host=False)

    night, day_, weekend = window(1, 3.5), window(1, 10.5), window(5, 10.5)
    for tier, what, label in (("sbc", "invite", "udp/5060"), ("sbc", "packets", "udp/5060"), ("media", "packets", None),
                              ("api", "new_connections", "tcp/443")):  # fmt: skip
        n, d, w = (_mean(x, tier, what, label) for x in (night, day_, weekend))
        assert n < 0.5 * d, (tier, what, n, d)
        assert w < 0.7 * d, (tier, what, w, d)
    # calls swing much more than registrations (a stable registered population)
    assert _mean(night, "sbc", "invite") / _mean(day_, "sbc", "invite") < 0.2
    assert _mean(night, "sbc", "packets", "udp/5060") / _mean(day_, "sbc", "packets", "udp/5060") > 0.25


def test_weekly_shape_curve() -> None:
    hours = np.arange(0, 7 * DAY, 600) + MONDAY
    shape = weekly_shape(hours)
    h = ((hours - MONDAY) % DAY) / HOUR
    day = (hours - MONDAY) // DAY
    assert shape[(day < 5) & (h >= 9) & (h < 18)].mean() > 3 * shape[(day < 5) & (h < 6)].mean()
    assert shape[(day >= 5) & (h >= 9) & (h < 18)].mean() < 0.45 * shape[(day < 5) & (h >= 9) & (h < 18)].mean()
    monday_morning = shape[(day == 0) & (h >= 8.5) & (h < 10.5)].mean()
    tuesday_morning = shape[(day == 1) & (h >= 8.5) & (h < 10.5)].mean()
    assert monday_morning > 1.1 * tuesday_morning


def test_noise_is_smooth_not_white() -> None:
    t = np.arange(MONDAY, MONDAY + 6 * HOUR)
    curve = Activity(salt=42, offset_s=0, base=1.0, amp=0.0)(t)
    noise = np.log(curve)
    assert 0.04 < noise.std() < 0.3
    x = noise - noise.mean()
    lag60 = float((x[:-60] * x[60:]).mean() / x.var())
    assert lag60 > 0.7  # white noise would be ~0
    same = Activity(salt=42, offset_s=0, base=1.0, amp=0.0)(t[1000:1100])
    assert np.allclose(same, curve[1000:1100])  # a pure function of absolute time


def test_flow_shapes_look_like_voip(model: TrafficModel) -> None:
    secs = list(model.seconds(MONDAY + 9 * HOUR, 20))
    f = np.concatenate([s.flows for s in secs])
    target = np.concatenate([s.target for s in secs])
    kind = np.concatenate([s.kind for s in secs])
    names = np.array([model.kinds[k].name for k in kind])
    tds = model.targets
    sip = np.array([tds[t].tier.value == "sbc" and tds[t].monitor.label() == "udp/5060" for t in target])
    bpp = f["bytes"] / np.maximum(f["packets"], 1)
    assert np.all((bpp[sip] >= 300) & (bpp[sip] <= 1400))
    methods = np.bincount(f["sip_method"][sip], weights=f["packets"][sip], minlength=9)
    assert methods[SipMethod.REGISTER] == methods[1:].max()  # refreshes dominate the SBC's SIP
    assert methods[SipMethod.INVITE] > 0 and methods[SipMethod.OPTIONS] > 0 and methods[SipMethod.BYE] > 0
    rtp = np.char.find(names, ":rtp_") >= 0
    mid = rtp & (f["end_ms"] - f["start_ms"] == 999)
    assert mid.sum() > 100
    assert np.all(f["packets"][mid] == 50)
    assert np.all((bpp[mid] >= 160) & (bpp[mid] <= 214))
    assert np.all((f["dst_port"][rtp] >= 10000) & (f["dst_port"][rtp] <= 20000) & (f["dst_port"][rtp] % 2 == 0))
    tls = np.char.endswith(names, ":tls")
    new_tls = tls & (f["end_ms"] - f["start_ms"] < 999) & ((f["tcp_flags"] & 0x02) != 0)
    assert new_tls.sum() >= 1 and np.all(f["dst_port"][tls] == 5061)
    # the registrar hears the SBCs only
    reg = np.array([tds[t].tier.value == "registrar" for t in target])
    srcs = {halves_to_addr(0, lo) for lo in f["src_lo"][reg]}
    assert srcs <= {"203.0.113.10", "203.0.113.20"} and srcs
    icmp = f["proto"] == 1
    assert icmp.any() and set(f["icmp_type"][icmp].tolist()) <= {3, 8}


def test_media_follows_the_calls(model: TrafficModel) -> None:
    """Signalling and media come from one call model: RTP sources are the endpoints that signalled."""
    t0 = MONDAY + 10 * HOUR
    secs = list(model.seconds(t0, 10))
    f = np.concatenate([s.flows for s in secs])
    names = np.array([model.kinds[k].name for k in np.concatenate([s.kind for s in secs])])
    sig = set(f["src_lo"][np.char.find(names, "invite-ep") >= 0].tolist())
    rtp = set(f["src_lo"][np.char.find(names, "rtp_ep") >= 0].tolist())
    assert sig and rtp
    # calls last minutes: sessions outnumber the INVITEs of 10 s, and their sources overlap
    assert len(sig & rtp) >= 1
    tot = model.totals(t0 - 2 * HOUR, 4 * HOUR, per_host=False)
    inv = tot.find("sbc", "sbc-eu-1", "udp/5060").sip_method("INVITE") + tot.find(
        "sbc", "sbc-us-1", "udp/5060"
    ).sip_method("INVITE")
    media = tot.find("media").sessions
    k = 600
    corr = np.corrcoef(inv.reshape(-1, k).mean(axis=1), media.reshape(-1, k).mean(axis=1))[0, 1]
    assert corr > 0.8


def test_scale_multiplies_rates(config: VoxGuardConfig) -> None:
    t0 = MONDAY + 10 * HOUR
    a = TrafficModel(config, seed=3, params=SMALL).totals(t0, 300, per_host=False)
    b = TrafficModel(config, seed=3, params=replace(SMALL, scale=0.9)).totals(t0, 300, per_host=False)
    ra = a.find("sbc", "sbc-eu-1", "udp/5060").flows.mean()
    rb = b.find("sbc", "sbc-eu-1", "udp/5060").flows.mean()
    assert rb / ra == pytest.approx(3.0, rel=0.2)


def test_blocks_are_an_hour_and_long_flows_cross_them(model: TrafficModel) -> None:
    edge = MONDAY + 11 * HOUR
    assert edge % BLOCK == 0
    before, after = model.second(edge - 1), model.second(edge)
    kinds = {k.index for k in model.kinds if ":rtp_" in k.name}
    carried = np.isin(after.kind, list(kinds)) & ~after.new
    assert carried.sum() > 50  # calls begun before the block boundary still send
    keys = set(zip(before.flows["src_lo"].tolist(), before.flows["dst_port"].tolist(), strict=True))
    again = set(zip(after.flows["src_lo"][carried].tolist(), after.flows["dst_port"][carried].tolist(), strict=True))
    assert len(again & keys) > 0.9 * len(again)
