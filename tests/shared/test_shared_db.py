"""Engines, the per-service migration pattern and locking, on SQLite and the real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import Column, Engine, Integer, MetaData, Table, inspect, select, text

from voxguard.shared.auth import MIGRATIONS, AuthBase
from voxguard.shared.db import (
    UtcDateTime,
    alembic_config,
    check_table_prefixes,
    current_revision,
    exclusive_transaction,
    make_engine,
    normalize_url,
    service_metadata,
    upgrade_to_head,
)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


def test_sqlite_engine_uses_wal_and_busy_timeout(sqlite_url: str) -> None:
    eng = make_engine(sqlite_url)
    with eng.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    eng.dispose()


def test_postgresql_engine_uses_psycopg3(pg_url: str) -> None:
    eng = make_engine(pg_url.replace("postgresql+psycopg://", "postgresql://"))
    assert eng.dialect.driver == "psycopg"
    with eng.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
    eng.dispose()


def test_migrations_run_to_head_idempotently(engine: Engine) -> None:
    assert current_revision(engine, "auth") is None
    upgrade_to_head(engine, MIGRATIONS)
    upgrade_to_head(engine, MIGRATIONS)
    assert current_revision(engine, "auth") == "auth_0001"
    tables = set(inspect(engine).get_table_names())
    assert {"auth_api_keys", "auth_alembic_version"} <= tables
    assert "alembic_version" not in tables  # each service has its own version table


def test_migration_matches_the_model(engine: Engine) -> None:
    """Alembic autogenerate finds nothing to do: the migration creates exactly the model."""
    upgrade_to_head(engine, MIGRATIONS)
    with engine.connect() as conn:
        command.check(alembic_config(MIGRATIONS, conn))


def test_autogenerate_ignores_other_services_tables(engine: Engine) -> None:
    upgrade_to_head(engine, MIGRATIONS)
    other = MetaData()
    Table("baseline_ticks", other, Column("id", Integer, primary_key=True))
    other.create_all(engine)
    with engine.connect() as conn:
        command.check(alembic_config(MIGRATIONS, conn))  # would propose dropping baseline_ticks


def test_concurrent_upgrades_do_not_collide(engine: Engine) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            upgrade_to_head(engine, MIGRATIONS)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM auth_alembic_version")).scalar() == 1


def test_table_prefix_rule() -> None:
    check_table_prefixes(AuthBase.metadata)
    md = service_metadata("notify")
    Table("notify_channels", md, Column("id", Integer, primary_key=True))
    check_table_prefixes(md)
    Table("channels", md, Column("id", Integer, primary_key=True))
    with pytest.raises(ValueError, match="channels"):
        check_table_prefixes(md)
    with pytest.raises(ValueError):
        check_table_prefixes(MetaData())


def test_utc_datetime_round_trips_aware(engine: Engine) -> None:
    md = MetaData()
    t = Table("test_times", md, Column("id", Integer, primary_key=True), Column("at", UtcDateTime()))
    md.create_all(engine)
    paris = dt.timezone(dt.timedelta(hours=2))
    when = dt.datetime(2025, 6, 1, 14, 30, 15, 123456, tzinfo=paris)
    with engine.begin() as conn:
        conn.execute(t.insert().values(id=1, at=when))
        with pytest.raises(Exception, match="naive"):
            conn.execute(t.insert().values(id=2, at=dt.datetime(2025, 1, 1)))
    with engine.connect() as conn:
        got = conn.execute(select(t.c.at)).scalar_one()
    assert got == when and got.tzinfo == dt.UTC and got.hour == 12


def test_exclusive_transaction_serialises_check_then_act(engine: Engine) -> None:
    md = MetaData()
    counter = Table("test_counter", md, Column("id", Integer, primary_key=True), Column("n", Integer))
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(counter.insert().values(id=1, n=0))

    def bump() -> None:
        with exclusive_transaction(engine, "test-counter") as conn:
            n = conn.execute(select(counter.c.n)).scalar_one()
            time.sleep(0.05)  # without the lock every thread would read the same n
            conn.execute(counter.update().values(n=n + 1))

    threads = [threading.Thread(target=bump) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with engine.connect() as conn:
        assert conn.execute(select(counter.c.n)).scalar_one() == 5
