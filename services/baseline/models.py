"""The baseline service's tables (prefix ``baseline_``), one set for SQLite and PostgreSQL.

Minute buckets are one *wide* row per (target, minute) with a column per metric rather than one
row per metric: at 100,000 targets that is 100,000 rows a minute instead of ~1.5 million, and a
series query reads one row per bucket. Counters hold sums over the minute; ``seconds`` holds how
much of the minute was actually observed, so a silent exporter reads as a gap, not as zero.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Float, Index, Integer, LargeBinary, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from voxguard.shared.db import UtcDateTime, service_metadata

# Per-minute sums stored for every target (the rolled-up TrafficTick counters).
COUNTERS: tuple[str, ...] = (
    "bytes",
    "packets",
    "flows",
    "new_connections",
    "icmp_packets",
    "long_lived_flows",
    "distinct_sources",  # sum of per-tick estimates: divide by ``ticks`` for the mean
    "sip_invite",
    "sip_register",
    "sip_options",
    "sip_bye",
    "sip_other",
    "sip_scanner_packets",
    "sip_malformed_packets",
    "odd_size_packets",  # packets outside the SIP size range (size histogram's first and last buckets)
)
# Columns that describe coverage rather than traffic.
COVERAGE: tuple[str, ...] = ("ticks", "seconds")
MINUTE_VALUES: tuple[str, ...] = COVERAGE + COUNTERS


class BaselineBase(DeclarativeBase):
    metadata = service_metadata("baseline")


class TargetRow(BaselineBase):
    """Every target the service has seen or backfilled (stable id from its definition)."""

    __tablename__ = "baseline_targets"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    tier: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(200))
    component: Mapped[str] = mapped_column(String(100))
    host: Mapped[str | None] = mapped_column(String(64), nullable=True)
    protocol: Mapped[str] = mapped_column(String(16))
    ports: Mapped[str | None] = mapped_column(String(32), nullable=True)
    role: Mapped[str] = mapped_column(String(32))
    region: Mapped[str | None] = mapped_column(String(64), nullable=True)
    first_seen: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    last_seen: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class MinuteRow(BaselineBase):
    """One target's traffic during one minute (hypertable on ``bucket`` under TimescaleDB)."""

    __tablename__ = "baseline_minutes"
    __table_args__ = (Index("ix_baseline_minutes_bucket", "bucket"),)

    target_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    bucket: Mapped[dt.datetime] = mapped_column(UtcDateTime(), primary_key=True)
    ticks: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float] = mapped_column(Float(53), default=0.0)
    bytes: Mapped[float] = mapped_column(Float(53), default=0.0)
    packets: Mapped[float] = mapped_column(Float(53), default=0.0)
    flows: Mapped[float] = mapped_column(Float(53), default=0.0)
    new_connections: Mapped[float] = mapped_column(Float(53), default=0.0)
    icmp_packets: Mapped[float] = mapped_column(Float(53), default=0.0)
    long_lived_flows: Mapped[float] = mapped_column(Float(53), default=0.0)
    distinct_sources: Mapped[float] = mapped_column(Float(53), default=0.0)
    sip_invite: Mapped[float] = mapped_column(Float(53), default=0.0)
    sip_register: Mapped[float] = mapped_column(Float(53), default=0.0)
    sip_options: Mapped[float] = mapped_column(Float(53), default=0.0)
    sip_bye: Mapped[float] = mapped_column(Float(53), default=0.0)
    sip_other: Mapped[float] = mapped_column(Float(53), default=0.0)
    sip_scanner_packets: Mapped[float] = mapped_column(Float(53), default=0.0)
    sip_malformed_packets: Mapped[float] = mapped_column(Float(53), default=0.0)
    odd_size_packets: Mapped[float] = mapped_column(Float(53), default=0.0)


class EngineStateRow(BaselineBase):
    """The detection engine's learned state, so a restart does not reset learning."""

    __tablename__ = "baseline_engine_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    saved_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    data: Mapped[bytes] = mapped_column(LargeBinary)


class IncidentRow(BaselineBase):
    """The latest view of an incident (the full IncidentView as JSON, key fields as columns)."""

    __tablename__ = "baseline_incidents"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tier: Mapped[str] = mapped_column(String(32), index=True)
    target_id: Mapped[str] = mapped_column(String(80), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    severity: Mapped[str] = mapped_column(String(16))
    opened_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), index=True)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    peak_ratio: Mapped[float] = mapped_column(Float(53), default=0.0)
    view: Mapped[dict[str, Any]] = mapped_column(JSON)


class IncidentEventRow(BaselineBase):
    """One IncidentEvent (opened / updated / mitigated / resolved) with its snapshot."""

    __tablename__ = "baseline_incident_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    incident_id: Mapped[str] = mapped_column(String(64), index=True)
    event: Mapped[str] = mapped_column(String(16))
    ts: Mapped[dt.datetime] = mapped_column(UtcDateTime(), index=True)
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON)


class ShardStateRow(BaselineBase):
    """What a sharded baseline worker hands over with a partition (``<partition>/<shards>``): the
    learned rows (saved periodically and on release) and the open incidents (saved with every
    incident event, in the same transaction), so the next owner continues them under the same id."""

    __tablename__ = "baseline_shard_state"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    worker: Mapped[str] = mapped_column(String(128))
    saved_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    state: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    incidents: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    incidents_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)
