"""auth_api_keys: API keys shared by all services

Revision ID: auth_0001
Revises:
Create Date: 2025-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from voxguard.shared.db import UtcDateTime

revision: str = "auth_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "auth_api_keys",
        sa.Column("id", sa.String(12), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(24), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("last_used_at", UtcDateTime(), nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.CheckConstraint("scope IN ('read', 'operate', 'admin')", name="scope"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_auth_api_keys_prefix")),
    )


def downgrade() -> None:
    op.drop_table("auth_api_keys")
