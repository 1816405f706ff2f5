"""Alembic env for the auth tables: everything is in ``run_alembic_env``."""

from voxguard.shared.auth import AuthBase
from voxguard.shared.db import run_alembic_env

run_alembic_env(AuthBase.metadata)
