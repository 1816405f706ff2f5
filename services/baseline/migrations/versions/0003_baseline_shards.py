"""baseline shard state (per-partition rows and open incidents) and an index on event times

Plain tables on every backend (the rows are few: one per partition); the event-time index serves
the republish of recent events when a worker takes a partition over.

Revision ID: baseline_0003
Revises: baseline_0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from voxguard.shared.db import UtcDateTime

revision: str = "baseline_0003"
down_revision: str | Sequence[str] | None = "baseline_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "baseline_shard_state",
        sa.Column("key", sa.String(32), nullable=False),
        sa.Column("worker", sa.String(128), nullable=False),
        sa.Column("saved_at", UtcDateTime(), nullable=True),
        sa.Column("state", sa.LargeBinary(), nullable=True),
        sa.Column("incidents", sa.JSON(), nullable=False),
        sa.Column("incidents_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_baseline_shard_state")),
    )
    op.create_index(op.f("ix_baseline_incident_events_ts"), "baseline_incident_events", ["ts"])


def downgrade() -> None:
    op.drop_index(op.f("ix_baseline_incident_events_ts"), table_name="baseline_incident_events")
    op.drop_table("baseline_shard_state")
