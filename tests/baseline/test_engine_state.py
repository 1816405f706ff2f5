"""Restart safety: export_state / import_state round-trips what was learned and the open incidents,
and refuses bad bytes without touching the engine."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime

import pytest
from test_engine_lifecycle import CONFIG, DAY2, MONDAY, SBC, fit_flat, run, step, tick

from voxguard.baseline.engine import DetectionEngine


def _learned() -> DetectionEngine:
    e = DetectionEngine(CONFIG)
    fit_flat(e, MONDAY + 3 * 86_400, 4)  # mid-learning: 4 of 7 days
    run(e, DAY2, 120)
    return e


def test_round_trip_keeps_learning_and_open_incident() -> None:
    e = _learned()
    opened = [ev for _, ev in run(e, DAY2 + 120, 10, mult=10) if ev.event == "opened"]
    assert opened
    data = e.export_state()
    assert isinstance(data, bytes) and len(data) > 1000

    r = DetectionEngine(CONFIG)
    r.import_state(data)
    assert r.baseline(SBC.id) == e.baseline(SBC.id)
    assert [t["progress"] for t in r.targets()] == [t["progress"] for t in e.targets()]
    assert [i.model_dump() for i in r.open_incidents()] == [i.model_dump() for i in e.open_incidents()]
    prog = next(t["progress"] for t in r.targets() if t["id"] == SBC.id)
    assert 0.5 < prog < 0.6  # learning continues from 4 days, not from zero

    # both engines continue identically: the same incident resolves, no relearning, no second incident
    evs_e = [ev for _, ev in run(e, DAY2 + 130, 60)]
    evs_r = [ev for _, ev in run(r, DAY2 + 130, 60)]
    assert [ev.event for ev in evs_r] == [ev.event for ev in evs_e] == ["resolved"]
    assert evs_r[0].incident.id == opened[0].incident.id
    assert r.baseline(SBC.id) == e.baseline(SBC.id)


def test_late_ticks_after_restart_are_still_late() -> None:
    e = _learned()
    r = DetectionEngine(CONFIG)
    r.import_state(e.export_state())
    r.observe([tick(DAY2 + 5)])
    assert r.stats.late == 1


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"not a zip at all",
        b"PK\x03\x04 truncated",
    ],
)
def test_garbage_is_refused(bad: bytes) -> None:
    e = _learned()
    before = e.baseline(SBC.id)
    with pytest.raises(ValueError, match="cannot import detection engine state"):
        e.import_state(bad)
    assert e.baseline(SBC.id) == before


def _rewrite(data: bytes, name: str, content: bytes | None) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for item in src.namelist():
            if item != name:
                dst.writestr(item, src.read(item))
        if content is not None:
            dst.writestr(name, content)
    return out.getvalue()


def test_corrupt_state_is_refused_and_engine_unchanged() -> None:
    e = _learned()
    good = e.export_state()
    doc = json.loads(zipfile.ZipFile(io.BytesIO(good)).read("engine.json"))
    cases = {
        "missing array": _rewrite(good, "bank_level.npy", None),
        "wrong shape": _rewrite(good, "bank_spread.npy", _rewrite(good, "x", None)[:10]),
        "wrong version": _rewrite(good, "engine.json", json.dumps({**doc, "version": 99}).encode()),
        "wrong magic": _rewrite(good, "engine.json", json.dumps({**doc, "magic": "other"}).encode()),
        "target count": _rewrite(good, "engine.json", json.dumps({**doc, "n": doc["n"] + 3}).encode()),
        "bad incident": _rewrite(good, "engine.json", json.dumps({**doc, "incidents": [{"id": 1}]}).encode()),
    }
    other = DetectionEngine(CONFIG)
    run(other, DAY2, 30, mult=1.0)
    for label, data in cases.items():
        before = other.baseline(SBC.id)
        targets = other.targets()
        with pytest.raises(ValueError, match="cannot import detection engine state"):
            other.import_state(data)
        assert other.baseline(SBC.id) == before, label
        assert other.targets() == targets, label
    # the engine still works after the refusals
    out = step(other, DAY2 + 40, [tick(DAY2 + 40)])
    assert out.events == []
    assert other.advance(datetime.fromtimestamp(DAY2 + 50, UTC)).events == []
