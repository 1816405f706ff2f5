"""TimescaleDB detection and DDL: hypertable, hourly continuous aggregate, retention, compression.

Used by the migration that runs after the plain schema exists. When the extension cannot be
created (plain PostgreSQL, SQLite) nothing here runs and the same tables stay ordinary tables;
the queries then use ``date_bin`` (PostgreSQL) or Python bucketing (SQLite) instead of
``time_bucket``.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

from voxguard.baseline.models import MINUTE_VALUES

MINUTES = "baseline_minutes"
HOURLY = "baseline_minutes_hourly"
CHUNK_INTERVAL = "1 day"
COMPRESS_AFTER = "7 days"
RETAIN_FOR = "90 days"  # the longest baseline window a tier may configure (window_days <= 90)


def try_enable(conn: Connection) -> bool:
    """``CREATE EXTENSION IF NOT EXISTS timescaledb`` in a savepoint; False when unavailable."""
    if conn.dialect.name != "postgresql":
        return False
    try:
        with conn.begin_nested():
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS timescaledb"))
    except Exception:
        return False
    return True


def available(conn: Connection) -> bool:
    """True when the extension is installed in this database."""
    if conn.dialect.name != "postgresql":
        return False
    return bool(conn.scalar(text("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")))


def is_hypertable(conn: Connection, table: str = MINUTES) -> bool:
    """True when ``table`` (in the current schema search path) is a hypertable."""
    if not available(conn):
        return False
    sql = text(
        "SELECT count(*) FROM timescaledb_information.hypertables "
        "WHERE hypertable_name = :t AND hypertable_schema = ANY (current_schemas(false))"
    )
    return bool(conn.scalar(sql, {"t": table}))


def create_objects(conn: Connection) -> None:
    """Hypertable, hourly continuous aggregate (real-time), and the three policies."""
    conn.execute(
        text(
            f"SELECT create_hypertable('{MINUTES}', by_range('bucket', INTERVAL '{CHUNK_INTERVAL}'), "
            "if_not_exists => TRUE, migrate_data => TRUE)"
        )
    )
    sums = ", ".join(f"sum({c}) AS {c}" for c in MINUTE_VALUES)
    # materialized_only = false: hours not yet materialised are computed from the raw rows, so the
    # view answers even where the refresh job has not run (or, in tests, cannot run).
    conn.execute(
        text(
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {HOURLY} "
            "WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS "
            f"SELECT target_id, time_bucket(INTERVAL '1 hour', bucket) AS hour, {sums} "
            f"FROM {MINUTES} GROUP BY target_id, hour WITH NO DATA"
        )
    )
    conn.execute(
        text(
            f"SELECT add_continuous_aggregate_policy('{HOURLY}', start_offset => INTERVAL '3 hours', "
            "end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes', if_not_exists => TRUE)"
        )
    )
    conn.execute(
        text(
            f"ALTER TABLE {MINUTES} SET (timescaledb.compress, timescaledb.compress_segmentby = 'target_id', "
            "timescaledb.compress_orderby = 'bucket')"
        )
    )
    conn.execute(
        text(f"SELECT add_compression_policy('{MINUTES}', INTERVAL '{COMPRESS_AFTER}', if_not_exists => TRUE)")
    )
    conn.execute(text(f"SELECT add_retention_policy('{MINUTES}', INTERVAL '{RETAIN_FOR}', if_not_exists => TRUE)"))
    conn.execute(text(f"SELECT add_retention_policy('{HOURLY}', INTERVAL '{RETAIN_FOR}', if_not_exists => TRUE)"))


def drop_objects(conn: Connection) -> None:
    """Undo :func:`create_objects` as far as possible (the table stays a hypertable)."""
    conn.execute(text(f"DROP MATERIALIZED VIEW IF EXISTS {HOURLY}"))
    conn.execute(text(f"SELECT remove_retention_policy('{MINUTES}', if_exists => TRUE)"))
    conn.execute(text(f"SELECT remove_compression_policy('{MINUTES}', if_exists => TRUE)"))


def policies(conn: Connection) -> list[tuple[str, str]]:
    """(proc_name, hypertable_name) of the background jobs on our objects (for tests and ops)."""
    rows = conn.execute(
        text(
            "SELECT proc_name, hypertable_name FROM timescaledb_information.jobs "
            "WHERE hypertable_name IN (:m, :h) OR hypertable_name LIKE '_materialized_hypertable_%' "
            "ORDER BY proc_name"
        ),
        {"m": MINUTES, "h": HOURLY},
    ).all()
    return [(str(r[0]), str(r[1])) for r in rows]
