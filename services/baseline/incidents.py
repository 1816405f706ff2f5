"""Incident lifecycle: one incident per target, vectors merged, hysteresis on the way out.

Detectors already require the condition over ``hold_ticks`` before a vector is *hot*; an incident
opens on the first hot tick, is updated when a vector joins, the peak grows by a quarter or the
severity rises, and resolves after ``quiet_ticks`` consecutive ticks where no vector is even above
its (lower) close threshold. Ticks during an outage of the target's tier do not count as quiet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from voxguard.shared.messages import SEVERITY_ORDER, IncidentEvent, IncidentView, Severity, SourceCount, new_id
from voxguard.shared.runbooks import Runbook, runbook_for

UPDATE_PEAK_STEP = 1.25  # an "updated" event when the peak ratio grows by this factor


def severity_of(tier: str, ratio: float, *, dark: bool = False, internal: bool = False) -> Severity:
    """Severity from ratio and tier: SBC signalling going dark or > 20x on the SBC is critical."""
    if dark and tier == "sbc":
        return "critical"
    if tier == "sbc":
        return "critical" if ratio > 20 else "major" if ratio >= 5 else "warning"
    if internal:  # alert-only internal segment: the NOC acts, never the network
        return "major" if ratio >= 10 else "warning"
    return "major" if ratio >= 10 else "warning"


@dataclass
class Incident:
    """An open (or just resolved) incident on one target."""

    id: str
    tier: str
    target_id: str
    target: str
    opened_at: datetime
    vectors: list[str]
    severity: Severity
    learning: bool
    quiet_needed: int
    component: str | None = None
    host: str | None = None
    region: str | None = None
    tags: list[str] = field(default_factory=list)
    state: str = "open"
    updated_at: datetime | None = None
    resolved_at: datetime | None = None
    peak_ratio: float = 0.0
    peak_value: float = 0.0
    baseline_value: float = 0.0
    metric: str | None = None
    top_sources: list[SourceCount] = field(default_factory=list)
    top_prefixes: list[SourceCount] = field(default_factory=list)
    runbook: str | None = None
    quiet: int = 0
    last_event_peak: float = 0.0

    def view(self) -> IncidentView:
        return IncidentView(
            id=self.id,
            tier=self.tier,  # type: ignore[arg-type]
            target_id=self.target_id,
            target=self.target,
            component=self.component,
            host=self.host,
            region=self.region,
            tags=list(self.tags),
            vectors=list(self.vectors),
            state=self.state,  # type: ignore[arg-type]
            severity=self.severity,
            opened_at=self.opened_at,
            updated_at=self.updated_at,
            resolved_at=self.resolved_at,
            peak_ratio=round(self.peak_ratio, 3),
            peak_value=round(self.peak_value, 3),
            baseline_value=round(self.baseline_value, 3),
            metric=self.metric,
            learning=self.learning,
            top_sources=list(self.top_sources),
            top_prefixes=list(self.top_prefixes),
            runbook=self.runbook,
        )

    def to_json(self) -> dict[str, Any]:
        d = self.view().model_dump(mode="json")
        d.update(quiet=self.quiet, quiet_needed=self.quiet_needed, last_event_peak=self.last_event_peak)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Incident:
        v = IncidentView.model_validate(d)
        return cls(
            id=v.id,
            tier=v.tier.value,
            target_id=v.target_id,
            target=v.target,
            opened_at=v.opened_at,
            vectors=list(v.vectors),
            severity=v.severity,
            learning=v.learning,
            quiet_needed=int(d.get("quiet_needed", 30)),
            component=v.component,
            host=v.host,
            region=v.region,
            tags=list(v.tags),
            state=v.state,
            updated_at=v.updated_at,
            resolved_at=v.resolved_at,
            peak_ratio=v.peak_ratio,
            peak_value=v.peak_value,
            baseline_value=v.baseline_value,
            metric=v.metric,
            top_sources=list(v.top_sources),
            top_prefixes=list(v.top_prefixes),
            runbook=v.runbook,
            quiet=int(d.get("quiet", 0)),
            last_event_peak=float(d.get("last_event_peak", v.peak_ratio)),
        )


@dataclass
class Finding:
    """A hot vector on a target in one tick, as the engine hands it to the book."""

    vector: str
    ratio: float
    observed: float
    baseline: float
    metric: str


# Which vector's runbook an incident with several vectors follows: the most specific evidence
# first (a TDoS is also a SIP packet flood; its runbook rate-limits instead of discarding).
SPECIFICITY = ("tdos", "sbc_not_filtering", "tls_exhaustion", "malformed_sip", "register_storm",
               "call_routing_exhaustion", "rtp_flood", "codec_exhaustion", "turn_abuse", "websocket_exhaustion",
               "api_flood", "icmp_flood", "sip_flood")  # fmt: skip


def runbook_of(runbooks: list[Runbook], tier: str, vectors: list[str], ratio: float) -> Runbook | None:
    """The runbook of the incident's most specific vector that has one."""
    order = sorted(vectors, key=lambda v: SPECIFICITY.index(v) if v in SPECIFICITY else len(SPECIFICITY))
    for v in order:
        rb = runbook_for(runbooks, tier, [v], ratio)
        if rb is not None:
            return rb
    return None


class IncidentBook:
    """Open incidents keyed by target id; produces the lifecycle events."""

    def __init__(self) -> None:
        self.open: dict[str, Incident] = {}

    def hot(
        self,
        when: datetime,
        target: dict[str, Any],
        findings: list[Finding],
        *,
        learning: bool,
        quiet_needed: int,
        dark: bool,
        internal: bool,
        top_sources: list[SourceCount],
        top_prefixes: list[SourceCount],
        runbooks: list[Runbook],
    ) -> IncidentEvent | None:
        """Open or update the target's incident with this tick's hot vectors."""
        best = max(findings, key=lambda f: f.ratio)
        tier = str(target["tier"])
        inc = self.open.get(target["id"])
        if inc is None:
            rb = runbook_of(runbooks, tier, [f.vector for f in findings], best.ratio)
            inc = Incident(
                id=new_id(),
                tier=tier,
                target_id=target["id"],
                target=str(target.get("name") or target["id"]),
                component=target.get("component"),
                host=target.get("host"),
                region=target.get("region"),
                tags=list(target.get("tags") or []),
                opened_at=when,
                updated_at=when,
                vectors=[f.vector for f in findings],
                severity=severity_of(tier, best.ratio, dark=dark, internal=internal),
                learning=learning,
                quiet_needed=quiet_needed,
                peak_ratio=best.ratio,
                peak_value=best.observed,
                baseline_value=best.baseline,
                metric=best.metric,
                top_sources=top_sources,
                top_prefixes=top_prefixes,
                runbook=rb.name if rb else None,
                last_event_peak=best.ratio,
            )
            self.open[inc.target_id] = inc
            return IncidentEvent(event="opened", tier=tier, incident=inc.view())  # type: ignore[arg-type]
        inc.quiet = 0
        inc.quiet_needed = max(inc.quiet_needed, quiet_needed)
        changed = False
        for f in findings:
            if f.vector not in inc.vectors:
                inc.vectors.append(f.vector)
                changed = True
        # a vector that joined later may be the one a (more specific) runbook is for
        rb = runbook_of(runbooks, tier, inc.vectors, max(best.ratio, inc.peak_ratio))
        if rb is not None and rb.name != inc.runbook:
            inc.runbook = rb.name
            changed = True
        if best.ratio > inc.peak_ratio:
            inc.peak_ratio, inc.peak_value, inc.baseline_value, inc.metric = (
                best.ratio, best.observed, best.baseline, best.metric)  # fmt: skip
            if top_sources:
                inc.top_sources, inc.top_prefixes = top_sources, top_prefixes
            if best.ratio >= UPDATE_PEAK_STEP * inc.last_event_peak:
                changed = True
        sev = severity_of(tier, inc.peak_ratio, dark=dark, internal=internal)
        if SEVERITY_ORDER[sev] > SEVERITY_ORDER[inc.severity]:
            inc.severity = sev
            changed = True
        if not changed:
            return None
        inc.updated_at = when
        inc.last_event_peak = inc.peak_ratio
        return IncidentEvent(event="updated", tier=tier, incident=inc.view())  # type: ignore[arg-type]

    def escalate_dark(self, when: datetime, target_id: str) -> IncidentEvent | None:
        """The SBC's signalling went dark during the incident: critical."""
        inc = self.open.get(target_id)
        if inc is None or inc.severity == "critical":
            return None
        inc.severity = "critical"
        inc.updated_at = when
        return IncidentEvent(event="updated", tier=inc.tier, incident=inc.view())  # type: ignore[arg-type]

    def calm(self, when: datetime, target_id: str, *, active: bool, live: bool) -> IncidentEvent | None:
        """A tick without hot vectors: count quiet ticks, resolve after enough of them."""
        inc = self.open.get(target_id)
        if inc is None:
            return None
        if active:
            inc.quiet = 0
            return None
        if not live:
            return None
        inc.quiet += 1
        if inc.quiet < inc.quiet_needed:
            return None
        inc.state = "resolved"
        inc.resolved_at = when
        inc.updated_at = when
        del self.open[target_id]
        return IncidentEvent(event="resolved", tier=inc.tier, incident=inc.view())  # type: ignore[arg-type]

    def views(self) -> list[IncidentView]:
        return [inc.view() for inc in self.open.values()]
