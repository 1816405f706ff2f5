"""mitigate: rules, runtime whitelist, audit log

Revision ID: mitigate_0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from voxguard.shared.db import UtcDateTime

revision: str = "mitigate_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mitigate_rules",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("incident_id", sa.String(64), nullable=True),
        sa.Column("tier", sa.String(16), nullable=True),
        sa.Column("target_id", sa.String(80), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("rate_bps", sa.BigInteger(), nullable=True),
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column("sources", sa.Text(), nullable=False),
        sa.Column("protocol", sa.String(8), nullable=False),
        sa.Column("destination_ports", sa.String(16), nullable=True),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("group_id", sa.String(200), nullable=True),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(100), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=True),
        sa.Column("withdraw_after", UtcDateTime(), nullable=True),
        sa.Column("announced_at", UtcDateTime(), nullable=True),
        sa.Column("withdrawn_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mitigate_rules")),
    )
    op.create_index("ix_mitigate_rules_state", "mitigate_rules", ["state"])
    op.create_index("ix_mitigate_rules_incident_id", "mitigate_rules", ["incident_id"])
    op.create_index("ix_mitigate_rules_fingerprint", "mitigate_rules", ["fingerprint"])
    op.create_table(
        "mitigate_whitelist",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("prefix", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mitigate_whitelist")),
    )
    op.create_table(
        "mitigate_audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("who", sa.String(100), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("mitigation_id", sa.String(32), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mitigate_audit")),
    )


def downgrade() -> None:
    op.drop_table("mitigate_audit")
    op.drop_table("mitigate_whitelist")
    op.drop_index("ix_mitigate_rules_fingerprint", table_name="mitigate_rules")
    op.drop_index("ix_mitigate_rules_incident_id", table_name="mitigate_rules")
    op.drop_index("ix_mitigate_rules_state", table_name="mitigate_rules")
    op.drop_table("mitigate_rules")
