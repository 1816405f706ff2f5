"""Revisions (a package only so wheels ship them; Alembic skips this file)."""
