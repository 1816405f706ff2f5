"""SQLAlchemy 2 engines, sessions and per-service Alembic migrations (design.md section 5).

Ownership pattern (every service follows it):

* Each service owns its tables and nothing else. It declares its own ``DeclarativeBase`` with
  its own ``MetaData`` from :func:`service_metadata`, so it can be migrated, dropped or moved to
  another database alone::

      class Base(DeclarativeBase):
          metadata = service_metadata("baseline")

      class Tick(Base):
          __tablename__ = "baseline_ticks"      # always "<service>_<name>"

* Every table name carries the service prefix (``auth_``, ``ingest_``, ``baseline_``,
  ``mitigate_``, ``notify_``). The prefix is the service's namespace on both backends: SQLite
  has no schemas, and using the same names on PostgreSQL keeps one set of models and migrations
  for both (a deployment that wants per-service PostgreSQL schemas or roles can still point each
  service at its own ``search_path`` through ``DATABASE_URL``'s ``options``).
* Each service keeps its Alembic environment inside its package (``services/<svc>/migrations``
  with ``env.py`` calling :func:`run_alembic_env`, ``script.py.mako`` and ``versions/``), no
  ``alembic.ini``, and its own version table ``<service>_alembic_version`` so services upgrade
  independently. :func:`upgrade_to_head` runs them programmatically at start. ``shared/migrations``
  (the API-key table owned by ``shared/auth``) is the example to copy.

Engines are synchronous; async code calls them through ``asyncio.to_thread`` (SQLite has no
production-grade async driver here, and per-tick writes are batched anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import hashlib
import importlib
import importlib.resources
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event, make_url, text
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import TypeDecorator

SQLITE_BUSY_TIMEOUT_S = 30.0

NAMING_CONVENTION = {
    # Deterministic constraint names so Alembic can alter/drop them on both backends.
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def normalize_url(url: str) -> str:
    """Map ``postgres://`` / ``postgresql://`` to the psycopg 3 driver we ship."""
    u = make_url(url)
    if u.drivername in ("postgres", "postgresql"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy, not pysqlite's legacy heuristics, decide where transactions begin
    # (SQLAlchemy's documented recipe), so SAVEPOINT and BEGIN IMMEDIATE work.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cur.execute("PRAGMA foreign_keys = ON")
    # WAL: readers never block the writer (API reads while the baseline service writes ticks).
    cur.execute("PRAGMA journal_mode = WAL")
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


def make_engine(url: str, *, application_name: str = "voxguard", **kwargs: Any) -> Engine:
    """An engine for SQLite (WAL, busy timeout) or PostgreSQL (psycopg 3, pre-ping)."""
    url = normalize_url(url)
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if u.get_backend_name() == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
        pg_args: dict[str, Any] = {"application_name": application_name, "connect_timeout": 10}
        pg_args.update(kwargs.pop("connect_args", {}))
        return create_engine(url, connect_args=pg_args, **kwargs)
    return create_engine(url, **kwargs)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit (they are handed to the API)."""
    return sessionmaker(engine, expire_on_commit=False)


def service_metadata(service: str) -> MetaData:
    """The MetaData of one service's ``DeclarativeBase`` (see the module docstring)."""
    return MetaData(naming_convention=NAMING_CONVENTION, info={"service": service})


def check_table_prefixes(metadata: MetaData) -> None:
    """Raise ValueError when a table does not carry its service's prefix."""
    service = metadata.info.get("service")
    if not service:
        raise ValueError("metadata was not made by service_metadata()")
    bad = sorted(t for t in metadata.tables if not t.startswith(f"{service}_"))
    if bad:
        raise ValueError(f"tables of service {service!r} must be named '{service}_*': {bad}")


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite drops the offset otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UtcDateTime column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def exclusive_transaction(engine: Engine, name: str) -> Iterator[Connection]:
    """A transaction that no other process runs concurrently for the same ``name``.

    For check-then-act work shared by replicas (bootstrap the first admin key, leader-only
    jobs): PostgreSQL takes a transaction-scoped advisory lock, SQLite a ``BEGIN IMMEDIATE``
    write lock (waits up to the busy timeout).
    """
    backend = engine.dialect.name
    with engine.connect() as conn:
        if backend == "sqlite":
            conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            if backend == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(name)})
            yield conn


def _package_dir(package: str) -> Path:
    mod = importlib.import_module(package)
    return Path(str(importlib.resources.files(mod)))


def alembic_config(migrations_package: str, connection: Connection | None = None) -> Any:
    """An Alembic Config for a service's migrations package, without an alembic.ini.

    Also what a developer uses to write a revision::

        command.revision(alembic_config("voxguard.baseline.migrations"), "add x", autogenerate=True)
    """
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_package_dir(migrations_package)))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@contextlib.contextmanager
def _migration_lock(conn: Connection, name: str) -> Iterator[None]:
    """Serialise concurrent migrators (replicas starting together)."""
    backend = conn.dialect.name
    if backend == "postgresql":
        key = _lock_key(f"migrate:{name}")
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        conn.commit()
        try:
            yield
        finally:
            conn.rollback()
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()
    elif backend == "sqlite" and conn.engine.url.database not in (None, "", ":memory:"):
        lock_path = f"{conn.engine.url.database}.migrate.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
    else:
        yield


def upgrade_to_head(engine: Engine, migrations_package: str) -> None:
    """Run a service's Alembic migrations up to head (idempotent, safe for parallel replicas)."""
    from alembic import command

    with engine.connect() as conn, _migration_lock(conn, migrations_package):
        command.upgrade(alembic_config(migrations_package, conn), "head")
        conn.commit()


def current_revision(engine: Engine, service: str) -> str | None:
    """The revision a service's schema is at (None before its first migration)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": version_table(service)})
        return ctx.get_current_revision()


def version_table(service: str) -> str:
    """Each service's own Alembic version table."""
    return f"{service}_alembic_version"


def run_alembic_env(metadata: MetaData) -> None:
    """The whole body of a service's ``migrations/env.py``.

    Uses the connection passed by :func:`upgrade_to_head` (or ``DATABASE_URL`` / the default
    SQLite file when run by the ``alembic`` command), the service's own version table, batch
    mode on SQLite (ALTER support), and restricts autogenerate to the service's own tables so a
    service never proposes to drop another's.
    """
    from alembic import context

    check_table_prefixes(metadata)
    service = str(metadata.info["service"])
    prefix = f"{service}_"

    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        if type_ == "table":
            return bool(name) and str(name).startswith(prefix) and name != version_table(service)
        return True

    def configure(**kw: Any) -> None:
        context.configure(
            target_metadata=metadata,
            version_table=version_table(service),
            include_name=include_name,
            compare_type=True,
            transaction_per_migration=True,
            **kw,
        )

    if context.is_offline_mode():
        url = context.config.get_main_option("sqlalchemy.url") or _default_url()
        configure(url=normalize_url(url), literal_binds=True, render_as_batch=url.startswith("sqlite"))
        with context.begin_transaction():
            context.run_migrations()
        return

    def run(conn: Connection) -> None:
        configure(connection=conn, render_as_batch=conn.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()

    conn = context.config.attributes.get("connection")
    if conn is not None:
        run(conn)
        return
    engine = make_engine(context.config.get_main_option("sqlalchemy.url") or _default_url())
    try:
        with engine.connect() as c:
            run(c)
            c.commit()
    finally:
        engine.dispose()


def _default_url() -> str:
    from voxguard.shared.settings import load_settings

    return load_settings().effective_database_url()


def ping(engine: Engine) -> bool:
    """True when the database answers."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


def readiness_check(engine: Engine) -> Callable[[], Awaitable[bool]]:
    """A ``/readyz`` check for ``create_app(readiness={"db": readiness_check(engine)})``."""

    async def check() -> bool:
        return await asyncio.to_thread(ping, engine)

    return check


__all__ = [
    "NAMING_CONVENTION",
    "UtcDateTime",
    "alembic_config",
    "check_table_prefixes",
    "current_revision",
    "exclusive_transaction",
    "make_engine",
    "normalize_url",
    "ping",
    "readiness_check",
    "run_alembic_env",
    "service_metadata",
    "session_factory",
    "upgrade_to_head",
    "version_table",
]
