"""Prometheus metrics of the notify service (the NOC's Grafana dashboard reads them)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

DELIVERIES = Counter("voxguard_notify_deliveries_total", "Delivery attempts by outcome", ["provider", "status"])
DELIVERY_SECONDS = Histogram(
    "voxguard_notify_delivery_seconds",
    "Delivery latency",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
