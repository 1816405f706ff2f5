"""Fixtures shared by every VoxGuard test.

Real components, never fakes (design.md section 7): a real nats-server, a real PostgreSQL,
real Debian tools. Where one is missing, tests skip with the reason -- except under ``CI=true``,
where CI has installed everything, so a missing component is a broken pipeline: every helper
goes through :func:`require`, which fails instead of skipping there.

Fixtures:
  shared_dir   Path of the read-only ``../shared`` folder (``VOXGUARD_SHARED_DIR`` overrides)
  nats_url     a NATS server with JetStream (127.0.0.1:4222 if one listens, else one from the
               wheel; VOXGUARD_TEST_NATS=embedded forces the wheel)
  bus          a connected ``Bus`` in a fresh namespace, streams ensured, deleted afterwards
  pg_url       PostgreSQL (127.0.0.1:5432, db ``test``, user postgres) in a fresh schema per test
  sqlite_url   a SQLite file in the test's tmp dir
  db_url       parametrised over sqlite and postgresql: storage tests run on both
  need_tool    ``need_tool("tshark") -> Path``: the tool's path, or skip/fail
  require      ``require(condition, reason)``
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vghelpers import need_tool, require
from voxguard.shared.natsserver import NatsServer, NatsServerError, port_open

pytest_plugins = ("pytester",)

REPO_ROOT = Path(__file__).resolve().parent.parent
PG_HOST, PG_PORT, PG_DB, PG_USER = "127.0.0.1", 5432, "test", "postgres"


@pytest.fixture(name="require")
def require_fixture() -> Callable[[object, str], None]:
    return require


@pytest.fixture(name="need_tool")
def need_tool_fixture() -> Callable[[str], Path]:
    return need_tool


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only shared folder (captures, API specs) next to the repository."""
    env = os.environ.get("VOXGUARD_SHARED_DIR")
    path = Path(env) if env else REPO_ROOT.parent / "shared"
    require(path.is_dir(), f"shared folder {path} is missing (set VOXGUARD_SHARED_DIR)")
    return path


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A NATS+JetStream URL: the one on 127.0.0.1:4222 if it listens, else a server from the wheel.

    ``VOXGUARD_TEST_NATS=embedded`` always starts one from the wheel.
    """
    if os.environ.get("VOXGUARD_TEST_NATS") != "embedded" and port_open("127.0.0.1", 4222):
        yield "nats://127.0.0.1:4222"
        return
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    try:
        server.start()
    except NatsServerError as exc:
        require(False, f"no NATS on 127.0.0.1:4222 and the nats-server wheel cannot start: {exc}")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Any]:
    """A connected Bus in its own namespace (isolated streams); deleted after the test.

    Re-calling ``ensure_streams()`` without arguments would raise the traffic cap to the
    production 2 GiB reservation; pass ``default_streams(traffic_max_bytes=...)`` instead.
    """
    from voxguard.shared.bus import Bus, default_streams

    b = Bus(nats_url, namespace=f"t{uuid.uuid4().hex[:10]}")
    await b.connect()
    # Small byte cap: JetStream reserves max_bytes on disk, and parallel runs share the server.
    await b.ensure_streams(default_streams(traffic_max_bytes=64 * 1024 * 1024))
    try:
        yield b
    finally:
        try:
            await b.delete_streams()
        finally:
            await b.close()


def _pg_admin_dsn() -> str:
    return f"host={PG_HOST} port={PG_PORT} dbname={PG_DB} user={PG_USER} connect_timeout=3"


@pytest.fixture(scope="session")
def _pg_available() -> bool:
    if not port_open(PG_HOST, PG_PORT):
        return False
    try:
        import psycopg

        with psycopg.connect(_pg_admin_dsn()):
            return True
    except Exception:
        return False


@pytest.fixture
def pg_url(_pg_available: bool) -> Iterator[str]:
    """A SQLAlchemy URL to PostgreSQL whose search_path is a fresh schema, dropped afterwards.

    Tests and parallel runs never see each other's tables; ``public`` stays on the path after
    the test schema so extensions installed there (TimescaleDB) remain usable.
    """
    require(
        _pg_available,
        f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT} (database {PG_DB}, user {PG_USER}, trust auth)",
    )
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(_pg_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield (f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{PG_DB}?options=-csearch_path%3D{schema},public")
    finally:
        with psycopg.connect(_pg_admin_dsn(), autocommit=True) as conn:
            conn.execute("SET lock_timeout = '10s'")  # a leaked open transaction fails, not hangs
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'voxguard.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each storage test runs on SQLite and on the real PostgreSQL."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))
