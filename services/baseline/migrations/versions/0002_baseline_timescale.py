"""TimescaleDB objects when the extension can be created: hypertable, hourly aggregate, policies

On plain PostgreSQL and SQLite this revision changes nothing, so the schema is the same
everywhere and a database that gains the extension later can re-run it after a downgrade.

Revision ID: baseline_0002
Revises: baseline_0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

from voxguard.baseline import timescale

revision: str = "baseline_0002"
down_revision: str | Sequence[str] | None = "baseline_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    conn = op.get_bind()
    if timescale.try_enable(conn):
        timescale.create_objects(conn)


def downgrade() -> None:
    conn = op.get_bind()
    if timescale.available(conn):
        timescale.drop_objects(conn)
