"""Fixtures of the baseline tests: a real TimescaleDB (WASM PostgreSQL + TimescaleDB 2.23).

``timescale_url`` serves ``../shared/tools/timescaledb-pglite`` on a loopback port, installed with
npm into a temporary folder once per session. It takes one connection at a time, so engines on it
must use ``poolclass=NullPool`` (what :func:`timescale_engine` does) and no two connections may
be open together. Each test gets a fresh schema. Without node/npm the tests skip (fail in CI).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.pool import NullPool

from vghelpers import require
from voxguard.shared.db import make_engine

TSDB_USER = "postgres:postgres"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


@pytest.fixture(scope="session")
def timescale_server(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a TimescaleDB-in-PGlite server for the session."""
    src = shared_dir / "tools" / "timescaledb-pglite"
    require(src.is_dir(), f"{src} is missing")
    node, npm = shutil.which("node"), shutil.which("npm")
    require(node and npm, "node and npm are needed for the TimescaleDB test server (apt-get install nodejs npm)")
    assert node and npm
    work = tmp_path_factory.mktemp("tsdb")
    for name in ("package.json", "server.mjs"):
        shutil.copy(src / name, work / name)
    cache = os.environ.get("VOXGUARD_TSDB_NODE_MODULES")
    if cache and Path(cache).is_dir():
        (work / "node_modules").symlink_to(cache)
    else:
        res = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--legacy-peer-deps"],
            cwd=work,
            capture_output=True,
            timeout=300,
        )
        require(res.returncode == 0, f"npm install of the TimescaleDB test server failed: {res.stderr[-500:]!r}")
    port = _free_port()
    log = open(work / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([node, "server.mjs", str(port)], cwd=work, stdout=log, stderr=subprocess.STDOUT)
    try:
        up = _wait_port(port, proc, 60.0)
        require(up, f"TimescaleDB test server did not start: {(work / 'server.log').read_text()[-500:]}")
        # The extension lives in public once, so per-test schemas can be dropped without it.
        eng = timescale_engine(f"postgresql+psycopg://{TSDB_USER}@127.0.0.1:{port}/postgres?sslmode=disable")
        with eng.begin() as conn:
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS timescaledb SCHEMA public")
        eng.dispose()
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def timescale_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for the one-connection test server (NullPool, no concurrent connections).

    The server is one PostgreSQL backend for every client connection, so psycopg's server-side
    prepared statements (``_pg3_0``...) would collide across connections: they are turned off.
    """
    return make_engine(url, poolclass=NullPool, connect_args={"prepare_threshold": None}, **kwargs)


@pytest.fixture
def timescale_db(timescale_server: str) -> Iterator[Engine]:
    """An engine on the TimescaleDB server, confined to a fresh schema (then ``public``).

    The server ignores the ``options`` startup parameter, so the search_path is set on connect.
    """
    schema = f"t_{uuid.uuid4().hex[:16]}"
    url = f"postgresql+psycopg://{TSDB_USER}@{timescale_server}/postgres?sslmode=disable"
    admin = timescale_engine(url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    engine = timescale_engine(url)
    set_search_path(engine, schema)
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


def set_search_path(engine: Engine, schema: str) -> None:
    """Every new connection of ``engine`` works in ``schema`` (extensions stay in ``public``)."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _rec: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f'SET search_path TO "{schema}", public')
        cur.close()
        dbapi_conn.commit()


@pytest.fixture(params=["sqlite", "postgresql", "timescaledb"])
def store_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """Storage tests run on SQLite, the real PostgreSQL and TimescaleDB."""
    if request.param == "timescaledb":
        yield request.getfixturevalue("timescale_db")
        return
    url = str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))
    engine = make_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


class FakeEngine:
    """A tiny stand-in with the DetectionEngine interface, so service and API tests control
    exactly when incidents open and resolve: a target whose tick has more than ``threshold``
    packets opens an incident, the first tick below it resolves it."""

    def __init__(self, threshold: int = 1000) -> None:
        import datetime as dt

        from voxguard.shared.messages import Anomaly, IncidentEvent, IncidentView, TrafficTick

        self._dt = dt
        self._Anomaly, self._Event, self._View, self._Tick = Anomaly, IncidentEvent, IncidentView, TrafficTick
        self.threshold = threshold
        self.pending: list[Any] = []
        self.seen: dict[str, Any] = {}
        self.open: dict[str, Any] = {}
        self.turn: dict[str, int] = {}
        self.advanced = 0
        self.learned: dict[str, int] = {}
        self.history: dict[str, tuple[Any, dict[str, Any]]] = {}

    def observe(self, ticks: Any) -> None:
        self.pending.extend(ticks)

    def advance(self, now: Any, ready_through: Any = None) -> Any:
        from types import SimpleNamespace

        self.advanced += 1
        anomalies, events = [], []
        for t in self.pending:
            self.seen[t.target_id] = t
            self.learned[t.target_id] = self.learned.get(t.target_id, 0) + 1
            base = 100.0
            if t.packets > self.threshold:
                anomalies.append(
                    self._Anomaly(
                        tier=t.tier,
                        vector="sip_flood",
                        target_id=t.target_id,
                        target=t.target,
                        metric="packets_per_s",
                        observed=t.packets,
                        baseline=base,
                        ratio=t.packets / base,
                        tick_start=t.tick_start,
                    )
                )
                view = self.open.get(t.target_id)
                kind = "updated" if view else "opened"
                if view is None:
                    view = self._View(
                        id=f"inc-{t.target_id}-{len(self.history)}",
                        tier=t.tier,
                        target_id=t.target_id,
                        target=t.target,
                        vectors=["sip_flood"],
                        state="open",
                        severity="major",
                        opened_at=t.tick_start,
                    )
                update = {
                    "updated_at": t.tick_start,
                    "peak_ratio": max(view.peak_ratio, t.packets / base),
                    "peak_value": float(max(view.peak_value, t.packets)),
                    "baseline_value": base,
                    "metric": "packets_per_s",
                    "top_sources": t.top_sources,
                }
                view = view.model_copy(update=update)
                self.open[t.target_id] = view
                events.append(self._Event(event=kind, tier=t.tier, incident=view))  # type: ignore[arg-type]
            elif t.target_id in self.open:
                view = self.open.pop(t.target_id).model_copy(update={"state": "resolved", "resolved_at": t.tick_start})
                events.append(self._Event(event="resolved", tier=t.tier, incident=view))
        self.pending = []
        return SimpleNamespace(anomalies=anomalies, events=events)

    def fit_history(self, target_id: str, meta: dict[str, Any], minutes: Any, values: dict[str, Any]) -> None:
        self.history[target_id] = (minutes, dict(values))

    def set_turn_sessions(self, relay: str, sessions: int) -> None:
        if relay.startswith("unknown"):
            raise KeyError(f"no TURN relay {relay!r}")
        self.turn[relay] = sessions

    def targets(self) -> list[dict[str, Any]]:
        return [{"id": k, "tier": v.tier.value, "learning": True, "progress": 0.5} for k, v in self.seen.items()]

    def baseline(self, target_id: str) -> dict[str, Any] | None:
        if target_id not in self.seen and target_id not in self.history:
            return None
        return {"learning": True, "progress": 0.5, "metrics": {"packets": {"profile": [1.0] * 168}}}

    def expected(self, target_id: str, metric: str, at: Any) -> list[float]:
        if target_id not in self.seen and target_id not in self.history:
            raise KeyError(target_id)
        return [float(len(metric))] * len(at)

    def open_incidents(self) -> list[Any]:
        return list(self.open.values())

    def export_state(self) -> bytes:
        import json

        return json.dumps({"learned": self.learned, "turn": self.turn}).encode()

    def import_state(self, data: bytes) -> None:
        import json

        st = json.loads(data)
        self.learned, self.turn = dict(st["learned"]), dict(st["turn"])


@pytest.fixture
def fake_engine() -> type[FakeEngine]:
    """The FakeEngine class (tests make as many as they need)."""
    return FakeEngine
