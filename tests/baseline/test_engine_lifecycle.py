"""DetectionEngine on synthetic ticks: incident lifecycle, hysteresis, learning mode, outages,
bad input, targets appearing mid-week, and what is (not) learned during attacks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import yaml

from voxguard.baseline.engine import DetectionEngine, EngineOutput
from voxguard.shared.config import VoxGuardConfig, example_config_path, load_config, parse_config
from voxguard.shared.messages import IncidentEvent, TrafficTick

CONFIG = load_config(example_config_path())
MONDAY = 1_700_438_400  # 2023-11-20 00:00 UTC
SBC = next(td for td in CONFIG.iter_targets() if td.component == "sbc-eu-1" and td.monitor.label() == "udp/5060")
MEDIA = next(td for td in CONFIG.iter_targets() if td.tier.value == "media")
NORMAL = {"packets": 100.0, "bytes": 60_000.0, "flows": 50.0, "distinct_sources": 50.0, "sip_invite": 10.0,
          "sip_register": 60.0}  # fmt: skip


def config_with(**baseline: Any) -> VoxGuardConfig:
    data = yaml.safe_load(example_config_path().read_text())
    data["tiers"]["sbc"]["baseline"].update(baseline)
    return parse_config(data)


def fit_flat(engine: DetectionEngine, start: int, days: float, td: Any = SBC, rates: dict[str, float] = NORMAL) -> None:
    minutes = np.arange(start, start + int(days * 86_400), 60, dtype=np.int64)
    meta = {"tier": td.tier.value, "name": td.name, "component": td.component, "region": td.region,
            "role": td.monitor.effective_role}  # fmt: skip
    engine.fit_history(td.id, meta, minutes, {k: np.full(len(minutes), v) for k, v in rates.items()})


def tick(t: float, mult: float = 1.0, td: Any = SBC, rng: np.random.Generator | None = None,
         rates: dict[str, float] = NORMAL, sec: float = 1.0, **over: Any) -> TrafficTick:  # fmt: skip
    r = rng or np.random.default_rng(int(t))
    n = {k: int(r.poisson(v * mult * sec)) for k, v in rates.items()}
    n["distinct_sources"] = int(r.poisson(rates.get("distinct_sources", 0) * mult))
    fields: dict[str, Any] = {
        "tier": td.tier, "target_id": td.id, "target": td.name, "component": td.component, "protocol": "udp",
        "role": td.monitor.effective_role, "region": td.region, "tick_start": datetime.fromtimestamp(t, UTC),
        "tick_seconds": sec, "host": td.host, "bytes": n.get("bytes", 0), "packets": n.get("packets", 0),
        "flows": n.get("flows", 0),
        "distinct_sources": n.get("distinct_sources", 0), "icmp_packets": n.get("icmp_packets", 0),
        "sip_methods": {"INVITE": n.get("sip_invite", 0), "REGISTER": n.get("sip_register", 0)},
        "top_sources": [{"source": "198.18.7.1", "packets": 10, "bytes": 5000}],
        "top_prefixes": [{"source": "198.18.7.0/24", "packets": 10, "bytes": 5000}],
    }  # fmt: skip
    fields.update(over)
    return TrafficTick(**fields)


def step(engine: DetectionEngine, t: float, ticks: list[TrafficTick]) -> EngineOutput:
    engine.observe(ticks)
    return engine.advance(datetime.fromtimestamp(t + (1 + engine.grace) * engine.dt, UTC))


def run(engine: DetectionEngine, t0: float, seconds: int, mult: float = 1.0) -> list[tuple[float, IncidentEvent]]:
    """Normal ticks of the engine's tick length for ``seconds``, traffic x ``mult``."""
    out = []
    sec = engine.dt
    for i in range(int(seconds // sec)):
        t = t0 + i * sec
        out += [(t, ev) for ev in step(engine, t, [tick(t, mult, sec=sec)]).events]
    return out


@pytest.fixture
def learned() -> DetectionEngine:
    e = DetectionEngine(CONFIG)
    fit_flat(e, MONDAY, 7)
    return e


DAY2 = MONDAY + 7 * 86_400 + 10 * 3600  # the next Monday, 10:00


def test_flat_history_gives_flat_baseline(learned: DetectionEngine) -> None:
    b = learned.baseline(SBC.id)
    assert b is not None and not b["learning"] and b["progress"] == 1.0
    prof = b["metrics"]["packets"]["profile"]
    assert len(prof) == 168 and all(p == pytest.approx(100, rel=0.01) for p in prof)
    exp = learned.expected(SBC.id, "packets", [datetime.fromtimestamp(DAY2 + k * 3600, UTC) for k in range(5)])
    assert exp == pytest.approx([100.0] * 5, rel=0.01)
    assert learned.baseline("nope") is None


def test_attack_opens_updates_and_resolves(learned: DetectionEngine) -> None:
    assert run(learned, DAY2, 60) == []
    t_attack = DAY2 + 60
    events = run(learned, t_attack, 20, mult=10)
    kinds = [ev.event for _, ev in events]
    assert kinds[0] == "opened"
    t_open, opened = events[0]
    assert t_open - t_attack <= 3  # hold_ticks 3
    inc = opened.incident
    # everything x10 from more sources with no media in sight is TDoS-shaped too
    assert set(inc.vectors) <= {"sip_flood", "tdos"} and inc.tier.value == "sbc" and inc.target_id == SBC.id
    assert inc.severity in ("warning", "major") and not inc.learning
    assert inc.runbook in ("sip-flood-sbc", "tdos-sbc")  # the runbook its vectors trigger, by name
    assert inc.peak_ratio > 3  # the hold window's mean, still ramping in
    assert learned.open_incidents()[0].peak_ratio == pytest.approx(10, rel=0.2)
    assert "sip_flood" in learned.open_incidents()[0].vectors
    assert inc.top_sources and inc.top_sources[0].source == "198.18.7.1"
    assert [i.id for i in learned.open_incidents()] == [inc.id]
    # a harder wave: the incident is updated (peak, severity), not duplicated
    events = run(learned, t_attack + 20, 10, mult=30)
    assert [ev.event for _, ev in events] == ["updated"] * len(events) and events
    assert events[-1][1].incident.severity == "critical" and events[-1][1].incident.id == inc.id
    # back to normal: resolved after quiet_ticks (30) quiet ticks
    t_end = t_attack + 30
    events = run(learned, t_end, 60)
    assert [ev.event for _, ev in events] == ["resolved"]
    t_res, res = events[0]
    assert 30 <= t_res - t_end <= 30 + 3 + 1
    assert res.incident.id == inc.id and res.incident.state == "resolved" and res.incident.resolved_at
    assert learned.open_incidents() == []


def test_hysteresis_does_not_flap(learned: DetectionEngine) -> None:
    run(learned, DAY2, 30)
    events = run(learned, DAY2 + 30, 10, mult=8)
    events += run(learned, DAY2 + 40, 200, mult=3.8)  # between close (3x) and open (5x): stays open
    kinds = [ev.event for _, ev in events]
    assert kinds[0] == "opened" and set(kinds[1:]) <= {"updated"}
    events = run(learned, DAY2 + 240, 60)
    assert [ev.event for _, ev in events] == ["resolved"]


def test_learning_mode_flags_anomalies_and_incidents() -> None:
    e = DetectionEngine(CONFIG)
    fit_flat(e, MONDAY + 5 * 86_400, 2)
    row = next(t for t in e.targets() if t["id"] == SBC.id)
    assert row["learning"] and row["progress"] == pytest.approx(2 / 7, rel=0.01)
    run(e, DAY2, 20)
    anomalies = []
    events = []
    for i in range(10):
        out = step(e, DAY2 + 20 + i, [tick(DAY2 + 20 + i, 10)])
        anomalies += out.anomalies
        events += out.events
    assert events and events[0].incident.learning
    assert anomalies and all(a.learning for a in anomalies)
    a = anomalies[0]
    assert a.vector in ("sip_flood", "tdos") and a.target_id == SBC.id and a.ratio > 3 and a.baseline > 0


def test_silent_exporter_is_an_outage_not_a_zero_baseline() -> None:
    e = DetectionEngine(CONFIG, tick_seconds=60)  # minute ticks: hours of outage in a few steps
    media_rates = {"packets": 50_000.0, "bytes": 1e7, "flows": 8.0}
    fit_flat(e, MONDAY, 7)
    fit_flat(e, MONDAY, 7, td=MEDIA, rates=media_rates)
    run(e, DAY2, 600)
    before = e.baseline(SBC.id)
    assert before is not None
    # the SBC exporter goes silent for 3 hours (crossing hour boundaries); the media tier still reports
    events = []
    t0 = DAY2 + 600
    for i in range(180):
        t = t0 + 60 * i
        events += step(e, t, [tick(t, td=MEDIA, rates=media_rates, sec=60)]).events
    assert events == []
    after = e.baseline(SBC.id)
    assert after is not None
    # the outage hours (slots 11, 12) learned nothing; slot 10 folded its 10 live minutes only
    assert after["metrics"]["packets"]["profile"][11:13] == before["metrics"]["packets"]["profile"][11:13]
    assert after["metrics"]["packets"]["profile"][10] == pytest.approx(100, rel=0.05)
    assert after["learned_seconds"] == before["learned_seconds"]  # no zeros learned from silence
    assert e.stats.outage_ticks >= 180
    assert next(t for t in e.targets() if t["id"] == SBC.id)["state"] == "silent"
    # it comes back with normal traffic: no flood is opened from the silence
    assert run(e, t0 + 180 * 60, 1800) == []


def test_bad_input_is_dropped_and_counted(learned: DetectionEngine) -> None:
    run(learned, DAY2, 10)
    st = learned.stats
    t = DAY2 + 10
    good = tick(t)
    learned.observe([good, good.model_copy()])  # duplicate
    assert st.duplicate == 1
    learned.observe([tick(DAY2 + 2)])  # already processed: late
    assert st.late == 1
    learned.observe([tick(DAY2 + 86_400)])  # a day ahead of the clock: skew
    assert st.future == 1
    bad = TrafficTick.model_construct(**{**good.model_dump(), "packets": -5})
    nan = TrafficTick.model_construct(**{**good.model_dump(), "target_id": "sbc-x", "bytes": float("nan")})
    learned.observe([bad, nan, {"tier": "sbc", "packets": "lots"}])
    assert st.malformed == 3
    out = learned.advance(datetime.fromtimestamp(t + 5, UTC))
    assert out.events == []
    # out of order within the grace window is fine: both ticks are processed, oldest first
    learned.observe([tick(t + 3), tick(t + 2)])
    learned.advance(datetime.fromtimestamp(t + 10, UTC))
    assert st.late == 1 and st.ticks_processed >= 13


def test_target_appearing_mid_week_starts_learning(learned: DetectionEngine) -> None:
    host = MEDIA.for_host("198.51.100.9")
    rates = {"packets": 3000.0, "bytes": 600_000.0, "flows": 0.5}
    assert host.id not in {t["id"] for t in learned.targets()}
    for i in range(900):
        t = DAY2 + i
        step(learned, t, [tick(t, td=host, rates=rates), tick(t)])
    row = next(t for t in learned.targets() if t["id"] == host.id)
    assert row["learning"] and 0 < row["progress"] < 0.01 and row["host"] == "198.51.100.9"
    b = learned.baseline(host.id)
    assert b is not None and b["metrics"]["packets"]["short_term_rate"] > 0
    assert learned.open_incidents() == []


def test_a_partial_first_tick_does_not_anchor_a_new_targets_level() -> None:
    """A target first seen in a partial second (an exporter or collector starting mid-tick): by
    the time detection starts (15 s) its level is what it sends, not a quarter of it, so steady
    traffic raises no alarm (it once opened SIP flood / TDoS incidents at 4x)."""
    e = DetectionEngine(CONFIG)
    t0 = DAY2
    events = step(e, t0, [tick(t0, mult=0.05)]).events
    for i in range(1, 40):
        events += step(e, t0 + i, [tick(t0 + i)]).events
    assert events == [] and e.open_incidents() == []
    b = e.baseline(SBC.id)
    assert b is not None
    assert 85 < b["metrics"]["packets"]["short_term_rate"] < 115  # steady 100/s


def test_attacks_are_not_learned() -> None:
    learned = DetectionEngine(CONFIG, tick_seconds=60)
    fit_flat(learned, MONDAY, 7)
    # a 40-minute attack across an hour boundary (10:40 -> 11:20), then the next hour's visit
    t0 = DAY2 + 40 * 60
    run(learned, t0 - 600, 600)
    assert run(learned, t0, 40 * 60, mult=10)[0][1].event == "opened"
    run(learned, t0 + 40 * 60, 90 * 60)
    b = learned.baseline(SBC.id)
    assert b is not None
    prof = b["metrics"]["packets"]["profile"]
    assert prof[10] == pytest.approx(100, rel=0.1) and prof[11] == pytest.approx(100, rel=0.1)
    assert b["metrics"]["packets"]["short_term_level"] == pytest.approx(1.0, abs=0.1)


def test_slow_growth_is_followed_without_incidents() -> None:
    e = DetectionEngine(config_with(short_term_minutes=30), tick_seconds=10)
    fit_flat(e, MONDAY, 7)
    events: list[Any] = []
    for i in range(360):  # +80 % over an hour
        t = DAY2 + 10 * i
        events += step(e, t, [tick(t, 1.0 + 0.8 * i / 360, sec=10)]).events
    assert events == []
    exp = e.expected(SBC.id, "packets", [datetime.fromtimestamp(DAY2 + 3600, UTC)])[0]
    assert exp > 130  # the short-term level followed the growth (with a lag of its window)


def test_turn_sessions_are_applied() -> None:
    e = DetectionEngine(CONFIG)
    e.set_turn_sessions("turn-eu", 40)
    turn = [t for t in e.targets() if t["tier"] == "turn" and t["component"] == "turn-eu"]
    assert turn and all(e.sessions[e.index[t["id"]]] == 40 for t in turn)
    host = next(td for td in CONFIG.iter_targets() if td.tier.value == "turn").for_host("198.51.100.66")
    e.set_turn_sessions("198.51.100.66", 7)
    step(e, DAY2, [tick(DAY2, td=host, rates={"packets": 100.0, "bytes": 2e4})])
    assert e.sessions[e.index[host.id]] == 7


def test_memory_per_target_is_stated() -> None:
    e = DetectionEngine(CONFIG)
    per = e.memory_per_target()
    assert 4_000 < per < 8_000  # 168 slots x 12 metrics in float16 plus learning state


def test_grace_holds_back_recent_ticks(learned: DetectionEngine) -> None:
    learned.observe([tick(DAY2)])
    learned.advance(datetime.fromtimestamp(DAY2 + 1, UTC))  # inside the grace window
    assert learned.stats.ticks_processed == 0
    learned.advance(datetime.fromtimestamp(DAY2 + 3.5, UTC))
    assert learned.stats.ticks_processed == 1
    assert timedelta(seconds=learned.grace) == timedelta(seconds=2)


def test_sbc_signalling_going_dark_makes_the_incident_critical() -> None:
    icmp = next(td for td in CONFIG.iter_targets() if td.component == "sbc-eu-1" and td.monitor.label() == "icmp")
    icmp_rates = {"packets": 40.0, "bytes": 3_000.0, "flows": 20.0, "icmp_packets": 40.0}
    e = DetectionEngine(CONFIG)
    fit_flat(e, MONDAY, 7)
    fit_flat(e, MONDAY, 7, td=icmp, rates=icmp_rates)
    for i in range(30):
        t = DAY2 + i
        step(e, t, [tick(t), tick(t, td=icmp, rates=icmp_rates, protocol="icmp")])
    events = []
    for i in range(10):  # a 20x ICMP flood (800/s, above min_rate 500) while 5060 stays up: major
        t = DAY2 + 30 + i
        flood = tick(t, 20, td=icmp, rates=icmp_rates, protocol="icmp")
        events += step(e, t, [tick(t), flood]).events
    assert events and events[0].event == "opened" and events[0].incident.vectors == ["icmp_flood"]
    assert events[-1].incident.severity == "major"
    later = []
    for i in range(10):  # ... then the SBC stops answering SIP: nothing reaches 5060 any more
        t = DAY2 + 40 + i
        later += step(e, t, [tick(t, 20, td=icmp, rates=icmp_rates, protocol="icmp")]).events
    assert later and later[-1].event == "updated" and later[-1].incident.severity == "critical"


def test_sampled_sip_counts_are_judged_with_their_sampling_scale() -> None:
    """A registrar whose INVITEs come from 1-in-64 sFlow samples: each sample counts 64, so three
    samples a tick where one every other tick is usual is noise there, while the same counts
    measured one by one would be a significant burst."""
    reg = next(td for td in CONFIG.iter_targets() if td.tier.value == "registrar")
    rates = {"packets": 640.0, "bytes": 500_000.0, "flows": 640.0, "distinct_sources": 2.0, "sip_invite": 32.0}

    def play(sampled: bool) -> list[IncidentEvent]:
        e = DetectionEngine(CONFIG)
        fit_flat(e, MONDAY, 7, td=reg, rates=rates)
        t0 = DAY2
        events: list[IncidentEvent] = []
        for i in range(120):  # the sampling scale is read from the ticks
            inv = 64 if i % 2 == 0 else 0
            extra: dict[str, Any] = {"sip_sampled_packets": inv // 64, "sampled": True} if sampled else {}
            t = tick(t0 + i, td=reg, rates=rates, sip_methods={"INVITE": inv}, packets=640, flows=640, **extra)
            events += step(e, t0 + i, [t]).events
        assert not events
        for i in range(120, 130):
            extra = {"sip_sampled_packets": 3, "sampled": True} if sampled else {}
            t = tick(t0 + i, td=reg, rates=rates, sip_methods={"INVITE": 3 * 64}, packets=640, flows=640, **extra)
            events += step(e, t0 + i, [t]).events
        return events

    assert not play(sampled=True)
    opened = play(sampled=False)
    assert opened and opened[0].event == "opened" and opened[0].incident.vectors == ["call_routing_exhaustion"]


def test_a_burst_of_a_few_events_needs_one_more_hot_tick() -> None:
    """Forty INVITEs in one second against a usual two open nothing (a PBX's burst of calls: hot
    for one tick); a surge that holds opens one tick later than a busy count would."""
    reg = next(td for td in CONFIG.iter_targets() if td.tier.value == "registrar")
    rates = {"packets": 40.0, "bytes": 30_000.0, "flows": 40.0, "distinct_sources": 2.0, "sip_invite": 2.0}

    def first_open(burst_s: int, invites: int) -> int | None:
        e = DetectionEngine(CONFIG)
        fit_flat(e, MONDAY, 7, td=reg, rates=rates)
        for i in range(60):
            assert not step(e, DAY2 + i, [tick(DAY2 + i, td=reg, rates=rates, sip_methods={"INVITE": 2})]).events
        for i in range(60, 90):
            inv = invites if i < 60 + burst_s else 2
            evs = step(e, DAY2 + i, [tick(DAY2 + i, td=reg, rates=rates, sip_methods={"INVITE": inv})]).events
            if any(ev.event == "opened" for ev in evs):
                return i - 60
        return None

    assert first_open(1, 40) is None  # hot for one tick only
    held = first_open(20, 20)
    assert held is not None
    busy = {**rates, "sip_invite": 40.0}
    e = DetectionEngine(CONFIG)
    fit_flat(e, MONDAY, 7, td=reg, rates=busy)
    opened = None
    for i in range(20):
        inv = 40 if i < 5 else 400
        evs = step(e, DAY2 + i, [tick(DAY2 + i, td=reg, rates=busy, sip_methods={"INVITE": inv})]).events
        if opened is None and any(ev.event == "opened" for ev in evs):
            opened = i - 5
    assert opened is not None and opened < held  # a handful of events waits one more tick


def test_runbook_follows_the_most_specific_vector() -> None:
    """A TDoS also trips the SIP packet-flood detector: the incident follows the TDoS runbook
    (rate-limit and geography), whichever vector was seen first."""
    from voxguard.baseline.incidents import Finding, IncidentBook
    from voxguard.shared.runbooks import load_runbooks

    books = load_runbooks({})
    book = IncidentBook()
    target = {"id": "t1", "tier": "sbc", "name": "sbc-us-1 udp/5060", "component": "sbc-us-1", "tags": []}
    kw: dict[str, Any] = {"learning": False, "quiet_needed": 30, "dark": False, "internal": False, "top_sources": [],
                          "top_prefixes": [], "runbooks": books}  # fmt: skip
    now = datetime.fromtimestamp(DAY2, UTC)
    ev = book.hot(now, target, [Finding("sip_flood", 6.0, 600.0, 100.0, "packets_per_s")], **kw)
    assert ev is not None and ev.incident.runbook == "sip-flood-sbc"
    ev = book.hot(now + timedelta(seconds=1), target, [Finding("tdos", 6.5, 400.0, 60.0, "flows_per_s")], **kw)
    assert ev is not None and ev.event == "updated" and ev.incident.runbook == "tdos-sbc"
    both = IncidentBook().hot(
        now,
        target | {"id": "t2"},
        [Finding("sip_flood", 7.0, 700.0, 100.0, "packets_per_s"), Finding("tdos", 6.0, 360.0, 60.0, "flows_per_s")],
        **kw,
    )
    assert both is not None and both.incident.runbook == "tdos-sbc"
