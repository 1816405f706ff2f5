"""``voxguard backfill --days``: simulated history into minute buckets, the real engine fitted on
it, its state saved and loadable; and the command line around it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from voxguard.baseline.backfill import backfill_simulated, simulate_blocks
from voxguard.baseline.store import BaselineStore
from voxguard.cli.main import app
from voxguard.ingest.simulate.model import TrafficModel
from voxguard.shared.config import example_config_path, load_config
from voxguard.shared.db import make_engine

END = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)  # a Monday noon


@pytest.fixture
def store(db_url: str) -> Any:
    engine = make_engine(db_url)
    s = BaselineStore(engine)
    s.migrate()
    yield s
    engine.dispose()


def test_minutes_match_the_simulator_totals() -> None:
    cfg = load_config(example_config_path())
    blocks = list(simulate_blocks(cfg, 2 / 24, end=END, workers=1))
    assert [b[0] for b in blocks] == [int(END.timestamp()) - 7200, int(END.timestamp()) - 3600]
    t0, part = blocks[1]
    tot = TrafficModel(cfg).totals(t0, 3600, include_attacks=False)
    truth = tot.find("sbc", "sbc-eu-1", "udp/5060")
    meta, values = next(p for p in part if p[0]["id"] == truth.target.id)
    from voxguard.baseline.models import MINUTE_VALUES

    ix = {c: i for i, c in enumerate(MINUTE_VALUES)}
    assert values.shape == (60, len(MINUTE_VALUES))
    assert np.allclose(values[:, ix["packets"]], truth.packets.reshape(60, 60).sum(axis=1))
    assert np.allclose(values[:, ix["sip_invite"]], truth.sip_method("INVITE").reshape(60, 60).sum(axis=1))
    assert values[:, ix["packets"]].sum() > 0 and set(values[:, ix["seconds"]]) == {60.0}
    assert meta["tier"] == "sbc" and meta["protocol"] == "udp" and meta["ports"] == "5060"


def test_backfill_fits_the_engine_and_saves_its_state(store: BaselineStore) -> None:
    from voxguard.baseline.engine import DetectionEngine

    cfg = load_config(example_config_path())
    engine = DetectionEngine(cfg)
    report = backfill_simulated(cfg, store, engine, 0.25, end=END, workers=1)
    n = len(store.targets())
    assert n == report.targets == report.fitted > 10
    assert report.rows == n * 360 and report.start == END - dt.timedelta(hours=6) and report.end == END
    saved = store.load_state()
    assert saved is not None
    fresh = DetectionEngine(cfg)
    fresh.import_state(saved[0])
    tid = next(t.id for t in store.targets() if t.name == "sbc-eu-1 udp/5060")
    info = fresh.baseline(tid)
    assert info is not None and info["learned_seconds"] > 0 and info["slots_learned"] >= 5
    # the series reads back what was written, and the fitted engine expects similar rates
    pts = store.series(tid, END - dt.timedelta(hours=1), END, 3600)
    assert len(pts) == 1 and pts[0].values["seconds"] == 3600.0
    observed = pts[0].values["packets"] / 3600
    expected = fresh.expected(tid, "packets", [END - dt.timedelta(minutes=30)])[0]
    assert observed > 0 and 0.3 < expected / observed < 3


def test_cli_backfill_days(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "var" / "voxguard.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["backfill", "--days", "0.05", "--workers", "1", "--end", "2026-11-23T12:00:00"])
    assert res.exit_code == 0, res.output
    assert "backfilled" in res.output and "on sqlite" in res.output and "state saved" in res.output
    store = BaselineStore(make_engine(f"sqlite:///{db}"))
    assert store.load_state() is not None and store.targets()

    assert runner.invoke(app, ["backfill"]).exit_code == 2
    assert runner.invoke(app, ["backfill", "--days", "1", "--from", str(db)]).exit_code == 2
    assert runner.invoke(app, ["backfill", "--from", str(tmp_path / "missing.pcap")]).exit_code == 2
