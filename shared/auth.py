"""API keys: the one table shared by all services (design.md section 4).

``shared/auth`` owns the ``auth_api_keys`` table and its migrations (``shared/migrations``);
every service verifies bearer keys against it, so one key works on every API and in the
one-process mode. Keys look like ``vg_<id>_<secret>``: the id is public (it names the key in
listings and logs, and finds its row in O(1)); the secret is 256 bits from ``secrets``.

Only ``sha256(key)`` is stored. A slow password hash (bcrypt, argon2) exists to make guessing
*low-entropy human passwords* expensive; a 256-bit random secret cannot be guessed at any
speed, so a fast hash is as safe here, and it keeps verification cheap on every request: a
deliberately slow hash on the request path would itself be a CPU-exhaustion vector, which is
the last thing a DDoS-defence API wants.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from sqlalchemy import Boolean, CheckConstraint, Engine, String, false, func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from voxguard.shared.db import (
    UtcDateTime,
    exclusive_transaction,
    service_metadata,
    session_factory,
    upgrade_to_head,
)
from voxguard.shared.errors import ApiError

MIGRATIONS = "voxguard.shared.migrations"
ADMIN_KEY_FILE = "admin.key"
MAX_TOKEN_LENGTH = 128  # real keys are 62 chars; anything longer is refused before hashing
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)  # don't write the row on every request
_TOKEN_RE = re.compile(r"vg_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")
_DUMMY_HASH = hashlib.sha256(b"voxguard-no-such-key").hexdigest()


class Scope(StrEnum):
    """Key scopes, ordered: read < operate < admin."""

    READ = "read"
    OPERATE = "operate"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Scope | str) -> bool:
        """True when a key of this scope may do what ``needed`` requires."""
        return self.rank >= Scope(needed).rank


_RANK = {Scope.READ: 0, Scope.OPERATE: 1, Scope.ADMIN: 2}


class AuthBase(DeclarativeBase):
    metadata = service_metadata("auth")


class ApiKeyRow(AuthBase):
    __tablename__ = "auth_api_keys"
    __table_args__ = (CheckConstraint("scope IN ('read', 'operate', 'admin')", name="scope"),)

    id: Mapped[str] = mapped_column(String(12), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(24), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


@dataclass(frozen=True)
class KeyInfo:
    """What a request knows about the key it was made with (never the secret)."""

    id: str
    name: str
    scope: Scope
    prefix: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked: bool

    @classmethod
    def from_row(cls, row: ApiKeyRow) -> KeyInfo:
        return cls(
            id=row.id,
            name=row.name,
            scope=Scope(row.scope),
            prefix=row.prefix,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            revoked=row.revoked,
        )


def hash_key(token: str) -> str:
    """The stored form of a key (see the module docstring for why sha256 suffices)."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class KeyStore:
    """Create, verify, list and revoke API keys in the shared database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = session_factory(engine)

    def migrate(self) -> None:
        """Create/upgrade the key table (every service calls this at start)."""
        upgrade_to_head(self.engine, MIGRATIONS)

    def create_key(self, name: str, scope: Scope | str) -> str:
        """Create a key and return its plaintext: the only time it is ever visible."""
        token, row = self._new_row(name, Scope(scope))
        with self._sessions.begin() as s:
            s.add(row)
        return token

    @staticmethod
    def _new_row(name: str, scope: Scope) -> tuple[str, ApiKeyRow]:
        if not name.strip() or len(name) > 100:
            raise ValueError("key name must be 1-100 characters")
        key_id = secrets.token_hex(6)
        token = f"vg_{key_id}_{secrets.token_urlsafe(32)}"
        row = ApiKeyRow(
            id=key_id,
            name=name.strip(),
            scope=scope.value,
            key_hash=hash_key(token),
            prefix=f"vg_{key_id}",
            created_at=_now(),
            last_used_at=None,
            revoked=False,
        )
        return token, row

    def verify(self, token: str | None) -> KeyInfo | None:
        """The key's info when ``token`` is a valid, unrevoked key; else None.

        Malformed input (empty, oversized, non-ASCII, injection attempts) is refused by shape
        before any hashing or query; the hash comparison is constant-time.
        """
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        m = _TOKEN_RE.fullmatch(token)
        if m is None:
            return None
        with self._sessions() as s:
            row = s.get(ApiKeyRow, m.group(1))
            ok = hmac.compare_digest(row.key_hash if row else _DUMMY_HASH, hash_key(token))
            if row is None or not ok or row.revoked:
                return None
            info = KeyInfo.from_row(row)
        now = _now()
        if info.last_used_at is None or now - info.last_used_at >= LAST_USED_RESOLUTION:
            self._touch(info.id, now)
        return info

    def _touch(self, key_id: str, now: dt.datetime) -> None:
        # Its own write-first transaction (a read upgraded to a write can fail at once on a
        # busy SQLite); bookkeeping must never turn a valid key into a 500.
        try:
            with self._sessions.begin() as s:
                s.execute(update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(last_used_at=now))
        except OperationalError:
            pass

    def list_keys(self) -> list[KeyInfo]:
        with self._sessions() as s:
            rows = s.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at)).all()
            return [KeyInfo.from_row(r) for r in rows]

    def revoke(self, key_id_or_prefix: str) -> bool:
        """Revoke by id (``3f2a...``) or prefix (``vg_3f2a...``); False when no such key."""
        key_id = key_id_or_prefix.removeprefix("vg_")
        with self._sessions.begin() as s:
            res = s.execute(update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(revoked=True))
            return bool(getattr(res, "rowcount", 0))

    def count(self) -> int:
        """Number of keys, revoked ones included."""
        with self._sessions() as s:
            return int(s.scalar(select(func.count()).select_from(ApiKeyRow)) or 0)

    def ensure_admin_key(self, var_dir: str | os.PathLike[str]) -> Path | None:
        """On a first start with no key at all, create an admin key in ``<var>/admin.key`` (0600).

        Returns the file's path when a key was created, None when keys already exist.
        Concurrent starters (several services or replicas) are serialised so only one key is
        made. The file is written before the row commits, so a failed write leaves no key
        nobody can read.
        """
        path = Path(var_dir) / ADMIN_KEY_FILE
        with exclusive_transaction(self.engine, "voxguard.auth.bootstrap") as conn:
            if conn.scalar(select(func.count()).select_from(ApiKeyRow)):
                return None
            token, row = self._new_row("admin (created at first start)", Scope.ADMIN)
            with Session(bind=conn) as s:  # joins the locked transaction, commits with it
                s.add(row)
                s.flush()
            write_secret_file(path, token + "\n")
        return path


def write_secret_file(path: Path, content: str) -> None:
    """Write ``content`` to ``path`` atomically, readable by the owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def bearer_token(conn: HTTPConnection) -> str | None:
    """The token of ``Authorization: Bearer <key>``; websockets may use ``?access_token=``.

    (Browsers cannot set headers on a WebSocket; the query form is for ``/v1/events`` only.)
    """
    header = conn.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    if isinstance(conn, WebSocket):
        return conn.query_params.get("access_token")
    return None


def get_keystore(conn: HTTPConnection) -> KeyStore:
    store = getattr(conn.app.state, "keystore", None)
    if store is None:
        raise ApiError(503, "auth_unavailable", "the API key store is not configured")
    return store


def _deny(conn: HTTPConnection, status: int, code: str, message: str, www: str) -> Exception:
    if isinstance(conn, WebSocket):
        from starlette.exceptions import WebSocketException

        return WebSocketException(code=1008, reason=message)  # policy violation
    return ApiError(status, code, message, headers={"WWW-Authenticate": www})


def require_scope(scope: Scope | str) -> Callable[[HTTPConnection], KeyInfo]:
    """A FastAPI dependency: the request must carry a key of at least ``scope``.

    401 when the key is missing or invalid, 403 when its scope is too low. The verified key is
    cached on ``request.state.api_key`` so a router-level and a route-level check cost one
    lookup; the dependency also returns the KeyInfo for routes that want to log who acted.
    """
    needed = Scope(scope)

    def dependency(conn: HTTPConnection) -> KeyInfo:
        info: KeyInfo | None = getattr(conn.state, "api_key", None)
        if info is None:
            token = bearer_token(conn)
            if not token:
                raise _deny(conn, 401, "unauthorized", "an API key is required", "Bearer")
            info = get_keystore(conn).verify(token)
            if info is None:
                raise _deny(
                    conn,
                    401,
                    "invalid_key",
                    "the API key is invalid or revoked",
                    'Bearer error="invalid_token"',
                )
            conn.state.api_key = info
        if not info.scope.allows(needed):
            raise _deny(
                conn,
                403,
                "insufficient_scope",
                f"this needs a key with scope '{needed.value}' (this key has '{info.scope.value}')",
                f'Bearer error="insufficient_scope", scope="{needed.value}"',
            )
        return info

    dependency.__name__ = f"require_scope_{needed.value}"
    return dependency


__all__ = [
    "ADMIN_KEY_FILE",
    "MIGRATIONS",
    "ApiKeyRow",
    "AuthBase",
    "KeyInfo",
    "KeyStore",
    "Scope",
    "bearer_token",
    "hash_key",
    "require_scope",
    "write_secret_file",
]
