"""Logging, rate-limited logging and tracing shared by all services.

* ``configure_logging(service)``: structlog over stdlib logging, so our events and those of
  uvicorn/alembic/nats come out in one format (JSON for machines, console for humans), each
  with the service name and, inside a span, the trace and span ids (logs join traces).
* ``RateLimitedLog``: a flow collector under attack can receive millions of bad datagrams;
  logging each would turn a DDoS into a disk-filling one. At most N lines per key per interval,
  with the suppressed count reported on the next line that gets through.
* ``setup_tracing(service)``: an SDK TracerProvider always (trace ids exist for propagation and
  log correlation), with an OTLP/HTTP exporter only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.
* ``inject_headers`` / ``extract_context``: W3C trace context in NATS headers.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, MutableMapping
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_HANDLER_MARK = "_voxguard_handler"


def _add_trace_ids(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event.setdefault("span_id", format(ctx.span_id, "016x"))
    return event


def configure_logging(service: str, level: str | int | None = None, fmt: str | None = None) -> None:
    """Configure structlog + stdlib logging for a process (idempotent; last call wins).

    ``level`` / ``fmt`` default to ``VOXGUARD_LOG_LEVEL`` / ``VOXGUARD_LOG_FORMAT``.
    """
    if level is None or fmt is None:
        from voxguard.shared.settings import load_settings

        s = load_settings()
        level = s.log_level if level is None else level
        fmt = s.log_format if fmt is None else fmt
    if fmt not in ("json", "console"):
        raise ValueError(f"log format must be json or console, not {fmt!r}")

    def add_service(_l: Any, _n: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event.setdefault("service", service)
        return event

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_service,
        _add_trace_ids,
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Any
    if fmt == "json":
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        # Plain tracebacks: rich ones take 2-5 s to render through FastAPI's deep stacks, so
        # every request that hits a bug would cost seconds of CPU, a DoS of its own.
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _HANDLER_MARK, False):
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # libraries that narrate routine work at INFO: keep their warnings only
    for noisy in ("alembic", "nats", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A structlog logger (works before configure_logging too, with structlog's defaults)."""
    return structlog.stdlib.get_logger(name, **initial)


class RateLimitedLog:
    """At most ``per_interval`` messages per key per ``interval`` seconds.

    Keys are whatever the caller groups by (exporter address, error kind). Suppressed
    messages are counted: per key (reported as ``suppressed=N`` on the key's next line) and in
    total (``suppressed_total``, for a metric). At most ``max_keys`` keys are tracked, oldest
    first out, so spoofed sources cannot grow memory without bound. ``logger`` is a structlog
    logger (``get_logger(...)``): fields are passed as keyword arguments.
    """

    def __init__(
        self,
        logger: Any,
        *,
        per_interval: int = 10,
        interval: float = 60.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_interval < 1 or interval <= 0 or max_keys < 1:
            raise ValueError("per_interval >= 1, interval > 0 and max_keys >= 1 are required")
        self._logger = logger
        self.per_interval = per_interval
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        # key -> [window start, emitted in window, suppressed not yet reported]
        self._windows: OrderedDict[Hashable, list[float]] = OrderedDict()
        self.suppressed_total = 0

    def suppressed(self, key: Hashable) -> int:
        """Messages suppressed for ``key`` and not yet reported."""
        w = self._windows.get(key)
        return int(w[2]) if w else 0

    def log(self, level: int, key: Hashable, event: str, **fields: Any) -> bool:
        """Log unless over the limit; True when the message was emitted."""
        now = self._clock()
        with self._lock:
            w = self._windows.get(key)
            if w is None:
                w = [now, 0, 0]
                self._windows[key] = w
                while len(self._windows) > self.max_keys:
                    self._windows.popitem(last=False)
            else:
                self._windows.move_to_end(key)
                if now - w[0] >= self.interval:
                    w[0], w[1] = now, 0
            if w[1] >= self.per_interval:
                w[2] += 1
                self.suppressed_total += 1
                return False
            w[1] += 1
            pending, w[2] = int(w[2]), 0
        if pending:
            fields["suppressed"] = pending
        self._logger.log(level, event, **fields)
        return True

    def debug(self, key: Hashable, event: str, **fields: Any) -> bool:
        return self.log(logging.DEBUG, key, event, **fields)

    def info(self, key: Hashable, event: str, **fields: Any) -> bool:
        return self.log(logging.INFO, key, event, **fields)

    def warning(self, key: Hashable, event: str, **fields: Any) -> bool:
        return self.log(logging.WARNING, key, event, **fields)

    def error(self, key: Hashable, event: str, **fields: Any) -> bool:
        return self.log(logging.ERROR, key, event, **fields)


_provider: TracerProvider | None = None
_provider_lock = threading.Lock()


def build_tracer_provider(service: str, endpoint: str | None) -> TracerProvider:
    """A TracerProvider for ``service``; exporting over OTLP/HTTP only when ``endpoint`` is set."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"voxguard-{service}"}))
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        url = endpoint.rstrip("/")
        if not url.endswith("/v1/traces"):
            url += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    return provider


def setup_tracing(service: str, endpoint: str | None = None) -> TracerProvider:
    """Install the process's TracerProvider once (later calls return the same provider).

    ``endpoint`` defaults to ``OTEL_EXPORTER_OTLP_ENDPOINT``. OpenTelemetry allows one global
    provider per process, hence once: in the one-process mode all services share it.
    """
    global _provider
    with _provider_lock:
        if _provider is None:
            if endpoint is None:
                from voxguard.shared.settings import load_settings

                endpoint = load_settings().otlp_endpoint
            _provider = build_tracer_provider(service, endpoint)
            trace.set_tracer_provider(_provider)
        return _provider


def shutdown_tracing() -> None:
    """Flush and stop exporting (at process exit)."""
    if _provider is not None:
        _provider.shutdown()


def get_tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Add the current trace context (``traceparent``/``tracestate``) to message headers."""
    carrier = {} if headers is None else headers
    propagate.inject(carrier)
    return carrier


def extract_context(headers: Mapping[str, str] | None) -> otel_context.Context:
    """The trace context carried by message headers (an empty context when there is none)."""
    return propagate.extract(dict(headers or {}))


__all__ = [
    "RateLimitedLog",
    "build_tracer_provider",
    "configure_logging",
    "extract_context",
    "get_logger",
    "get_tracer",
    "inject_headers",
    "setup_tracing",
    "shutdown_tracing",
]
