"""The notify tables: the outbox (one row per event+channel), every attempt, status-page state.

The outbox row is written, keyed by ``<event id>:<channel>``, before anything is sent: a second
copy of the event (bus redelivery, restart) finds the key and sends nothing, and a crash in the
middle leaves a pending row that the next start picks up, so nothing is lost either.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson
from sqlalchemy import Engine, Float, ForeignKey, Index, Integer, String, Text, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from voxguard.shared.db import UtcDateTime, service_metadata, session_factory

MIGRATIONS = "voxguard.notify.migrations"
T = TypeVar("T")
TERMINAL = ("sent", "dead_letter", "suppressed")


class NotifyBase(DeclarativeBase):
    metadata = service_metadata("notify")


class Outbox(NotifyBase):
    __tablename__ = "notify_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    source_event_id: Mapped[str] = mapped_column(String(64))
    incident_id: Mapped[str | None] = mapped_column(String(64), index=True)
    channel: Mapped[str] = mapped_column(String(100))
    provider: Mapped[str] = mapped_column(String(20))
    route: Mapped[str | None] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(10))
    tier: Mapped[str | None] = mapped_column(String(20))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(12))  # pending, sent, dead_letter, suppressed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    last_code: Mapped[int | None] = mapped_column(Integer)
    last_detail: Mapped[str | None] = mapped_column(String(400))

    __table_args__ = (Index("ix_notify_outbox_status_next", "status", "next_attempt_at"),)


class Attempt(NotifyBase):
    __tablename__ = "notify_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("notify_outbox.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(12))  # sent, retrying, dead_letter, failed
    response_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    detail: Mapped[str | None] = mapped_column(String(400))
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class ComponentState(NotifyBase):
    __tablename__ = "notify_status_components"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    status: Mapped[str] = mapped_column(String(30))
    changed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    incidents: Mapped[str] = mapped_column(Text, default="{}")  # incident id -> {severity, since}
    clear_since: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    page_ref: Mapped[str | None] = mapped_column(String(100))  # our ref of the open page incident


class PageRef(NotifyBase):
    __tablename__ = "notify_status_refs"

    provider: Mapped[str] = mapped_column(String(100), primary_key=True)
    ref: Mapped[str] = mapped_column(String(100), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(100))


def _insert(engine: Engine) -> Any:
    return (postgresql if engine.dialect.name == "postgresql" else sqlite).insert


class Store:
    """Synchronous; the service calls it through ``asyncio.to_thread``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = session_factory(engine)
        # Writers take SQLite's write lock up front: a read-then-write transaction that loses
        # the race fails at once with "database is locked" instead of waiting (WAL snapshot rule).
        self._writes = session_factory(engine.execution_options(sqlite_begin="IMMEDIATE"))
        # One writer at a time inside the process: SQLite's busy handler sleeps up to 100 ms per
        # retry, which turned lock contention between worker threads into seconds of latency.
        self._write_lock = threading.Lock()
        # Own threads: the default executor is small and shared (SMTP sends, other services).
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="notify-db")

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call a method of this store off the event loop, on the store's own threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    @contextlib.contextmanager
    def writes(self) -> Iterator[Session]:
        with self._write_lock, self._writes.begin() as s:
            yield s

    # -- outbox -----------------------------------------------------------------------------

    def enqueue(self, rows: Iterable[dict[str, Any]]) -> list[int]:
        """Insert rows whose key is new; return the ids of those inserted (the rest were dupes)."""
        return [i for i in self.enqueue_aligned(list(rows)) if i is not None]

    def enqueue_aligned(self, rows: list[dict[str, Any]]) -> list[int | None]:
        """Like ``enqueue``, one entry per row: its new id, or None for a duplicate key."""
        out: list[int | None] = []
        ins = _insert(self.engine)
        with self.writes() as s:
            for row in rows:
                stmt = ins(Outbox).values(**row).on_conflict_do_nothing(index_elements=["key"]).returning(Outbox.id)
                out.append(s.execute(stmt).scalar_one_or_none())
        return out

    def due(self, now: dt.datetime, limit: int, ordered: set[str], exclude: set[int]) -> list[Outbox]:
        """Pending rows whose time has come; for ``ordered`` channels only their oldest row."""
        out: list[Outbox] = []
        with self.sessions() as s:
            for channel in ordered:  # few: one per status-page provider
                head = s.scalars(
                    select(Outbox)
                    .where(Outbox.status == "pending", Outbox.channel == channel)
                    .order_by(Outbox.id)
                    .limit(1)
                ).first()
                if head is not None and head.id not in exclude and head.next_attempt_at <= now:
                    out.append(head)
            q = (
                select(Outbox)
                .where(Outbox.status == "pending", Outbox.next_attempt_at <= now)
                .order_by(Outbox.id)
                .limit(max(0, limit - len(out)))
            )
            if ordered:
                q = q.where(Outbox.channel.not_in(ordered))
            if exclude:
                q = q.where(Outbox.id.not_in(exclude))
            out.extend(s.scalars(q))
        return out[:limit]

    def record(self, outbox_id: int, **outcome: Any) -> None:
        """One attempt's outcome and the row's new state, in one transaction."""
        self.record_many([{"outbox_id": outbox_id, **outcome}])

    def record_many(self, outcomes: list[dict[str, Any]]) -> None:
        """Several attempts' outcomes in one transaction (one commit per batch, not per send).

        Each outcome: outbox_id, attempt, status, attempt_status, code, latency_ms, detail, now,
        next_at (None keeps the row's time).
        """
        with self.writes() as s:
            for o in outcomes:
                detail = (o.get("detail") or None) and str(o["detail"])[:400]
                s.add(
                    Attempt(
                        outbox_id=o["outbox_id"],
                        attempt=o["attempt"],
                        status=o["attempt_status"],
                        response_code=o.get("code"),
                        latency_ms=o.get("latency_ms"),
                        detail=detail,
                        at=o["now"],
                    )
                )
                values: dict[str, Any] = {
                    "status": o["status"],
                    "attempts": o["attempt"],
                    "updated_at": o["now"],
                    "last_code": o.get("code"),
                    "last_detail": detail,
                }
                if o.get("next_at") is not None:
                    values["next_attempt_at"] = o["next_at"]
                s.execute(update(Outbox).where(Outbox.id == o["outbox_id"]).values(**values))

    def get(self, outbox_id: int) -> Outbox | None:
        with self.sessions() as s:
            return s.get(Outbox, outbox_id)

    def attempts(self, outbox_id: int) -> list[Attempt]:
        with self.sessions() as s:
            return list(s.scalars(select(Attempt).where(Attempt.outbox_id == outbox_id).order_by(Attempt.id)))

    def list(
        self,
        *,
        incident_id: str | None = None,
        status: str | None = None,
        channel: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Outbox]:
        q = select(Outbox).order_by(Outbox.id.desc()).limit(limit).offset(offset)
        if incident_id:
            q = q.where(Outbox.incident_id == incident_id)
        if status:
            q = q.where(Outbox.status == status)
        if channel:
            q = q.where(Outbox.channel == channel)
        with self.sessions() as s:
            return list(s.scalars(q))

    def counts(self) -> dict[str, int]:
        with self.sessions() as s:
            return {st: n for st, n in s.execute(select(Outbox.status, func.count()).group_by(Outbox.status))}

    def requeue(self, outbox_id: int, now: dt.datetime) -> bool:
        """Dead letter -> pending with a fresh attempt budget (API retry)."""
        with self.writes() as s:
            res = s.execute(
                update(Outbox)
                .where(Outbox.id == outbox_id, Outbox.status == "dead_letter")
                .values(status="pending", next_attempt_at=now, updated_at=now, attempts=0)
            )
            return bool(getattr(res, "rowcount", 0))

    # -- status pages -------------------------------------------------------------------------

    def load_components(self) -> dict[str, ComponentState]:
        with self.sessions() as s:
            return {c.key: c for c in s.scalars(select(ComponentState))}

    def save_component(self, key: str, **values: Any) -> None:
        if "incidents" in values and not isinstance(values["incidents"], str):
            values["incidents"] = orjson.dumps(values["incidents"]).decode()
        with self.writes() as s:
            row = s.get(ComponentState, key)
            if row is None:
                s.add(ComponentState(key=key, **values))
            else:
                for k, v in values.items():
                    setattr(row, k, v)

    def get_ref(self, provider: str, ref: str) -> str | None:
        with self.sessions() as s:
            row = s.get(PageRef, (provider, ref))
            return row.external_id if row else None

    def set_ref(self, provider: str, ref: str, external_id: str) -> None:
        with self.writes() as s:
            s.merge(PageRef(provider=provider, ref=ref, external_id=external_id))
