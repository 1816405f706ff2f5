"""The NATS JetStream adapter every service uses (design.md section 4, "NATS").

Subjects are ``voxguard.<kind>.v1.<tier>``; per-host traffic travels in batches
(``messages.TrafficBatch``) one token deeper, on ``voxguard.traffic.v1.<tier>.h`` (or the
partition's ``.<k>`` when sharded), so the tier subject keeps single component ticks.
Two streams hold them: ``VOXGUARD_TRAFFIC``
(per-tick traffic aggregates: high volume, short retention) and ``VOXGUARD_EVENTS``
(anomalies, incidents, mitigations, notifications: low volume, kept 30 days for replay).

Delivery is at-least-once: durable pull consumers ACK a message only after the handler
returned, i.e. after its work is committed. A crash before that means redelivery, so handlers
must be idempotent (``Delivery.msg_id`` is the message id; publishers set it as
``Nats-Msg-Id`` so JetStream also drops duplicate publishes within its window). A handler
exception NAKs with a growing delay; a message that does not validate into the model is
TERMinated and counted, so one poison message never blocks a consumer.

``namespace`` prefixes stream names and subjects (``t1a2b_VOXGUARD_TRAFFIC``,
``t1a2b.voxguard.traffic.v1.sbc``) so tests, or two deployments, can share one nats-server
without seeing each other's messages. Callers always use the logical subjects.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from prometheus_client import Counter
from pydantic import BaseModel

from voxguard.shared.settings import DEFAULT_NATS_URL
from voxguard.shared.telemetry import RateLimitedLog, extract_context, get_logger, inject_headers

STREAM_TRAFFIC = "VOXGUARD_TRAFFIC"
STREAM_EVENTS = "VOXGUARD_EVENTS"
KINDS = ("traffic", "anomaly", "incident", "mitigation", "notification")
MSG_ID_HEADER = "Nats-Msg-Id"
MAX_MSG_BYTES = 1024 * 1024

M = TypeVar("M", bound=BaseModel)

log = get_logger("voxguard.bus")
_rlog = RateLimitedLog(log, per_interval=5, interval=30.0)
_tracer = trace.get_tracer("voxguard.bus")

BUS_PUBLISHED = Counter("voxguard_bus_published", "Messages published and acked by JetStream", ["kind"])
BUS_PUBLISH_FAILED = Counter("voxguard_bus_publish_failed", "Publishes not acked by JetStream", ["kind"])
BUS_CONSUMED = Counter("voxguard_bus_consumed", "Messages handled and acked", ["kind", "consumer"])
BUS_HANDLER_FAILED = Counter(
    "voxguard_bus_handler_failed", "Handler errors (message NAKed for redelivery)", ["kind", "consumer"]
)
BUS_INVALID = Counter("voxguard_bus_invalid", "Messages that failed validation (terminated)", ["kind", "consumer"])


def subject(kind: str, tier: str) -> str:
    """``voxguard.<kind>.v1.<tier>``."""
    if kind not in KINDS:
        raise ValueError(f"unknown message kind {kind!r}; known: {', '.join(KINDS)}")
    return f"voxguard.{kind}.v1.{tier}"


def subject_kind(subj: str) -> str:
    """The kind of a logical subject (bounded metric label: unknown subjects are 'other')."""
    parts = subj.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "voxguard" and parts[1] in KINDS else "other"


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    max_age_s: float
    max_bytes: int = -1
    duplicate_window_s: float = 120.0
    description: str = ""


def default_streams(
    traffic_max_age_s: float = 3600.0,
    events_max_age_s: float = 30 * 86400.0,
    traffic_max_bytes: int = 2 * 1024**3,
) -> tuple[StreamSpec, ...]:
    """The two VoxGuard streams (retention overridable, e.g. from the operator config).

    Traffic is also capped in bytes, because under attack the number of per-host targets (and
    so messages per tick) grows. JetStream *reserves* a stream's max_bytes on disk up front, so
    the cap is modest (tests use a few MiB), and the low-volume events stream has none.
    """
    return (
        StreamSpec(
            STREAM_TRAFFIC,
            ("voxguard.traffic.v1.>",),
            traffic_max_age_s,
            max_bytes=traffic_max_bytes,
            description="per-tick traffic aggregates from ingest (short retention)",
        ),
        StreamSpec(
            STREAM_EVENTS,
            tuple(f"voxguard.{k}.v1.>" for k in ("anomaly", "incident", "mitigation", "notification")),
            events_max_age_s,
            description="anomalies, incidents, mitigations, notifications (long retention)",
        ),
    )


@dataclass(frozen=True)
class Delivery:
    """What a handler knows about the message besides its body."""

    subject: str  # logical (namespace stripped)
    stream_seq: int
    num_delivered: int  # 1 on first delivery
    msg_id: str | None
    headers: Mapping[str, str]


Handler = Callable[[M, Delivery], Awaitable[None]]


class PublishError(Exception):
    """Some messages of a batch were not acked by JetStream."""

    def __init__(self, failed: int, total: int, first: BaseException) -> None:
        super().__init__(f"{failed} of {total} messages not published: {first!r}")
        self.failed = failed
        self.total = total
        self.first = first


_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")


class Bus:
    """One NATS connection with JetStream, shared by a process's publishers and consumers."""

    def __init__(
        self,
        url: str | None = None,
        *,
        name: str = "voxguard",
        namespace: str = "",
        connect_timeout_s: float = 30.0,
        request_timeout_s: float = 5.0,
    ) -> None:
        if namespace and not _NAMESPACE_RE.fullmatch(namespace):
            raise ValueError("namespace must be 1-32 characters of A-Z a-z 0-9 _ -")
        self.url = url or DEFAULT_NATS_URL
        self.name = name
        self.namespace = namespace
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._subs: list[Subscription[Any]] = []
        self._closing = False

    # -- connection -------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, retrying until ``connect_timeout_s``; reconnects forever afterwards."""
        if self._nc is not None and self._nc.is_connected:
            return

        async def on_error(exc: Exception) -> None:
            _rlog.warning(("error", type(exc).__name__), "nats error", url=self.url, error=str(exc))

        async def on_disconnected() -> None:
            if not self._closing:
                log.warning("nats disconnected", url=self.url)

        async def on_reconnected() -> None:
            log.info("nats reconnected", url=self.url)

        nc = Client()
        self._closing = False
        try:
            await asyncio.wait_for(
                nc.connect(
                    servers=[self.url],
                    name=self.name,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    connect_timeout=2,
                    error_cb=on_error,
                    disconnected_cb=on_disconnected,
                    reconnected_cb=on_reconnected,
                ),
                self.connect_timeout_s,
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            raise ConnectionError(f"cannot connect to NATS at {self.url}: {exc!r}") from exc
        self._nc = nc
        self._js = nc.jetstream(timeout=self.request_timeout_s)

    async def close(self) -> None:
        """Stop every subscription, flush pending publishes and close the connection."""
        self._closing = True
        for sub in list(self._subs):
            await sub.stop()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.flush(timeout=2)
            await self._nc.close()
        self._nc = self._js = None

    async def __aenter__(self) -> Bus:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise RuntimeError("Bus is not connected; call connect() first")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("Bus is not connected; call connect() first")
        return self._js

    async def ready(self) -> bool:
        """Readiness check: connected and JetStream answering."""
        if self._nc is None or not self._nc.is_connected:
            return False
        try:
            await asyncio.wait_for(self.js.account_info(), 2.0)
            return True
        except Exception:
            return False

    # -- naming ---------------------------------------------------------------------------

    def wire_subject(self, logical: str) -> str:
        return f"{self.namespace}.{logical}" if self.namespace else logical

    def logical_subject(self, wire: str) -> str:
        prefix = f"{self.namespace}." if self.namespace else ""
        return wire[len(prefix) :] if prefix and wire.startswith(prefix) else wire

    def stream_name(self, logical: str) -> str:
        return f"{self.namespace}_{logical}" if self.namespace else logical

    # -- streams --------------------------------------------------------------------------

    async def ensure_streams(self, specs: Iterable[StreamSpec] | None = None) -> None:
        """Create the streams, or update them to these subjects and limits (idempotent)."""
        for spec in specs or default_streams():
            config = api.StreamConfig(
                name=self.stream_name(spec.name),
                description=spec.description or None,
                subjects=[self.wire_subject(s) for s in spec.subjects],
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                discard=api.DiscardPolicy.OLD,
                max_age=spec.max_age_s,
                max_bytes=spec.max_bytes,
                max_msg_size=MAX_MSG_BYTES,
                duplicate_window=spec.duplicate_window_s,
            )
            try:
                await self.js.stream_info(config.name or "")
            except nats.js.errors.NotFoundError:
                await self.js.add_stream(config)
                log.info("stream created", stream=config.name, subjects=config.subjects)
            else:
                await self.js.update_stream(config)

    async def delete_streams(self, specs: Iterable[StreamSpec] | None = None) -> None:
        """Delete this namespace's streams (test clean-up)."""
        for spec in specs or default_streams():
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self.js.delete_stream(self.stream_name(spec.name))

    # -- publishing -----------------------------------------------------------------------

    @staticmethod
    def _encode(model: BaseModel, msg_id: str | None, trace_headers: Mapping[str, str]) -> tuple[bytes, dict[str, str]]:
        headers = dict(trace_headers)
        mid = msg_id if msg_id is not None else getattr(model, "id", None)
        if mid is not None:
            headers[MSG_ID_HEADER] = str(mid)
        return model.model_dump_json().encode(), headers

    async def publish(self, subj: str, model: BaseModel, *, msg_id: str | None = None) -> api.PubAck:
        """Publish one message and wait for JetStream's ack (stored durably, or duplicate)."""
        kind = subject_kind(subj)
        with _tracer.start_as_current_span(f"publish {subj}", kind=SpanKind.PRODUCER) as span:
            span.set_attribute("messaging.system", "nats")
            span.set_attribute("messaging.destination.name", subj)
            data, headers = self._encode(model, msg_id, inject_headers())
            try:
                ack = await self.js.publish(self.wire_subject(subj), data, headers=headers)
            except Exception:
                BUS_PUBLISH_FAILED.labels(kind).inc()
                raise
        BUS_PUBLISHED.labels(kind).inc()
        return ack

    async def publish_many(self, items: Iterable[tuple[str, BaseModel]], *, timeout_s: float = 10.0) -> int:
        """Publish a burst of models pipelined (see ``publish_raw_many``)."""
        raw = [(subj, model.model_dump_json().encode(), str(getattr(model, "id", "") or "")) for subj, model in items]
        return await self.publish_raw_many(raw, timeout_s=timeout_s)

    async def publish_raw_many(
        self,
        items: Iterable[tuple[str, bytes, str]],
        *,
        timeout_s: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> int:
        """Publish already-encoded ``(subject, JSON bytes, message id)`` pipelined: send all,
        then await the acks together. ``headers`` go on every message (a tick manifest).

        For the collector's per-tick burst (one message per target, serialised without
        pydantic). JetStream's bounded async-publish window (4000 in flight) applies
        back-pressure. Returns the number of messages acked; raises PublishError (after every
        ack or failure is in) when any was not.
        """
        pending: list[tuple[str, asyncio.Future[api.PubAck]]] = []
        items = list(items)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        with _tracer.start_as_current_span("publish_many", kind=SpanKind.PRODUCER) as span:
            span.set_attribute("messaging.system", "nats")
            span.set_attribute("messaging.batch.message_count", len(items))
            trace_headers = inject_headers()  # one span for the burst: encode its context once
            if headers:
                trace_headers = {**trace_headers, **headers}
            try:
                # One deadline for the whole burst; no per-message timeout, because wrapping each
                # send in wait_for yields to the loop per message and costs one socket write each.
                async with asyncio.timeout_at(deadline):
                    for subj, data, mid in items:
                        headers = dict(trace_headers)
                        if mid:
                            headers[MSG_ID_HEADER] = mid
                        fut = await self.js.publish_async(self.wire_subject(subj), data, headers=headers)
                        pending.append((subj, fut))
            except TimeoutError:
                pass  # unsent messages are counted as failed below
            if pending:
                _, not_done = await asyncio.wait([f for _, f in pending], timeout=max(0.0, deadline - loop.time()))
                for f in not_done:
                    f.cancel()
        failed = len(items) - len(pending)
        for subj, _, _ in items[len(pending) :]:
            BUS_PUBLISH_FAILED.labels(subject_kind(subj)).inc()
        first: BaseException | None = TimeoutError("publish window stalled") if failed else None
        ok: dict[str, int] = {}
        for subj, fut in pending:
            exc = TimeoutError("no ack") if fut.cancelled() else fut.exception()
            if exc is None:
                kind = subject_kind(subj)
                ok[kind] = ok.get(kind, 0) + 1
            else:
                BUS_PUBLISH_FAILED.labels(subject_kind(subj)).inc()
                failed += 1
                first = first or exc
        for kind, n in ok.items():
            BUS_PUBLISHED.labels(kind).inc(n)
        if first is not None:
            raise PublishError(failed, len(items), first)
        return len(items)

    # -- consuming ------------------------------------------------------------------------

    async def subscribe_durable(
        self,
        stream: str,
        durable_name: str,
        subject_filter: str,
        model_cls: type[M],
        handler: Handler[M],
        *,
        batch: int = 100,
        ack_wait_s: float = 30.0,
        max_deliver: int = -1,
        max_ack_pending: int = 1000,
        fetch_timeout_s: float = 1.0,
        nak_delay_s: float = 1.0,
        max_nak_delay_s: float = 60.0,
        deliver_policy: api.DeliverPolicy = api.DeliverPolicy.ALL,
        decoder: Callable[[bytes], M] | None = None,
    ) -> Subscription[M]:
        """Start a durable pull consumer that feeds validated models to ``handler``.

        ``stream`` is the logical name (``STREAM_TRAFFIC``/``STREAM_EVENTS``); the durable is
        created or updated. Messages are handled one at a time in stream order; the consumer
        keeps its position across restarts. Returns a handle whose ``stop()`` ends it cleanly.
        ``deliver_policy`` applies when the durable is created (``NEW``: no backlog replay).
        ``decoder`` replaces ``model_cls.model_validate_json`` (e.g. for a subject carrying two
        message kinds); a ``ValueError`` from it terminates the message like a validation error.
        """
        config = api.ConsumerConfig(
            name=durable_name,
            durable_name=durable_name,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=deliver_policy,
            filter_subject=self.wire_subject(subject_filter),
            ack_wait=ack_wait_s,
            max_deliver=max_deliver,
            max_ack_pending=max_ack_pending,
        )
        wire_stream = self.stream_name(stream)
        await self.js.add_consumer(wire_stream, config)
        psub = await self.js.pull_subscribe_bind(durable=durable_name, stream=wire_stream)
        sub: Subscription[M] = Subscription(
            self,
            psub,
            durable_name,
            model_cls,
            handler,
            batch=batch,
            ack_wait_s=ack_wait_s,
            fetch_timeout_s=fetch_timeout_s,
            nak_delay_s=nak_delay_s,
            max_nak_delay_s=max_nak_delay_s,
            decoder=decoder,
        )
        self._subs.append(sub)
        sub.start()
        return sub


class Subscription(Generic[M]):
    """A running durable consumer; ``await stop()`` to end it."""

    def __init__(
        self,
        bus: Bus,
        psub: JetStreamContext.PullSubscription,
        durable: str,
        model_cls: type[M],
        handler: Handler[M],
        *,
        batch: int,
        ack_wait_s: float,
        fetch_timeout_s: float,
        nak_delay_s: float,
        max_nak_delay_s: float,
        decoder: Callable[[bytes], M] | None = None,
    ) -> None:
        self._bus = bus
        self._decode: Callable[[bytes], M] = decoder or model_cls.model_validate_json
        self._psub = psub
        self.durable = durable
        self._model_cls = model_cls
        self._handler = handler
        self._batch = batch
        self._ack_wait_s = ack_wait_s
        self._fetch_timeout_s = fetch_timeout_s
        self._nak_delay_s = nak_delay_s
        self._max_nak_delay_s = max_nak_delay_s
        self._stopping = asyncio.Event()
        self._fetching = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"bus-consumer-{self.durable}")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Stop fetching; a handler in progress finishes (and acks) first."""
        self._stopping.set()
        if self._task is not None:
            if self._fetching:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._psub.unsubscribe()
        if self in self._bus._subs:
            self._bus._subs.remove(self)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._fetching = True
                msgs = await self._psub.fetch(self._batch, timeout=self._fetch_timeout_s)
            except TimeoutError:  # nats' "no message in time", or asyncio's when the pull is slow
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # disconnected, consumer deleted, ...: keep trying
                _rlog.warning(("fetch", self.durable), "fetch failed", consumer=self.durable, error=repr(exc))
                await asyncio.sleep(1.0)
                continue
            finally:
                self._fetching = False
            for i, msg in enumerate(msgs):
                if self._stopping.is_set():
                    # Hand the rest back at once rather than after ack_wait.
                    for rest in msgs[i:]:
                        with contextlib.suppress(Exception):
                            await rest.nak()
                    break
                await self._process(msg)

    async def _process(self, msg: Msg) -> None:
        subj = self._bus.logical_subject(msg.subject)
        kind = subject_kind(subj)
        headers = dict(msg.headers or {})
        try:
            meta = msg.metadata
            seq, delivered = meta.sequence.stream, meta.num_delivered
        except Exception:
            seq, delivered = 0, 1
        try:
            model = self._decode(msg.data)
        except ValueError as exc:  # pydantic's ValidationError is one
            BUS_INVALID.labels(kind, self.durable).inc()
            _rlog.warning(
                ("invalid", self.durable),
                "message failed validation; terminated",
                consumer=self.durable,
                subject=subj,
                seq=seq,
                error=str(exc)[:500],
            )
            await msg.term()
            return
        delivery = Delivery(subj, seq, delivered, headers.get(MSG_ID_HEADER), headers)
        with _tracer.start_as_current_span(
            f"process {subj}", context=extract_context(headers), kind=SpanKind.CONSUMER
        ) as span:
            span.set_attribute("messaging.system", "nats")
            span.set_attribute("messaging.consumer.group.name", self.durable)
            span.set_attribute("messaging.destination.name", subj)
            keepalive = asyncio.create_task(self._keep_alive(msg))
            try:
                await self._handler(model, delivery)
            except Exception as exc:
                BUS_HANDLER_FAILED.labels(kind, self.durable).inc()
                span.record_exception(exc)
                span.set_status(trace.Status(trace.StatusCode.ERROR))
                delay = min(self._max_nak_delay_s, self._nak_delay_s * 2 ** max(0, delivered - 1))
                _rlog.warning(
                    ("handler", self.durable),
                    "handler failed; message will be redelivered",
                    consumer=self.durable,
                    subject=subj,
                    seq=seq,
                    delivered=delivered,
                    retry_in_s=delay,
                    error=repr(exc),
                )
                with contextlib.suppress(Exception):
                    await msg.nak(delay=delay)
                return
            finally:
                keepalive.cancel()
        try:
            await msg.ack()
        except Exception as exc:  # lost ack: the message comes back; handlers are idempotent
            _rlog.warning(("ack", self.durable), "ack failed", consumer=self.durable, error=repr(exc))
            return
        BUS_CONSUMED.labels(kind, self.durable).inc()

    async def _keep_alive(self, msg: Msg) -> None:
        """Tell JetStream a long handler is still working, so it does not redeliver meanwhile."""
        with contextlib.suppress(Exception):
            while True:
                await asyncio.sleep(self._ack_wait_s / 3)
                await msg.in_progress()


__all__ = [
    "BUS_CONSUMED",
    "BUS_HANDLER_FAILED",
    "BUS_INVALID",
    "BUS_PUBLISHED",
    "BUS_PUBLISH_FAILED",
    "KINDS",
    "MSG_ID_HEADER",
    "STREAM_EVENTS",
    "STREAM_TRAFFIC",
    "Bus",
    "Delivery",
    "Handler",
    "PublishError",
    "StreamSpec",
    "Subscription",
    "default_streams",
    "subject",
    "subject_kind",
]
