"""Prometheus metrics of the collector, updated once per batch (never per datagram)."""

from __future__ import annotations

from collections import Counter as TallyCounter

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram


class IngestMetrics:
    """The collector's counters; one instance per registry (tests use a private registry)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        reg = registry if registry is not None else REGISTRY
        self.datagrams = Counter(
            "voxguard_ingest_datagrams_total",
            "Flow-export datagrams received",
            ["exporter", "format"],
            registry=reg,
        )
        self.records = Counter(
            "voxguard_ingest_flow_records_total", "Flow records decoded", ["exporter", "format"], registry=reg
        )
        self.errors = Counter(
            "voxguard_ingest_decode_errors_total",
            "Datagrams with a decode error",
            ["exporter", "format"],
            registry=reg,
        )
        self.socket_drops = Counter(
            "voxguard_ingest_socket_drops_total",
            "Datagrams the kernel dropped (receive buffer full)",
            ["listener"],
            registry=reg,
        )
        self.ticks_published = Counter("voxguard_ingest_ticks_total", "Traffic tick messages emitted", registry=reg)
        self.publish_failures = Counter(
            "voxguard_ingest_publish_failures_total",
            "Traffic tick messages that could not be published",
            registry=reg,
        )
        self.host_targets = Gauge("voxguard_ingest_host_targets", "Per-host targets created from traffic", registry=reg)
        self.batch_seconds = Histogram(
            "voxguard_ingest_batch_seconds",
            "Time to decode, classify and aggregate one batch",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=reg,
        )

    _shared: IngestMetrics | None = None

    @classmethod
    def shared(cls) -> IngestMetrics:
        """The process-wide instance on the default registry (served by ``/metrics``)."""
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def count(self, tallies: TallyCounter[tuple[str, str, str]]) -> None:
        """Apply a batch's tallies keyed by (exporter, format, what)."""
        for (exporter, fmt, what), n in tallies.items():
            if not n:
                continue
            if what == "datagrams":
                self.datagrams.labels(exporter, fmt).inc(n)
            elif what == "records":
                self.records.labels(exporter, fmt).inc(n)
            elif what == "errors":
                self.errors.labels(exporter, fmt).inc(n)

    def ticks(self, emitted: int, host_targets: int) -> None:
        """Record a closed tick."""
        self.ticks_published.inc(emitted)
        self.host_targets.set(host_targets)
