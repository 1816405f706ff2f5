"""The engine against the simulator: a week of the example config's normal traffic learned from
1-minute aggregates, then the next Monday played tick by tick (1 s): every catalogue vector must
be detected within 5 ticks of its first attack tick, and normal traffic (the Monday-morning ramp)
and a legitimate flash crowd must open no incident. Restart safety mid-day is checked on the way.

The week of history takes about a minute to generate; it is cached in pytest's cache directory.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from voxguard.baseline.engine import DetectionEngine
from voxguard.ingest.simulate.attacks import Scenario, add_attacks
from voxguard.ingest.simulate.model import TrafficModel
from voxguard.shared.config import VECTORS, example_config_path, load_config

REPO = Path(__file__).resolve().parents[2]
CONFIG = load_config(example_config_path())
SEED = 1
MAX_TTD = 5.0


def _scenarios() -> ModuleType:
    spec = importlib.util.spec_from_file_location("voxguard_bench_scenarios", REPO / "benchmarks" / "scenarios.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


S = _scenarios()


@pytest.fixture(scope="module")
def history(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Any:
    cache = getattr(pytestconfig, "cache", None)
    folder = cache.mkdir("voxguard-engine") if cache is not None else tmp_path_factory.mktemp("history")
    model = TrafficModel(CONFIG, seed=SEED)
    return S.history_from_model(model, S.MONDAY, 7, Path(folder) / f"history-{SEED}.npz")


def _engine(history: Any) -> DetectionEngine:
    e = DetectionEngine(CONFIG)
    S.fit(e, history)
    return e


def test_history_learns_every_target_out_of_learning_mode(history: Any) -> None:
    e = _engine(history)
    rows = e.targets()
    assert len(rows) >= 58
    assert all(not r["learning"] for r in rows if r["id"] in history.meta)
    sbc = next(r for r in rows if r["name"] == "sbc-eu-1 udp/5060")
    b = e.baseline(sbc["id"])
    assert b is not None and b["slots_learned"] == 168
    prof = b["metrics"]["packets"]["profile"]
    monday_10, sunday_03 = prof[10], prof[6 * 24 + 3]
    assert monday_10 > 2 * sunday_03  # diurnal and weekly shape learned


@pytest.mark.timeout(600)
def test_every_vector_detected_within_5_ticks(history: Any) -> None:
    e = _engine(history)
    model = TrafficModel(CONFIG, seed=SEED)
    plan = S.attack_plan(14 * 3600)
    truths, results = S.run_attacks(e, model, S.MONDAY + S.WEEK, plan, pre=60, post=30)
    assert [r.vector for r in results] == list(VECTORS)
    missed = [r.vector for r in results if not r.detected]
    assert missed == []
    slow = {r.vector: r.ttd for r in results if r.ttd is None or r.ttd > MAX_TTD}
    assert slow == {}
    for t, r in zip(truths, results, strict=True):
        assert r.incidents, t.vector


@pytest.mark.timeout(600)
def test_no_false_incidents_on_monday_ramp_and_flash_crowd(history: Any) -> None:
    e = _engine(history)
    model = TrafficModel(CONFIG, seed=SEED)
    day = S.MONDAY + S.WEEK
    # 07:30-08:30 UTC: the steepest part of the Monday-morning ramp in eu-west
    false = S.run_normal(e, model, day + 7 * 3600 + 1800, 3600)
    assert false == []
    # restart mid-day: export, import into a fresh engine, continue without relearning
    r = DetectionEngine(CONFIG)
    r.import_state(e.export_state())
    assert [t["progress"] for t in r.targets()] == [t["progress"] for t in e.targets()]
    # a legitimate flash crowd: 3x calls from registered endpoints, answered, media follows
    truth = add_attacks(model, [Scenario("flash_crowd", start_s=9 * 3600, duration_s=600)], day)[0]
    opened = []
    for _t, events in S.play(r, model, truth.start - 60, 600 + 120):
        opened += [ev.incident for ev in events if ev.event == "opened"]
    assert opened == [], [(i.target, i.vectors, i.peak_ratio) for i in opened]
