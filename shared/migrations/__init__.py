"""Alembic environment of the ``auth_*`` tables (owned by ``shared/auth``).

The template every service copies into ``services/<svc>/migrations/``: this ``__init__.py``,
``env.py`` (one call to ``run_alembic_env`` with the service's metadata), ``script.py.mako``
and ``versions/``. No alembic.ini: ``voxguard.shared.db.upgrade_to_head(engine,
"voxguard.<svc>.migrations")`` runs it, and ``alembic_config(...)`` serves ``command.revision``.
"""
