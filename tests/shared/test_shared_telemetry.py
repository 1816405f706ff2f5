"""Logging, rate-limited logging, tracing setup and trace-context propagation."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from opentelemetry import trace

from voxguard.shared.telemetry import (
    RateLimitedLog,
    build_tracer_provider,
    configure_logging,
    extract_context,
    get_logger,
    inject_headers,
    setup_tracing,
)


class ListLogger:
    def __init__(self) -> None:
        self.lines: list[tuple[int, str, dict[str, Any]]] = []

    def log(self, level: int, event: str, **kw: Any) -> None:
        self.lines.append((level, event, kw))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limited_log_caps_per_key_and_reports_suppressed() -> None:
    out, clock = ListLogger(), FakeClock()
    rl = RateLimitedLog(out, per_interval=3, interval=10.0, clock=clock)
    emitted = [rl.warning("10.0.0.1", "bad datagram", n=i) for i in range(10)]
    assert emitted == [True] * 3 + [False] * 7
    assert rl.warning("10.0.0.2", "bad datagram")  # other keys have their own budget
    assert rl.suppressed("10.0.0.1") == 7 and rl.suppressed_total == 7
    clock.now += 10.0
    assert rl.warning("10.0.0.1", "bad datagram", n=99)
    level, event, fields = out.lines[-1]
    assert (level, event, fields) == (logging.WARNING, "bad datagram", {"n": 99, "suppressed": 7})
    assert rl.suppressed("10.0.0.1") == 0
    assert len(out.lines) == 5


def test_rate_limited_log_bounds_tracked_keys() -> None:
    out, clock = ListLogger(), FakeClock()
    rl = RateLimitedLog(out, per_interval=1, interval=60.0, max_keys=100, clock=clock)
    for i in range(10_000):
        rl.info(f"spoofed-{i}", "x")
    assert len(rl._windows) == 100
    with pytest.raises(ValueError):
        RateLimitedLog(out, per_interval=0)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_configure_logging_json_joins_stdlib_and_traces(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging("baseline", level="INFO", fmt="json")
    configure_logging("baseline", level="INFO", fmt="json")  # idempotent: still one line per event
    setup_tracing("test")
    with trace.get_tracer("t").start_as_current_span("work") as span:
        get_logger("voxguard.test").info("tick stored", target="sbc-1")
        logging.getLogger("alembic.runtime").warning("plain stdlib %s", "message")
        trace_id = format(span.get_span_context().trace_id, "032x")
    get_logger("voxguard.test").debug("below level")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert len(lines) == 2
    ours, stdlib = lines
    assert ours["event"] == "tick stored" and ours["target"] == "sbc-1"
    assert ours["service"] == "baseline" and ours["level"] == "info" and ours["trace_id"] == trace_id
    assert stdlib["event"] == "plain stdlib message" and stdlib["logger"] == "alembic.runtime"
    assert stdlib["service"] == "baseline" and "timestamp" in stdlib


def test_configure_logging_console_and_bad_format(capsys: pytest.CaptureFixture[str], restore_logging: None) -> None:
    configure_logging("ingest", level="WARNING", fmt="console")
    get_logger("x").warning("exporter silent", exporter="edge-sbc-01")
    err = capsys.readouterr().err
    assert "exporter silent" in err and "edge-sbc-01" in err and not err.lstrip().startswith("{")
    with pytest.raises(ValueError):
        configure_logging("ingest", level="INFO", fmt="xml")


def test_trace_context_round_trips_through_headers() -> None:
    setup_tracing("test")
    assert setup_tracing("other") is setup_tracing("test")  # one provider per process
    with trace.get_tracer("t").start_as_current_span("publish") as span:
        headers = inject_headers({"Nats-Msg-Id": "m1"})
        sent = span.get_span_context()
    assert headers["Nats-Msg-Id"] == "m1"
    assert headers["traceparent"].split("-")[1] == format(sent.trace_id, "032x")
    got = trace.get_current_span(extract_context(headers)).get_span_context()
    assert (got.trace_id, got.span_id) == (sent.trace_id, sent.span_id)
    assert not trace.get_current_span(extract_context({})).get_span_context().is_valid
    assert not trace.get_current_span(extract_context({"traceparent": "garbage"})).get_span_context().is_valid


def test_no_exporter_without_endpoint() -> None:
    provider = build_tracer_provider("x", None)
    assert provider._active_span_processor._span_processors == ()


def test_otlp_http_export_when_endpoint_is_set() -> None:
    received: list[tuple[str, str, int]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["Content-Type"], len(body)))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        provider = build_tracer_provider("ingest", f"http://127.0.0.1:{server.server_port}/")
        with provider.get_tracer("t").start_as_current_span("decode batch"):
            pass
        assert provider.force_flush(10_000)
        provider.shutdown()
    finally:
        server.shutdown()
    assert received and received[0][0] == "/v1/traces"
    assert received[0][1] == "application/x-protobuf" and received[0][2] > 0
