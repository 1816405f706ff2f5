"""Alembic env for the baseline tables: everything is in ``run_alembic_env``."""

from voxguard.baseline.models import BaselineBase
from voxguard.shared.db import run_alembic_env

run_alembic_env(BaselineBase.metadata)
