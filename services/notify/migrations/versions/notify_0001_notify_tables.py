"""notify tables: outbox, attempts, status-page state

Revision ID: notify_0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from voxguard.shared.db import UtcDateTime

revision: str = "notify_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notify_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("source_event_id", sa.String(length=64), nullable=False),
        sa.Column("incident_id", sa.String(length=64), nullable=True),
        sa.Column("channel", sa.String(length=100), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("route", sa.String(length=100), nullable=True),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("severity", sa.String(length=10), nullable=False),
        sa.Column("tier", sa.String(length=20), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("last_code", sa.Integer(), nullable=True),
        sa.Column("last_detail", sa.String(length=400), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notify_outbox")),
        sa.UniqueConstraint("key", name=op.f("uq_notify_outbox_key")),
    )
    with op.batch_alter_table("notify_outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notify_outbox_incident_id"), ["incident_id"], unique=False)
        batch_op.create_index("ix_notify_outbox_status_next", ["status", "next_attempt_at"], unique=False)

    op.create_table(
        "notify_status_components",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=30), nullable=False),
        sa.Column("changed_at", UtcDateTime(), nullable=True),
        sa.Column("incidents", sa.Text(), nullable=False),
        sa.Column("clear_since", UtcDateTime(), nullable=True),
        sa.Column("page_ref", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_notify_status_components")),
    )
    op.create_table(
        "notify_status_refs",
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("ref", sa.String(length=100), nullable=False),
        sa.Column("external_id", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("provider", "ref", name=op.f("pk_notify_status_refs")),
    )
    op.create_table(
        "notify_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("response_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("detail", sa.String(length=400), nullable=True),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["outbox_id"],
            ["notify_outbox.id"],
            name=op.f("fk_notify_attempts_outbox_id_notify_outbox"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notify_attempts")),
    )
    with op.batch_alter_table("notify_attempts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notify_attempts_outbox_id"), ["outbox_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("notify_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notify_attempts_outbox_id"))

    op.drop_table("notify_attempts")
    op.drop_table("notify_status_refs")
    op.drop_table("notify_status_components")
    with op.batch_alter_table("notify_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_notify_outbox_status_next")
        batch_op.drop_index(batch_op.f("ix_notify_outbox_incident_id"))

    op.drop_table("notify_outbox")
