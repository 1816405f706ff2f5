"""Alembic env for the notify tables: everything is in ``run_alembic_env``."""

from voxguard.notify.store import NotifyBase
from voxguard.shared.db import run_alembic_env

run_alembic_env(NotifyBase.metadata)
