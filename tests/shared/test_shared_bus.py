"""The JetStream adapter against a real nats-server (the nats_url fixture)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest
from nats.js import api
from opentelemetry import trace
from prometheus_client import REGISTRY
from pydantic import BaseModel, Field

from voxguard.shared.bus import (
    MSG_ID_HEADER,
    STREAM_EVENTS,
    STREAM_TRAFFIC,
    Bus,
    Delivery,
    PublishError,
    default_streams,
    subject,
    subject_kind,
)
from voxguard.shared.telemetry import setup_tracing

pytestmark = pytest.mark.timeout(60)


class Anomaly(BaseModel):
    schema_version: int = 1
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    ts: dt.datetime = Field(default_factory=lambda: dt.datetime.now(dt.UTC))
    target: str
    ratio: float


def durable() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


Collected = list[tuple[Anomaly, Delivery]]


def collector(into: Collected) -> Callable[[Anomaly, Delivery], Awaitable[None]]:
    async def handle(model: Anomaly, delivery: Delivery) -> None:
        into.append((model, delivery))

    return handle


def test_subjects() -> None:
    assert subject("traffic", "sbc") == "voxguard.traffic.v1.sbc"
    assert subject_kind("voxguard.incident.v1.media") == "incident"
    assert subject_kind("something.else") == "other"
    with pytest.raises(ValueError):
        subject("chat", "sbc")


async def test_streams_have_the_contract_subjects_and_retention(bus: Bus) -> None:
    ns = bus.namespace
    traffic = await bus.js.stream_info(f"{ns}_{STREAM_TRAFFIC}")
    assert traffic.config.subjects == [f"{ns}.voxguard.traffic.v1.>"]
    assert traffic.config.max_age == 3600
    assert traffic.config.storage == api.StorageType.FILE and traffic.config.discard == api.DiscardPolicy.OLD
    events = await bus.js.stream_info(f"{ns}_{STREAM_EVENTS}")
    assert events.config.subjects == [
        f"{ns}.voxguard.{k}.v1.>" for k in ("anomaly", "incident", "mitigation", "notification")
    ]
    assert events.config.max_age == 30 * 86400 and events.config.max_bytes == -1
    assert traffic.config.max_bytes == 64 * 1024 * 1024  # the fixture's test-sized cap
    small = 64 * 1024 * 1024
    await bus.ensure_streams(default_streams(traffic_max_bytes=small))  # idempotent
    await bus.ensure_streams(default_streams(traffic_max_age_s=600, traffic_max_bytes=small))  # updates
    assert (await bus.js.stream_info(f"{ns}_{STREAM_TRAFFIC}")).config.max_age == 600


async def test_default_stream_names_without_namespace(nats_url: str) -> None:
    async with Bus(nats_url) as b:
        await b.ensure_streams()
        info = await b.js.stream_info(STREAM_EVENTS)
        assert "voxguard.incident.v1.>" in (info.config.subjects or [])
        traffic = await b.js.stream_info(STREAM_TRAFFIC)
        assert traffic.config.max_bytes == 2 * 1024**3 and traffic.config.max_age == 3600
        assert await b.ready()
    assert not await b.ready()


async def test_publish_and_consume(bus: Bus) -> None:
    got: Collected = []
    sent = [Anomaly(target=f"sbc-{i}", ratio=6.0 + i) for i in range(3)]
    before_pub = sample("voxguard_bus_published_total", kind="anomaly")
    for m in sent:
        ack = await bus.publish(subject("anomaly", "sbc"), m)
        assert ack.stream == f"{bus.namespace}_{STREAM_EVENTS}"
    name = durable()
    sub = await bus.subscribe_durable(STREAM_EVENTS, name, "voxguard.anomaly.v1.>", Anomaly, collector(got))
    await wait_for(lambda: len(got) == 3)
    await sub.stop()
    assert [m for m, _ in got] == sent
    d = got[0][1]
    assert d.subject == "voxguard.anomaly.v1.sbc" and d.num_delivered == 1 and d.msg_id == sent[0].id
    assert [x.stream_seq for _, x in got] == [1, 2, 3]
    assert sample("voxguard_bus_published_total", kind="anomaly") - before_pub == 3
    assert sample("voxguard_bus_consumed_total", kind="anomaly", consumer=name) == 3
    info = await bus.js.consumer_info(f"{bus.namespace}_{STREAM_EVENTS}", name)
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_filter_only_delivers_matching_subjects(bus: Bus) -> None:
    got: Collected = []
    await bus.publish(subject("anomaly", "sbc"), Anomaly(target="a", ratio=2))
    await bus.publish(subject("anomaly", "media"), Anomaly(target="b", ratio=2))
    sub = await bus.subscribe_durable(STREAM_EVENTS, durable(), "voxguard.anomaly.v1.media", Anomaly, collector(got))
    await wait_for(lambda: len(got) == 1)
    await asyncio.sleep(0.3)
    await sub.stop()
    assert [m.target for m, _ in got] == ["b"]


async def test_message_id_deduplicates_publishes(bus: Bus) -> None:
    m = Anomaly(target="sbc-1", ratio=9)
    first = await bus.publish(subject("anomaly", "sbc"), m)
    again = await bus.publish(subject("anomaly", "sbc"), m)
    assert not first.duplicate and again.duplicate
    info = await bus.js.stream_info(f"{bus.namespace}_{STREAM_EVENTS}")
    assert info.state.messages == 1


async def test_handler_error_naks_and_the_message_comes_back(bus: Bus) -> None:
    attempts: list[int] = []

    async def flaky(model: Anomaly, delivery: Delivery) -> None:
        attempts.append(delivery.num_delivered)
        if delivery.num_delivered == 1:
            raise RuntimeError("database unavailable")

    name = durable()
    await bus.publish(subject("anomaly", "sbc"), Anomaly(target="x", ratio=3))
    sub = await bus.subscribe_durable(STREAM_EVENTS, name, "voxguard.anomaly.v1.>", Anomaly, flaky, nak_delay_s=0.1)
    await wait_for(lambda: attempts == [1, 2])
    await wait_for(lambda: sample("voxguard_bus_consumed_total", kind="anomaly", consumer=name) == 1)
    await sub.stop()
    assert sample("voxguard_bus_handler_failed_total", kind="anomaly", consumer=name) == 1


CRASHING_CONSUMER = """
import asyncio, sys
from pydantic import BaseModel
from voxguard.shared.bus import Bus, STREAM_EVENTS

class Anomaly(BaseModel):
    id: str
    target: str
    ratio: float

async def main(url, ns, name):
    bus = Bus(url, namespace=ns)
    await bus.connect()
    async def handler(model, delivery):
        print("working", model.id, flush=True)
        await asyncio.sleep(3600)   # killed here, before the ack
    await bus.subscribe_durable(
        STREAM_EVENTS, name, "voxguard.anomaly.v1.>", Anomaly, handler, ack_wait_s=1.0
    )
    await asyncio.sleep(3600)

asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_crash_before_ack_means_redelivery_to_the_next_process(bus: Bus, nats_url: str) -> None:
    name = durable()
    m = Anomaly(target="sbc-9", ratio=12)
    await bus.publish(subject("anomaly", "sbc"), m)
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING_CONSUMER, nats_url, bus.namespace, name],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        assert line.split() == ["working", m.id]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
    got: Collected = []
    sub = await bus.subscribe_durable(
        STREAM_EVENTS, name, "voxguard.anomaly.v1.>", Anomaly, collector(got), ack_wait_s=1.0
    )
    await wait_for(lambda: len(got) == 1)
    await sub.stop()
    assert got[0][0] == m and got[0][1].num_delivered == 2


async def test_poison_messages_are_terminated_and_counted(bus: Bus) -> None:
    got: Collected = []
    wire = bus.wire_subject(subject("anomaly", "sbc"))
    await bus.js.publish(wire, b"\xff not json")
    await bus.js.publish(wire, b'{"target": "x"}')  # valid JSON, missing ratio
    good = Anomaly(target="ok", ratio=4)
    await bus.publish(subject("anomaly", "sbc"), good)
    name = durable()
    sub = await bus.subscribe_durable(
        STREAM_EVENTS, name, "voxguard.anomaly.v1.>", Anomaly, collector(got), ack_wait_s=1.0
    )
    await wait_for(lambda: len(got) == 1)
    await asyncio.sleep(1.5)  # past ack_wait: terminated messages must not come back
    await sub.stop()
    assert [m for m, _ in got] == [good]
    assert sample("voxguard_bus_invalid_total", kind="anomaly", consumer=name) == 2
    info = await bus.js.consumer_info(f"{bus.namespace}_{STREAM_EVENTS}", name)
    assert info.num_ack_pending == 0 and info.num_redelivered == 0


async def test_trace_context_travels_to_the_handler(bus: Bus) -> None:
    setup_tracing("test")
    seen: list[tuple[int, dict[str, str]]] = []

    async def handler(model: Anomaly, delivery: Delivery) -> None:
        seen.append((trace.get_current_span().get_span_context().trace_id, dict(delivery.headers)))

    with trace.get_tracer("test").start_as_current_span("detect") as span:
        await bus.publish(subject("anomaly", "sbc"), Anomaly(target="t", ratio=5))
        trace_id = span.get_span_context().trace_id
    sub = await bus.subscribe_durable(STREAM_EVENTS, durable(), "voxguard.anomaly.v1.>", Anomaly, handler)
    await wait_for(lambda: len(seen) == 1)
    await sub.stop()
    assert seen[0][0] == trace_id
    assert seen[0][1]["traceparent"].split("-")[1] == format(trace_id, "032x")
    assert MSG_ID_HEADER in seen[0][1]


async def test_publish_many_pipelines_a_tick_burst(bus: Bus) -> None:
    n = 500
    items = [(subject("traffic", "media"), Anomaly(target=f"media-{i}", ratio=1.0)) for i in range(n)]
    assert await bus.publish_many(items) == n
    assert await bus.publish_many([]) == 0
    info = await bus.js.stream_info(f"{bus.namespace}_{STREAM_TRAFFIC}")
    assert info.state.messages == n


async def test_publish_raw_many_sends_pre_encoded_json_with_ids(bus: Bus) -> None:
    got: Collected = []
    raw = [
        (subject("anomaly", "api"), Anomaly(target=f"api-{i}", ratio=2).model_dump_json().encode(), f"m{i}")
        for i in range(3)
    ]
    assert await bus.publish_raw_many(raw + raw[:1]) == 4  # the repeat is acked as a duplicate
    sub = await bus.subscribe_durable(STREAM_EVENTS, durable(), "voxguard.anomaly.v1.api", Anomaly, collector(got))
    await wait_for(lambda: len(got) == 3)
    await sub.stop()
    assert [(m.target, d.msg_id) for m, d in got] == [("api-0", "m0"), ("api-1", "m1"), ("api-2", "m2")]


async def test_publish_many_reports_unstored_messages(bus: Bus) -> None:
    before = sample("voxguard_bus_publish_failed_total", kind="other")
    items = [("nowhere.subject", Anomaly(target="x", ratio=1)) for _ in range(3)]
    with pytest.raises(PublishError) as exc:
        await bus.publish_many(items, timeout_s=3)
    assert (exc.value.failed, exc.value.total) == (3, 3)
    assert sample("voxguard_bus_publish_failed_total", kind="other") - before == 3


async def test_stop_is_prompt_and_keeps_the_durable(bus: Bus) -> None:
    name = durable()
    sub = await bus.subscribe_durable(
        STREAM_EVENTS, name, "voxguard.anomaly.v1.>", Anomaly, collector([]), fetch_timeout_s=5.0
    )
    await asyncio.sleep(0.2)  # parked in a 5 s fetch
    t0 = time.monotonic()
    await sub.stop()
    assert time.monotonic() - t0 < 1.0 and not sub.running
    info = await bus.js.consumer_info(f"{bus.namespace}_{STREAM_EVENTS}", name)
    assert info.config.durable_name == name


async def test_connect_failure_is_reported() -> None:
    b = Bus("nats://127.0.0.1:1", connect_timeout_s=1.0)
    with pytest.raises(ConnectionError, match=r"127\.0\.0\.1:1"):
        await b.connect()
    with pytest.raises(ValueError):
        Bus(namespace="bad.name")
