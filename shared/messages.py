"""Messages on the bus: one pydantic model per kind, defined once, versioned.

Subjects are ``voxguard.<kind>.v1.<tier>``. Every message carries ``schema_version``, a
unique ``id`` (also the JetStream ``Nats-Msg-Id`` so a re-publish is deduplicated) and ``ts``.
Consumers must accept unknown extra fields (forward compatibility) but refuse a major
``schema_version`` they do not know.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from voxguard.shared.config import Tier

SCHEMA_VERSION = 1


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    """Common envelope of every bus message."""

    model_config = ConfigDict(extra="ignore")
    kind: ClassVar[str] = "message"

    schema_version: int = SCHEMA_VERSION
    id: str = Field(default_factory=new_id, min_length=1, max_length=64)
    ts: datetime = Field(default_factory=utcnow)

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(f"schema_version {value} is not supported (this build speaks {SCHEMA_VERSION})")
        return value

    def subject(self) -> str:
        """The subject this message is published on (``all`` when it has no tier)."""
        tier = getattr(self, "tier", None)
        tier_s = tier.value if isinstance(tier, Tier) else str(tier or "all")
        return subject_for(self.kind, tier_s)


def subject_for(kind: str, tier: str | Tier = "*") -> str:
    """``voxguard.<kind>.v1.<tier>``; ``tier="*"`` gives a wildcard for subscriptions."""
    tier_s = tier.value if isinstance(tier, Tier) else tier
    return f"voxguard.{kind}.v1.{tier_s}"


class SourceCount(BaseModel):
    """A source address or prefix and its (sampling-scaled) packet and byte counts."""

    source: str
    packets: int = Field(ge=0)
    bytes: int = Field(ge=0)


class TrafficTick(Message):
    """What the collector saw for one target during one tick (counts scaled by sampling).

    A flow record that lasted several ticks (a long flow exported at its active timeout) is
    spread evenly over that many ticks from its arrival (up to 300), so a minute of RTP does
    not land in one second; fractions carry over, so totals are exact.
    """

    kind: ClassVar[str] = "traffic"

    tier: Tier
    target_id: str = Field(min_length=1, max_length=80)
    target: str  # human name, e.g. "sbc-eu-1 udp/5060"
    component: str
    host: str | None = None  # per-host target: the host address
    protocol: str
    ports: str | None = None
    role: str
    region: str | None = None
    tick_start: datetime
    tick_seconds: float = Field(gt=0)
    exporters: list[str] = Field(default_factory=list)

    bytes: int = Field(ge=0)
    packets: int = Field(ge=0)
    flows: int = Field(ge=0)
    new_connections: int = Field(default=0, ge=0)  # TCP SYN without ACK
    icmp_packets: int = Field(default=0, ge=0)
    long_lived_flows: int = Field(default=0, ge=0)  # flows lasting >= 60 s active in the tick (WebSocket, RTP)
    distinct_sources: int = Field(default=0, ge=0)  # HyperLogLog estimate
    bytes_per_packet: float = Field(default=0.0, ge=0)
    size_histogram: list[int] = Field(default_factory=list)  # packets per bytes/packet bucket
    top_sources: list[SourceCount] = Field(default_factory=list)
    top_prefixes: list[SourceCount] = Field(default_factory=list)  # /24 (IPv4) or /64 (IPv6)
    sip_methods: dict[str, int] = Field(default_factory=dict)  # sampled SIP, scaled
    sip_scanner_packets: int = Field(default=0, ge=0)
    sip_malformed_packets: int = Field(default=0, ge=0)
    sip_sampled_packets: int = Field(default=0, ge=0)  # raw sampled SIP headers behind the mix
    flow_records: int = Field(default=0, ge=0)  # raw records behind the tick
    sampled: bool = False

    SIZE_BUCKETS: ClassVar[tuple[int, ...]] = (100, 200, 400, 800, 1200)  # upper bounds; last = more


# -- events: anomalies, incidents, mitigations, notifications -------------------------------

Severity = Literal["info", "warning", "major", "critical"]
SEVERITY_ORDER: dict[str, int] = {"info": 0, "warning": 1, "major": 2, "critical": 3}


class Anomaly(Message):
    """One detector firing on one target for one tick (the detector's raw output)."""

    kind: ClassVar[str] = "anomaly"

    tier: Tier
    vector: str  # an id of the attack catalogue (config.VECTORS)
    target_id: str
    target: str
    metric: str  # e.g. "packets_per_s", "new_connections_per_s"
    observed: float
    baseline: float
    ratio: float
    tick_start: datetime
    learning: bool = False  # the target's baseline has not converged: monitor only
    top_sources: list[SourceCount] = Field(default_factory=list)
    top_prefixes: list[SourceCount] = Field(default_factory=list)
    detail: dict[str, float | int | str] = Field(default_factory=dict)


class IncidentView(BaseModel):
    """An incident as the API returns it and as events carry it (design.md section 2)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    tier: Tier
    target_id: str
    target: str
    component: str | None = None
    host: str | None = None
    region: str | None = None
    tags: list[str] = Field(default_factory=list)
    vectors: list[str]
    state: Literal["open", "mitigated", "resolved"]
    severity: Severity
    opened_at: datetime
    updated_at: datetime | None = None
    resolved_at: datetime | None = None
    peak_ratio: float = 0.0
    peak_value: float = 0.0
    baseline_value: float = 0.0
    metric: str | None = None
    learning: bool = False  # opened while the target was still learning: never mitigated
    top_sources: list[SourceCount] = Field(default_factory=list)
    top_prefixes: list[SourceCount] = Field(default_factory=list)
    runbook: str | None = None


class IncidentEvent(Message):
    """``voxguard.incident.v1.<tier>``: an incident opened, changed or ended."""

    kind: ClassVar[str] = "incident"

    event: Literal["opened", "updated", "mitigated", "resolved"]
    tier: Tier
    incident: IncidentView


class FlowMatch(BaseModel):
    """What a FlowSpec rule matches (RFC 8955 / 8956 components we use)."""

    model_config = ConfigDict(extra="forbid")

    destination: str  # prefix of the attacked component
    sources: list[str] = Field(default_factory=list)  # source prefixes; empty = any
    protocol: Literal["udp", "tcp", "icmp", "any"] = "any"
    destination_ports: str | None = None  # "5060" or "10000-20000"


class MitigationView(BaseModel):
    """A mitigation as the API returns it and as events carry it (design.md section 4)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    incident_id: str | None = None  # None for a manual rule
    tier: Tier | None = None
    target_id: str | None = None
    state: Literal["proposed", "pending_approval", "announced", "withdrawn", "failed", "rejected"]
    action: Literal["discard", "rate_limit", "accept"]
    rate_bps: int | None = None
    match: FlowMatch
    expires_at: datetime | None = None
    reason: str | None = None  # the rail or whitelist entry that stopped it, when rejected
    command: str | None = None  # the ExaBGP text it announces
    created_at: datetime | None = None
    announced_at: datetime | None = None
    withdrawn_at: datetime | None = None
    created_by: str | None = None


class MitigationEvent(Message):
    """``voxguard.mitigation.v1.<tier>``: a rule proposed, announced, withdrawn, failed or rejected."""

    kind: ClassVar[str] = "mitigation"

    event: Literal["proposed", "pending_approval", "announced", "withdrawn", "failed", "rejected"]
    tier: Tier | None = None
    mitigation: MitigationView


class NotificationEvent(Message):
    """``voxguard.notification.v1.<tier>``: the outcome of one delivery attempt to one channel."""

    kind: ClassVar[str] = "notification"

    tier: Tier | None = None
    source_event_id: str  # the incident or mitigation event that caused it
    incident_id: str | None = None
    channel: str
    provider: str  # slack, pagerduty, email, webhook, statuspage, instatus, cachet
    status: Literal["sent", "failed", "retrying", "dead_letter", "suppressed"]
    attempt: int = Field(ge=1)
    response_code: int | None = None
    latency_ms: float | None = None
    detail: str | None = None
