"""Alembic environment of the ``baseline_*`` tables (see ``voxguard.shared.db``)."""
