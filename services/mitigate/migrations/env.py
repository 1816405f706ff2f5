"""Alembic env for the mitigate tables: everything is in ``run_alembic_env``."""

from voxguard.mitigate.store import MitigateBase
from voxguard.shared.db import run_alembic_env

run_alembic_env(MitigateBase.metadata)
