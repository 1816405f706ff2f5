"""Retries with backoff, dead letters, idempotency across restarts, misbehaving receivers."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import httpx
import pytest

from voxguard.notify.config import NotifyConfig, RetryPolicy
from voxguard.notify.delivery import backoff
from voxguard.notify.store import Store

from .conftest import FAST_RETRY, WH_SECRET, Published, incident_event, make_config, running
from .fakesaas import SLACK_PATH, FakeSaaS, garbage_server


def _one_channel(base: str, channel: dict[str, Any]) -> NotifyConfig:
    return make_config(base, notifications={"channels": {"c": channel}, "routes": [{"name": "all", "channels": ["c"]}]})


def _slack(base: str, **extra: Any) -> dict[str, Any]:
    return {"type": "slack", "url": f"{base}{SLACK_PATH}", "retry": FAST_RETRY, "rate_per_s": 100, **extra}


async def test_fake_vendor_rejects_contract_violations(saas: FakeSaaS) -> None:
    async with httpx.AsyncClient() as c:
        r = await c.post(f"{saas.url}{SLACK_PATH}", json={"blocks": [{"type": "header"}]})
    assert r.status_code == 422 and saas.violations


def test_backoff_grows_exponentially_with_jitter_and_honours_retry_after() -> None:
    p = RetryPolicy(base_s=1, cap_s=300, jitter=0.5)
    rng = random.Random(1)
    delays = [backoff(p, n, rng) for n in range(1, 12)]
    assert all(0.5 * min(300, 2 ** (n - 1)) <= d <= min(300, 2 ** (n - 1)) for n, d in enumerate(delays, 1))
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered
    assert backoff(p, 1, rng, retry_after=30) == 30


async def test_429_500_and_timeout_are_retried_until_sent(saas: FakeSaaS, store: Store, published: Published) -> None:
    saas.queue("slack", "429:0.3", "500", "timeout")
    cfg = _one_channel(saas.url, _slack(saas.url, retry={**FAST_RETRY, "max_attempts": 5, "timeout_s": 0.5}))
    started = time.monotonic()
    async with running(cfg, store, publish=published) as svc:
        await svc.on_incident(incident_event())
        await svc.dispatcher.drain()
    assert time.monotonic() - started >= 0.3  # Retry-After held the channel
    [row] = store.list()
    assert row.status == "sent" and row.attempts == 4
    history = store.attempts(row.id)
    assert [(a.status, a.response_code) for a in history] == [
        ("retrying", 429),
        ("retrying", 500),
        ("retrying", None),
        ("sent", 200),
    ]
    assert "timeout" in (history[2].detail or "")
    assert all(a.latency_ms is not None for a in history)
    assert [e.status for e in published.events] == ["retrying", "retrying", "retrying", "sent"]
    assert saas.violations == []


async def test_dead_letter_after_last_attempt_then_retry(saas: FakeSaaS, store: Store) -> None:
    saas.queue("slack", "500", "500", "500")
    cfg = _one_channel(saas.url, _slack(saas.url))
    async with running(cfg, store) as svc:
        await svc.on_incident(incident_event())
        await svc.dispatcher.drain()
        [row] = store.list(status="dead_letter")
        assert row.attempts == 3 and "gave up after 3 attempts" in (row.last_detail or "")
        assert store.requeue(row.id, svc.clock.now())
        svc.dispatcher.kick()
        await svc.dispatcher.drain()
    row2 = store.get(row.id)
    assert row2 is not None and row2.status == "sent"
    assert len(saas.of("slack")) == 4


async def test_permanent_errors_dead_letter_at_once(saas: FakeSaaS, store: Store) -> None:
    saas.queue("webhook", "410")
    cfg = _one_channel(
        saas.url, {"type": "webhook", "url": f"{saas.url}/webhook/x", "secret": WH_SECRET, "retry": FAST_RETRY}
    )
    async with running(cfg, store) as svc:
        await svc.on_incident(incident_event())
        await svc.dispatcher.drain()
    [row] = store.list()
    assert row.status == "dead_letter" and row.attempts == 1 and row.last_code == 410


async def test_nothing_sent_twice_across_a_restart(saas: FakeSaaS, store: Store) -> None:
    cfg = make_config(saas.url)
    ev = incident_event(severity="critical")
    async with running(cfg, store) as svc:
        await svc.on_incident(ev)
        await svc.on_incident(ev)  # bus redelivery
        await svc.dispatcher.drain()
    async with running(cfg, store) as svc2:  # a restart: fresh process state, same database
        assert await svc2.handle_alert(__import__("voxguard.notify.events", fromlist=["x"]).from_incident(ev)) == []
        await svc2.dispatcher.drain()
    assert len(saas.of("pagerduty")) == 1 and len(saas.of("slack")) == 1


async def test_pending_rows_survive_a_restart(saas: FakeSaaS, store: Store) -> None:
    """Enqueued but not sent when the process died: the next start sends it, once."""
    cfg = _one_channel(saas.url, _slack(saas.url))
    svc = __import__("voxguard.notify.service", fromlist=["x"]).NotifyService(cfg, store, poll_s=0.02)
    await svc.handle_alert(__import__("voxguard.notify.events", fromlist=["x"]).from_incident(incident_event()))
    assert store.counts() == {"pending": 1}
    async with running(cfg, store) as svc2:
        await svc2.dispatcher.drain()
    assert store.counts() == {"sent": 1} and len(saas.of("slack")) == 1


async def test_receiver_speaking_garbage_ends_in_dead_letters_with_a_clear_reason(store: Store) -> None:
    server, port = await garbage_server()
    try:
        url = f"http://127.0.0.1:{port}/hook"
        cfg = _one_channel(url, {"type": "webhook", "url": url, "secret": WH_SECRET, "retry": FAST_RETRY})
        async with running(cfg, store) as svc:
            await svc.on_incident(incident_event())
            await svc.dispatcher.drain()
    finally:
        server.close()
    [row] = store.list()
    assert row.status == "dead_letter"
    assert "protocol" in (row.last_detail or "").lower()


async def test_unreachable_channel_is_recorded_not_lost(store: Store) -> None:
    url = "http://127.0.0.1:9/hook"  # discard port: refused
    cfg = _one_channel(url, _slack("http://127.0.0.1:9"))
    async with running(cfg, store) as svc:
        await svc.on_incident(incident_event())
        await svc.dispatcher.drain()
    [row] = store.list(status="dead_letter")
    assert "ConnectError" in (row.last_detail or "")
    assert len(store.attempts(row.id)) == 3


async def test_webhook_id_is_stable_across_retries(saas: FakeSaaS, store: Store) -> None:
    saas.queue("webhook", "500")
    cfg = _one_channel(
        saas.url, {"type": "webhook", "url": f"{saas.url}/webhook/x", "secret": WH_SECRET, "retry": FAST_RETRY}
    )
    async with running(cfg, store) as svc:
        await svc.on_incident(incident_event())
        await svc.dispatcher.drain()
    ids = {r.headers["webhook-id"] for r in saas.of("webhook")}
    assert len(saas.of("webhook")) == 2 and len(ids) == 1 and saas.violations == []


async def test_secrets_stay_out_of_logs_and_the_delivery_log(
    store: Store, caplog: pytest.LogCaptureFixture, published: Published
) -> None:
    cfg = _one_channel("http://127.0.0.1:9", _slack("http://127.0.0.1:9"))  # refused: every attempt fails
    with caplog.at_level(logging.DEBUG):
        async with running(cfg, store, publish=published) as svc:
            await svc.on_incident(incident_event())
            await svc.dispatcher.drain()
    [row] = store.list()
    texts = [caplog.text, row.last_detail or "", *(a.detail or "" for a in store.attempts(row.id))]
    texts += [e.model_dump_json() for e in published.events]
    assert row.status == "dead_letter"
    assert not any("XXXXSECRET" in t for t in texts)


async def test_suppressed_notifications_are_recorded_and_reported(
    saas: FakeSaaS, store: Store, published: Published
) -> None:
    import datetime as dt

    from voxguard.notify.clock import ManualClock

    clock = ManualClock(dt.datetime(2026, 1, 5, 23, 30, tzinfo=dt.UTC))
    route = {"name": "noc", "channels": ["c"], "quiet_hours": {"start": "22:00", "end": "07:00"}}
    cfg = make_config(saas.url, notifications={"channels": {"c": _slack(saas.url)}, "routes": [route]})
    async with running(cfg, store, clock=clock, publish=published) as svc:
        await svc.on_incident(incident_event(severity="warning"))
        await svc.dispatcher.drain()
    [row] = store.list()
    assert row.status == "suppressed" and "quiet hours" in (row.last_detail or "")
    assert saas.of("slack") == []
    assert [(e.status, e.channel) for e in published.events] == [("suppressed", "c")]


async def test_token_bucket_holds_a_channel_to_its_provider_rate() -> None:
    from voxguard.notify.delivery import TokenBucket

    bucket = TokenBucket(rate=20, burst=2)
    started = time.monotonic()
    for _ in range(12):
        await bucket.acquire()
    assert time.monotonic() - started >= (12 - 2) / 20 * 0.95
    bucket.pause(0.2)  # a 429's Retry-After holds every sender of the channel
    paused = time.monotonic()
    await bucket.acquire()
    assert time.monotonic() - paused >= 0.19


async def test_channel_rate_limit_spaces_real_deliveries(saas: FakeSaaS, store: Store) -> None:
    cfg = _one_channel(saas.url, _slack(saas.url, rate_per_s=10, burst=1, concurrency=4))
    async with running(cfg, store) as svc:
        for n in range(6):
            await svc.on_incident(incident_event(incident_id=f"i{n}"))
        await svc.dispatcher.drain()
    stamps = [t for v, t in saas.stamps if v == "slack"]
    # the bucket may hold one saved token (burst 1) when the burst starts; then 10/s
    assert len(stamps) == 6 and stamps[-1] - stamps[1] >= 4 / 10 * 0.9
