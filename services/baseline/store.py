"""The baseline service's storage: minute buckets, targets, engine state, incidents.

Synchronous SQLAlchemy (async callers use ``asyncio.to_thread``). Minute rows are written with
an *additive* upsert (``ON CONFLICT ... DO UPDATE SET x = x + excluded.x``) on both backends,
so a partial minute flushed at stop and completed after a restart, or a backfill over a range
that already has rows, adds up instead of failing or overwriting.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine, Table, func, select, text
from sqlalchemy.dialects import postgresql, sqlite

from voxguard.baseline import timescale
from voxguard.baseline.models import (
    COUNTERS,
    MINUTE_VALUES,
    EngineStateRow,
    IncidentEventRow,
    IncidentRow,
    MinuteRow,
    ShardStateRow,
    TargetRow,
)
from voxguard.shared.db import session_factory, upgrade_to_head
from voxguard.shared.messages import IncidentEvent, IncidentView, utcnow

MIGRATIONS = "voxguard.baseline.migrations"
ENGINE_STATE = "engine"
MINUTE = dt.timedelta(minutes=1)
_BATCH = 5_000  # rows per executemany (SQLite)
_PG_BATCH = 10_000  # rows per unnest() statement (PostgreSQL)
_TARGET_TEXT = ("id", "tier", "name", "component", "host", "protocol", "ports", "role", "region")
MINUTES_TABLE = "baseline_minutes"
_EPOCH = dt.datetime(2000, 1, 3, tzinfo=dt.UTC)  # a Monday: week-aligned origin for date_bin


def minute_floor(t: dt.datetime) -> dt.datetime:
    """The start of the minute ``t`` falls in (UTC)."""
    t = t.astimezone(dt.UTC)
    return t.replace(second=0, microsecond=0)


@dataclass(frozen=True)
class SeriesPoint:
    """Sums over one step of a series query (divide counters by ``seconds`` for rates)."""

    start: dt.datetime
    values: dict[str, float]


def rates(values: Mapping[str, float]) -> dict[str, float]:
    """Per-second rates of one bucket's sums, keyed like the engine's metrics (``packets`` is
    packets/s); ``distinct_sources`` is the mean per tick, ``bytes_per_packet`` a ratio.

    Buckets with no observed seconds give no rates (an outage is not zero traffic).
    """
    arrays = rate_arrays({k: np.array([float(values.get(k, 0.0))]) for k in MINUTE_VALUES})
    return {k: float(v[0]) for k, v in arrays.items() if not np.isnan(v[0])}


def rate_arrays(sums: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """:func:`rates` over arrays of minute sums (NaN where a minute was not observed)."""
    seconds = np.asarray(sums["seconds"], dtype=np.float64)
    ticks = np.asarray(sums["ticks"], dtype=np.float64)
    seen = seconds > 0
    safe_s = np.where(seen, seconds, 1.0)
    out = {c: np.where(seen, np.asarray(sums[c], dtype=np.float64) / safe_s, np.nan) for c in COUNTERS}
    out["distinct_sources"] = np.where(ticks > 0, np.asarray(sums["distinct_sources"]) / np.maximum(ticks, 1), np.nan)
    pk = np.asarray(sums["packets"], dtype=np.float64)
    bpp = np.asarray(sums["bytes"], dtype=np.float64) / np.where(pk > 0, pk, 1.0)
    out["bytes_per_packet"] = np.where(seen, np.where(pk > 0, bpp, 0.0), np.nan)
    return out


@dataclass(frozen=True)
class ShardState:
    """One shard's saved hand-over (see ``ShardStateRow``)."""

    key: str
    worker: str
    saved_at: dt.datetime | None
    state: bytes | None
    incidents: list[dict[str, Any]]
    incidents_at: dt.datetime | None


class BaselineStore:
    """All reads and writes of the ``baseline_*`` tables."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = session_factory(engine)
        self.timescale = False

    # -- schema ---------------------------------------------------------------------------

    def migrate(self) -> None:
        """Upgrade to head and note whether the minute table is a TimescaleDB hypertable."""
        upgrade_to_head(self.engine, MIGRATIONS)
        with self.engine.connect() as conn:
            self.timescale = timescale.is_hypertable(conn)

    @property
    def backend(self) -> str:
        """``timescaledb``, ``postgresql`` or ``sqlite``."""
        if self.timescale:
            return "timescaledb"
        return str(self.engine.dialect.name)

    # -- targets --------------------------------------------------------------------------

    def upsert_targets(self, targets: Sequence[Mapping[str, Any]], seen: dt.datetime) -> None:
        """Register targets (id, tier, name, component, host, protocol, ports, role, region); a
        known one gets the new name and a later ``last_seen``. 100,000 new per-host targets at
        once must not cost seconds of ORM work, so rows go through the DB-API (SQLite) or one
        ``unnest`` statement per batch (PostgreSQL), as the minute rows do."""
        if not targets:
            return
        cols: list[list[Any]] = [
            [t["id"] for t in targets],
            [str(t["tier"]) for t in targets],
            [str(t.get("name") or t["id"])[:200] for t in targets],
            [str(t.get("component") or "") for t in targets],
            [t.get("host") for t in targets],
            [str(t.get("protocol") or "") for t in targets],
            [t.get("ports") for t in targets],
            [str(t.get("role") or "") for t in targets],
            [t.get("region") for t in targets],
        ]
        seen_utc = seen.astimezone(dt.UTC)
        table = TargetRow.__tablename__
        if self.engine.dialect.name == "postgresql":
            sel = ", ".join(f"CAST(:{c} AS text[])" for c in _TARGET_TEXT)
            sql = text(
                f"INSERT INTO {table} ({', '.join(_TARGET_TEXT)}, first_seen, last_seen) "
                f"SELECT *, CAST(:seen AS timestamptz), CAST(:seen AS timestamptz) FROM unnest({sel}) "
                f"ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
                f"last_seen = greatest({table}.last_seen, excluded.last_seen)"
            )
            with self.engine.begin() as conn:
                for i in range(0, len(targets), _PG_BATCH):
                    params: dict[str, Any] = {c: _text_array(col[i : i + _PG_BATCH]) for c, col in
                                              zip(_TARGET_TEXT, cols, strict=True)}  # fmt: skip
                    params["seen"] = seen_utc.isoformat()
                    conn.execute(sql, params)
            return
        stamp = seen_utc.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        sql_lite = (
            f"INSERT INTO {table} ({', '.join(_TARGET_TEXT)}, first_seen, last_seen) "
            f"VALUES ({', '.join('?' * (len(_TARGET_TEXT) + 2))}) "
            f"ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
            f"last_seen = max({table}.last_seen, excluded.last_seen)"
        )
        rows = [(*r, stamp, stamp) for r in zip(*cols, strict=True)]
        with self.engine.begin() as conn:
            for i in range(0, len(rows), _BATCH):
                conn.exec_driver_sql(sql_lite, rows[i : i + _BATCH])

    def targets(self, tier: str | None = None) -> list[TargetRow]:
        with self._sessions() as s:
            q = select(TargetRow).order_by(TargetRow.tier, TargetRow.id)
            if tier:
                q = q.where(TargetRow.tier == tier)
            return list(s.scalars(q).all())

    def target(self, target_id: str) -> TargetRow | None:
        with self._sessions() as s:
            return s.get(TargetRow, target_id)

    # -- minute buckets -------------------------------------------------------------------

    def add_minutes(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Additively upsert minute rows (``target_id``, ``bucket`` and any of MINUTE_VALUES)."""
        if not rows:
            return 0
        minutes = np.array([int(r["bucket"].timestamp()) for r in rows], dtype=np.int64)
        values = np.array([[float(r.get(c, 0.0)) for c in MINUTE_VALUES] for r in rows], dtype=np.float64)
        return self.add_minute_block([str(r["target_id"]) for r in rows], minutes, values)

    def add_minute_block(self, target_ids: Sequence[str], minutes: np.ndarray, values: np.ndarray) -> int:
        """Columnar form of :meth:`add_minutes` (the fast path for backfills and the benchmark):
        row ``i`` is ``target_ids[i]`` at epoch second ``minutes[i]`` with ``values[i]`` in
        MINUTE_VALUES order. One transaction."""
        n = len(target_ids)
        if n == 0:
            return 0
        if len(minutes) != n or values.shape != (n, len(MINUTE_VALUES)):
            raise ValueError("target_ids, minutes and values must have one row each")
        stamps = np.asarray(minutes, dtype=np.int64).astype("datetime64[s]")
        cols: list[list[Any]] = [values[:, i].tolist() for i in range(len(MINUTE_VALUES))]
        cols[0] = values[:, 0].astype(np.int64).tolist()  # ticks
        if self.engine.dialect.name == "postgresql":
            iso = np.datetime_as_string(stamps, timezone="UTC").tolist()
            return self._add_block_pg(list(target_ids), iso, cols)
        text_ts = np.char.replace(np.datetime_as_string(stamps, unit="us"), "T", " ").tolist()
        return self._add_block_sqlite(list(target_ids), text_ts, cols)

    def _add_block_sqlite(self, tids: list[str], stamps: list[str], cols: list[list[Any]]) -> int:
        """The DB-API's own executemany; timestamps in SQLAlchemy's SQLite storage format (naive
        UTC text), so the rows read back through the ORM like any other."""
        names = ("target_id", "bucket", *MINUTE_VALUES)
        upd = ", ".join(f"{c} = {MINUTES_TABLE}.{c} + excluded.{c}" for c in MINUTE_VALUES)
        sql = (
            f"INSERT INTO {MINUTES_TABLE} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
            f"ON CONFLICT (target_id, bucket) DO UPDATE SET {upd}"
        )
        params = list(zip(tids, stamps, *cols, strict=True))
        with self.engine.begin() as conn:
            for i in range(0, len(params), _BATCH):
                conn.exec_driver_sql(sql, params[i : i + _BATCH])
        return len(params)

    def _add_block_pg(self, tids: list[str], stamps: list[str], cols: list[list[Any]]) -> int:
        """One ``INSERT ... SELECT FROM unnest(arrays)`` per batch: a single statement with one
        array parameter per column, whatever the row count (no executemany round trips, no
        pipeline mode, which TimescaleDB-in-PGlite does not survive)."""
        names = ("target_id", "bucket", *MINUTE_VALUES)
        casts = {"target_id": "text[]", "bucket": "timestamptz[]", "ticks": "int[]"}
        sel = ", ".join(f"CAST(:{c} AS {casts.get(c, 'float8[]')})" for c in names)
        upd = ", ".join(f"{c} = {MINUTES_TABLE}.{c} + excluded.{c}" for c in MINUTE_VALUES)
        sql = text(
            f"INSERT INTO {MINUTES_TABLE} ({', '.join(names)}) SELECT * FROM unnest({sel}) "
            f"ON CONFLICT (target_id, bucket) DO UPDATE SET {upd}"
        )

        def literals(i: int) -> dict[str, Any]:
            # array literals built here: psycopg's per-element list dumping costs ~10x the insert
            sl = slice(i, i + _PG_BATCH)
            params: dict[str, Any] = {"target_id": _text_array(tids[sl]), "bucket": _text_array(stamps[sl])}
            params.update({c: _num_array(col[sl]) for c, col in zip(MINUTE_VALUES, cols, strict=True)})
            return params

        starts = list(range(0, len(tids), _PG_BATCH))
        # format batch i+1 in a thread while the server runs batch i (the wait releases the GIL)
        with self.engine.begin() as conn, ThreadPoolExecutor(1) as pool:
            pending = pool.submit(literals, starts[0])
            for k in range(len(starts)):
                params = pending.result()
                if k + 1 < len(starts):
                    pending = pool.submit(literals, starts[k + 1])
                conn.execute(sql, params)
        return len(tids)

    def minute_sums(self, target_id: str, start: dt.datetime, end: dt.datetime) -> dict[str, np.ndarray]:
        """The raw minute rows of ``[start, end)``: ``minutes`` (epoch seconds) and each value."""
        cols = [MinuteRow.bucket, *(getattr(MinuteRow, c) for c in MINUTE_VALUES)]
        q = (
            select(*cols)
            .where(MinuteRow.target_id == target_id, MinuteRow.bucket >= start, MinuteRow.bucket < end)
            .order_by(MinuteRow.bucket)
        )
        with self._sessions() as s:
            res = s.execute(q).all()
        out: dict[str, np.ndarray] = {
            "minutes": np.array([r[0].timestamp() for r in res], dtype=np.int64),
        }
        for i, c in enumerate(MINUTE_VALUES, start=1):
            out[c] = np.array([float(r[i]) for r in res], dtype=np.float64)
        return out

    def series(self, target_id: str, start: dt.datetime, end: dt.datetime, step_s: int) -> list[SeriesPoint]:
        """Sums per ``step_s`` bucket over ``[start, end)`` (steps of whole minutes).

        TimescaleDB: ``time_bucket`` (from the hourly aggregate when the step is whole hours);
        PostgreSQL: ``date_bin``; SQLite: bucketed here. Buckets are aligned to a Monday 00:00
        UTC origin on every backend, so the three answer identically.
        """
        if step_s < 60 or step_s % 60:
            raise ValueError("step must be a whole number of minutes")
        if self.engine.dialect.name == "postgresql":
            return self._series_sql(target_id, start, end, step_s)
        return self._series_py(target_id, start, end, step_s)

    def _series_sql(self, target_id: str, start: dt.datetime, end: dt.datetime, step_s: int) -> list[SeriesPoint]:
        sums = ", ".join(f"sum({c}) AS {c}" for c in MINUTE_VALUES)
        params: dict[str, Any] = {
            "tid": target_id,
            "start": start,
            "end": end,
            "origin": _EPOCH,
            "step": dt.timedelta(seconds=step_s),
        }
        aligned = all(t.minute == 0 and t.second == 0 and t.microsecond == 0 for t in (start, end))
        if self.timescale and step_s % 3600 == 0 and aligned:
            source, tcol = timescale.HOURLY, "hour"
            bucket = "time_bucket(:step, hour, :origin)"
        elif self.timescale:
            source, tcol = timescale.MINUTES, "bucket"
            bucket = "time_bucket(:step, bucket, :origin)"
        else:
            source, tcol = timescale.MINUTES, "bucket"
            bucket = "date_bin(:step, bucket, :origin)"
        sql = text(
            f"SELECT {bucket} AS b, {sums} FROM {source} "
            f"WHERE target_id = :tid AND {tcol} >= :start AND {tcol} < :end GROUP BY b ORDER BY b"
        )
        with self.engine.connect() as conn:
            res = conn.execute(sql, params).all()
        return [
            SeriesPoint(r[0].astimezone(dt.UTC), {c: float(r[i] or 0.0) for i, c in enumerate(MINUTE_VALUES, start=1)})
            for r in res
        ]

    def _series_py(self, target_id: str, start: dt.datetime, end: dt.datetime, step_s: int) -> list[SeriesPoint]:
        raw = self.minute_sums(target_id, start, end)
        if not len(raw["minutes"]):
            return []
        origin = int(_EPOCH.timestamp())
        keys = origin + ((raw["minutes"] - origin) // step_s) * step_s
        uniq, inv = np.unique(keys, return_inverse=True)
        out = []
        summed = {c: np.bincount(inv, weights=raw[c], minlength=len(uniq)) for c in MINUTE_VALUES}
        for j, k in enumerate(uniq.tolist()):
            out.append(
                SeriesPoint(dt.datetime.fromtimestamp(k, dt.UTC), {c: float(summed[c][j]) for c in MINUTE_VALUES})
            )
        return out

    def delete_minutes_before(self, cutoff: dt.datetime) -> int:
        """Retention on backends without TimescaleDB's policy job."""
        with self._sessions.begin() as s:
            res = s.execute(MinuteRow.__table__.delete().where(MinuteRow.bucket < cutoff))  # type: ignore[attr-defined]
            return int(getattr(res, "rowcount", 0) or 0)

    # -- engine state ---------------------------------------------------------------------

    def save_state(self, data: bytes, at: dt.datetime, name: str = ENGINE_STATE) -> None:
        with self._sessions.begin() as s:
            row = s.get(EngineStateRow, name)
            if row is None:
                s.add(EngineStateRow(name=name, saved_at=at, data=data))
            else:
                row.saved_at, row.data = at, data

    def load_state(self, name: str = ENGINE_STATE) -> tuple[bytes, dt.datetime] | None:
        with self._sessions() as s:
            row = s.get(EngineStateRow, name)
            return None if row is None else (bytes(row.data), row.saved_at)

    # -- incidents ------------------------------------------------------------------------

    def record_events(
        self,
        events: Iterable[IncidentEvent],
        shard_incidents: Mapping[str, tuple[str, list[dict[str, Any]]]] | None = None,
    ) -> int:
        """Store each event (idempotent on its id) and the incident's latest view; one commit.

        ``shard_incidents`` (sharded workers): ``{shard key: (worker, open incidents)}`` written in
        the same commit, so whoever takes the shard over sees exactly the incidents these events
        describe."""
        stored = 0
        with self._sessions.begin() as s:
            for key, (worker, incidents) in (shard_incidents or {}).items():
                self._put_shard(s, key, worker, incidents=incidents, at=utcnow())
            for ev in events:
                if s.scalar(select(IncidentEventRow.seq).where(IncidentEventRow.event_id == ev.id)) is not None:
                    continue
                view = ev.incident
                snap = view.model_dump(mode="json")
                s.add(IncidentEventRow(event_id=ev.id, incident_id=view.id, event=ev.event, ts=ev.ts, snapshot=snap))
                row = s.get(IncidentRow, view.id)
                if row is None:
                    row = IncidentRow(id=view.id)
                    s.add(row)
                row.tier = view.tier.value
                row.target_id = view.target_id
                row.state = view.state
                row.severity = view.severity
                row.opened_at = view.opened_at
                row.updated_at = view.updated_at or ev.ts
                row.resolved_at = view.resolved_at
                row.peak_ratio = max(float(row.peak_ratio or 0.0), view.peak_ratio)
                row.view = snap
                s.flush()
                stored += 1
        return stored

    def open_incidents(self) -> list[IncidentView]:
        """Every incident not resolved (for a worker taking over a shard)."""
        with self._sessions() as s:
            rows = s.scalars(select(IncidentRow).where(IncidentRow.state != "resolved")).all()
            return [IncidentView.model_validate(r.view) for r in rows]

    def events_since(self, since: dt.datetime) -> list[IncidentEvent]:
        """Incident events stored at or after ``since``, oldest first, with their original ids."""
        with self._sessions() as s:
            rows = s.scalars(
                select(IncidentEventRow).where(IncidentEventRow.ts >= since).order_by(IncidentEventRow.seq)
            ).all()
            out = []
            for r in rows:
                view = IncidentView.model_validate(r.snapshot)
                out.append(IncidentEvent(id=r.event_id, ts=r.ts, event=r.event, tier=view.tier, incident=view))  # type: ignore[arg-type]
            return out

    # -- shards ---------------------------------------------------------------------------

    def save_shard(
        self, key: str, worker: str, *, state: bytes | None, incidents: list[dict[str, Any]], at: dt.datetime
    ) -> None:
        """A shard's learned rows and open incidents, as its owner hands it over."""
        with self._sessions.begin() as s:
            self._put_shard(s, key, worker, incidents=incidents, at=at, state=state)

    def load_shard(self, key: str) -> ShardState | None:
        with self._sessions() as s:
            row = s.get(ShardStateRow, key)
            if row is None:
                return None
            state = None if row.state is None else bytes(row.state)
            return ShardState(key, row.worker, row.saved_at, state, list(row.incidents or []), row.incidents_at)

    @staticmethod
    def _put_shard(
        s: Any, key: str, worker: str, *, incidents: list[dict[str, Any]], at: dt.datetime, state: bytes | None = None
    ) -> None:
        row = s.get(ShardStateRow, key)
        if row is None:
            row = ShardStateRow(key=key, worker=worker, incidents=[])
            s.add(row)
        row.worker = worker
        row.incidents = incidents
        row.incidents_at = at
        if state is not None:
            row.state, row.saved_at = state, at

    def incidents(
        self,
        *,
        state: str | None = None,
        tier: str | None = None,
        since: dt.datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[IncidentView], int]:
        """Newest first, with the total count for paging."""
        q = select(IncidentRow)
        if state:
            q = q.where(IncidentRow.state == state)
        if tier:
            q = q.where(IncidentRow.tier == tier)
        if since:
            q = q.where(IncidentRow.opened_at >= since)
        with self._sessions() as s:
            total = int(s.scalar(select(func.count()).select_from(q.subquery())) or 0)
            rows = s.scalars(q.order_by(IncidentRow.opened_at.desc(), IncidentRow.id).limit(limit).offset(offset)).all()
            return [IncidentView.model_validate(r.view) for r in rows], total

    def incident(self, incident_id: str) -> tuple[IncidentView, list[dict[str, Any]]] | None:
        """An incident and its timeline (every stored event, in order)."""
        with self._sessions() as s:
            row = s.get(IncidentRow, incident_id)
            if row is None:
                return None
            evs = s.scalars(
                select(IncidentEventRow)
                .where(IncidentEventRow.incident_id == incident_id)
                .order_by(IncidentEventRow.seq)
            ).all()
            timeline = [{"event": e.event, "at": e.ts, "event_id": e.event_id, "incident": e.snapshot} for e in evs]
            return IncidentView.model_validate(row.view), timeline

    # -- helpers --------------------------------------------------------------------------

    def _insert(self, table: Table) -> Any:
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)


def _text_array(items: Sequence[str | None]) -> str:
    """A PostgreSQL array literal of strings (every element quoted and escaped; None is NULL)."""
    return "{" + ",".join("NULL" if x is None else '"' + x.replace("\\", "\\\\").replace('"', '\\"') + '"'
                          for x in items) + "}"  # fmt: skip


def _num_array(items: Sequence[float | int]) -> str:
    """A PostgreSQL array literal of numbers (repr round-trips floats exactly)."""
    return "{" + ",".join(map(repr, items)) + "}"
