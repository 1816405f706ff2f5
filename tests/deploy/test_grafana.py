"""The Grafana dashboard only charts metrics that the services really export."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import voxguard.baseline.metrics
import voxguard.ingest.metrics
import voxguard.mitigate.metrics
import voxguard.notify.metrics
import voxguard.shared.http

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "voxguard-noc.json"


def exported_names() -> set[str]:
    voxguard.ingest.metrics.IngestMetrics.shared()
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        for sample in family.samples:
            names.add(sample.name)
        names |= {family.name + s for s in ("_total", "_bucket", "_count", "_sum")}
    return names


def test_every_dashboard_metric_exists() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\bvoxguard_[a-z_]+", e)}
    assert len(used) >= 10
    missing = sorted(used - exported_names())
    assert not missing, f"dashboard charts metrics nobody exports: {missing}"
    assert voxguard.baseline.metrics.INCIDENTS_OPEN and voxguard.mitigate.metrics.RULES
    assert voxguard.notify.metrics.DELIVERIES
