"""baseline tables: targets, minute buckets, engine state, incidents and their events

Revision ID: baseline_0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from voxguard.shared.db import UtcDateTime

revision: str = "baseline_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COUNTERS = (
    "bytes",
    "packets",
    "flows",
    "new_connections",
    "icmp_packets",
    "long_lived_flows",
    "distinct_sources",
    "sip_invite",
    "sip_register",
    "sip_options",
    "sip_bye",
    "sip_other",
    "sip_scanner_packets",
    "sip_malformed_packets",
    "odd_size_packets",
)


def upgrade() -> None:
    op.create_table(
        "baseline_targets",
        sa.Column("id", sa.String(80), nullable=False),
        sa.Column("tier", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("component", sa.String(100), nullable=False),
        sa.Column("host", sa.String(64), nullable=True),
        sa.Column("protocol", sa.String(16), nullable=False),
        sa.Column("ports", sa.String(32), nullable=True),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("region", sa.String(64), nullable=True),
        sa.Column("first_seen", UtcDateTime(), nullable=False),
        sa.Column("last_seen", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_baseline_targets")),
    )
    op.create_index(op.f("ix_baseline_targets_tier"), "baseline_targets", ["tier"])
    op.create_table(
        "baseline_minutes",
        sa.Column("target_id", sa.String(80), nullable=False),
        sa.Column("bucket", UtcDateTime(), nullable=False),
        sa.Column("ticks", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(53), nullable=False),
        *(sa.Column(c, sa.Float(53), nullable=False) for c in _COUNTERS),
        sa.PrimaryKeyConstraint("target_id", "bucket", name=op.f("pk_baseline_minutes")),
    )
    op.create_index("ix_baseline_minutes_bucket", "baseline_minutes", ["bucket"])
    op.create_table(
        "baseline_engine_state",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("saved_at", UtcDateTime(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_baseline_engine_state")),
    )
    op.create_table(
        "baseline_incidents",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("tier", sa.String(32), nullable=False),
        sa.Column("target_id", sa.String(80), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("opened_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=True),
        sa.Column("resolved_at", UtcDateTime(), nullable=True),
        sa.Column("peak_ratio", sa.Float(53), nullable=False),
        sa.Column("view", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_baseline_incidents")),
    )
    for col in ("tier", "target_id", "state", "opened_at"):
        op.create_index(op.f(f"ix_baseline_incidents_{col}"), "baseline_incidents", [col])
    op.create_table(
        "baseline_incident_events",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("incident_id", sa.String(64), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.Column("snapshot", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_baseline_incident_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_baseline_incident_events_event_id")),
    )
    op.create_index(op.f("ix_baseline_incident_events_incident_id"), "baseline_incident_events", ["incident_id"])


def downgrade() -> None:
    op.drop_table("baseline_incident_events")
    op.drop_table("baseline_incidents")
    op.drop_table("baseline_engine_state")
    op.drop_table("baseline_minutes")
    op.drop_table("baseline_targets")
