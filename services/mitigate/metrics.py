"""Prometheus metrics of the mitigate service (the NOC's Grafana dashboard reads them)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

RULES = Gauge("voxguard_mitigation_rules", "FlowSpec rules by state", ["state"])
MITIGATION_EVENTS = Counter("voxguard_mitigation_events_total", "Mitigation events emitted", ["event"])
