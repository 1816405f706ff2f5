"""Prometheus metrics of the baseline service (the NOC's Grafana dashboard reads them)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ANOMALIES = Counter("voxguard_anomalies_total", "Anomalies raised by the detectors", ["tier", "vector"])
INCIDENTS_OPEN = Gauge("voxguard_incidents_open", "Open incidents", ["tier", "severity"])
INCIDENT_EVENTS = Counter("voxguard_incident_events_total", "Incident events emitted", ["tier", "event"])
OBSERVED = Gauge(
    "voxguard_baseline_observed", "Observed rate per tier in the last tick (sum of targets)", ["tier", "metric"]
)
EXPECTED = Gauge(
    "voxguard_baseline_expected", "Baseline rate per tier for the last tick (sum of targets)", ["tier", "metric"]
)
TICKS = Counter("voxguard_baseline_ticks_total", "Traffic ticks consumed", ["tier"])
STEPS = Counter(
    "voxguard_baseline_steps_total",
    "Detection steps, by what let them run: every producer's tick complete (manifests) or the grace timer",
    ["trigger"],
)
MANIFESTS = Counter(
    "voxguard_baseline_tick_manifests_total",
    "Traffic messages taken in, by their tick manifest: manifested, unmanifested (the tick waits for the grace), "
    "bad_manifests",
    ["outcome"],
)
