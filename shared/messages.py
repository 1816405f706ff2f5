"""Messages on the bus: one pydantic model per kind, defined once, versioned.

Subjects are ``voxguard.<kind>.v1.<tier>``. Every message carries ``schema_version``, a
unique ``id`` (also the JetStream ``Nats-Msg-Id`` so a re-publish is deduplicated) and ``ts``.
Consumers must accept unknown extra fields (forward compatibility) but refuse a major
``schema_version`` they do not know.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

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


# -- batches of per-host traffic ticks -------------------------------------------------------

BATCH_FORMAT = "columns"
MAX_BATCH_BYTES = 1024 * 1024  # the JetStream traffic stream's max message size (bus.MAX_MSG_BYTES)
MAX_BATCH_RECORDS = 65_536
MAX_TOP = 100  # entries of a list column (exporters, size_histogram, sip_methods) per record
MAX_TOP_CHARS = 16_384  # characters of a record's top_sources / top_prefixes text
BATCH_SUBJECT_SUFFIX = "h"
# TrafficTick fields carried per record, by kind. Required: the rest default as in TrafficTick.
BATCH_REQUIRED = ("target_id", "target", "component", "protocol", "role", "bytes", "packets", "flows")
BATCH_TEXT = ("target_id", "target", "component", "protocol", "role")
BATCH_OPT_TEXT = ("host", "ports", "region")
BATCH_COUNTS = ("bytes", "packets", "flows", "new_connections", "icmp_packets", "long_lived_flows",
                "distinct_sources", "sip_scanner_packets", "sip_malformed_packets", "sip_sampled_packets",
                "flow_records")  # fmt: skip
BATCH_TOPS = ("top_sources", "top_prefixes")


def batch_subject(tier: str | Tier, partition: int | None = None) -> str:
    """Where a batch of per-host ticks travels: ``voxguard.traffic.v1.<tier>.h`` unsharded, the
    partition's ``voxguard.traffic.v1.<tier>.<k>`` sharded. Never the bare tier subject, which
    carries single component ticks (``TrafficTick``) that other consumers read."""
    tier_s = tier.value if isinstance(tier, Tier) else tier
    return f"{subject_for('traffic', tier_s)}.{BATCH_SUBJECT_SUFFIX if partition is None else partition}"


class BatchError(ValueError):
    """A traffic batch that cannot be used at all (the consumer terminates it and counts it)."""


class TrafficBatch(Message):
    """Many per-host ``TrafficTick`` records of one tier, one tick (and one partition), as columns.

    ``columns`` maps a TrafficTick field name to a list of ``count`` values, record ``i`` being
    the ``i``-th value of every column: far cheaper to encode and decode than one message per
    target (100,000 targets a tick) or a list of objects with repeated keys. Shared fields
    (``tier``, ``tick_start``, ``tick_seconds``) are on the batch; record ids are
    ``<batch id>:<index>``. ``top_sources`` and ``top_prefixes`` hold each record's list as one
    compact text, ``"<source> <packets> <bytes>;..."`` (a source or prefix has no space or
    semicolon): only the few targets that turn hot need them, so the consumer parses them then
    (``TrafficColumns.sources``) instead of building a million small objects a tick; as text they
    are also about half the size of JSON objects. A producer keeps each encoded batch under the
    server's max payload.

    ``decode_batch`` checks the structure (a broken one raises ``BatchError``) and every record
    (a bad record is dropped and counted, the rest kept); a bad entry inside a top-sources text is
    dropped when it is parsed.
    """

    kind: ClassVar[str] = "traffic"

    format: Literal["columns"] = "columns"
    tier: Tier
    partition: int | None = Field(default=None, ge=0)
    tick_start: datetime
    tick_seconds: float = Field(gt=0)
    count: int = Field(ge=0, le=MAX_BATCH_RECORDS)
    columns: dict[str, list[Any]] = Field(default_factory=dict)

    def subject(self) -> str:
        return batch_subject(self.tier, self.partition)


def ticks_to_batch(ticks: list[dict[str, Any]], *, partition: int | None = None, batch_id: str | None = None
                   ) -> dict[str, Any]:  # fmt: skip
    """A ``TrafficBatch`` document (plain dict, for orjson) from ``TrafficTick``-shaped dicts of one
    tier and one tick, as the collector renders them."""
    first = ticks[0]
    cols: dict[str, list[Any]] = {}
    for name in (*BATCH_TEXT, *BATCH_OPT_TEXT, *BATCH_COUNTS, "bytes_per_packet", "sampled", "exporters",
                 "size_histogram", "sip_methods"):  # fmt: skip
        cols[name] = [t.get(name) for t in ticks]
    for name in BATCH_TOPS:
        cols[name] = [";".join([f"{s['source']} {s['packets']} {s['bytes']}" for s in t.get(name) or ()])
                      for t in ticks]  # fmt: skip
    return {
        "schema_version": SCHEMA_VERSION,
        "id": batch_id or new_id(),
        "ts": utcnow().isoformat(),
        "format": "columns",
        "tier": first["tier"],
        "partition": partition,
        "tick_start": first["tick_start"],
        "tick_seconds": first["tick_seconds"],
        "count": len(ticks),
        "columns": cols,
    }


def source_counts(raw: Any) -> list[SourceCount]:
    """A top-sources column value (``"<source> <packets> <bytes>;..."``) -> SourceCount list; bad
    entries dropped."""
    out: list[SourceCount] = []
    if not isinstance(raw, str) or not raw:
        return out
    for e in raw.split(";")[:MAX_TOP]:
        try:
            src, pk, by = e.split(" ")
            out.append(SourceCount(source=src, packets=int(pk), bytes=int(by)))
        except ValueError:
            continue
    return out


class RecordSources:
    """The top sources and prefixes of one batch record, parsed on first use."""

    __slots__ = ("_p", "_raw_p", "_raw_s", "_s")

    def __init__(self, raw_s: Any, raw_p: Any) -> None:
        self._raw_s, self._raw_p = raw_s, raw_p
        self._s: list[SourceCount] | None = None
        self._p: list[SourceCount] | None = None

    @property
    def top_sources(self) -> list[SourceCount]:
        if self._s is None:
            self._s = source_counts(self._raw_s)
        return self._s

    @property
    def top_prefixes(self) -> list[SourceCount]:
        if self._p is None:
            self._p = source_counts(self._raw_p)
        return self._p


class TrafficColumns:
    """The good records of a decoded batch: numeric columns as float64 arrays, the rest as lists."""

    def __init__(self, batch: TrafficBatch, keep: list[int] | None, nums: dict[str, Any], bad: dict[str, int]) -> None:
        cols = batch.columns
        self.batch = batch
        self.tier = batch.tier
        self.tick_start = batch.tick_start if batch.tick_start.tzinfo else batch.tick_start.replace(tzinfo=UTC)
        self.tick_seconds = float(batch.tick_seconds)
        self.bad = bad  # reason -> records dropped
        self.n = batch.count if keep is None else len(keep)
        self.num: dict[str, Any] = nums if keep is None else {k: v[keep] for k, v in nums.items()}
        self._keep = keep

        def pick(name: str, default: Any = None) -> list[Any]:
            col = cols.get(name)
            if col is None:
                return [default] * self.n
            return col if keep is None else [col[i] for i in keep]

        self.ids: list[str] = pick("target_id")
        self.text = {k: pick(k) for k in (*BATCH_TEXT[1:], *BATCH_OPT_TEXT)}
        self.sip_methods = pick("sip_methods", {})
        self.exporters = pick("exporters", [])
        self.size_histogram = pick("size_histogram", [])
        self.top_sources = pick("top_sources", "")
        self.top_prefixes = pick("top_prefixes", "")

    @property
    def dropped(self) -> int:
        return sum(self.bad.values())

    def meta(self, i: int) -> dict[str, Any]:
        """Record ``i``'s target as the registry row (``rollup.target_meta`` shape)."""
        t = self.text
        return {"id": self.ids[i], "tier": self.tier.value, "name": t["target"][i], "component": t["component"][i],
                "host": t["host"][i], "protocol": t["protocol"][i], "ports": t["ports"][i], "role": t["role"][i],
                "region": t["region"][i]}  # fmt: skip

    def sources(self, i: int) -> RecordSources:
        """Record ``i``'s top sources and prefixes, parsed when first read."""
        return RecordSources(self.top_sources[i], self.top_prefixes[i])

    def tick(self, i: int) -> TrafficTick:
        """Record ``i`` as a full TrafficTick (the object path: new targets, sampled SIP)."""
        t = self.text
        n = self.num
        index = i if self._keep is None else self._keep[i]
        return TrafficTick(
            id=f"{self.batch.id}:{index}", ts=self.batch.ts, tier=self.tier, target_id=self.ids[i],
            target=t["target"][i], component=t["component"][i], host=t["host"][i], protocol=t["protocol"][i],
            ports=t["ports"][i], role=t["role"][i], region=t["region"][i], tick_start=self.tick_start,
            tick_seconds=self.tick_seconds, exporters=self.exporters[i] or [],
            **{k: int(n[k][i]) for k in BATCH_COUNTS}, bytes_per_packet=float(n["bytes_per_packet"][i]),
            size_histogram=self.size_histogram[i] or [], top_sources=source_counts(self.top_sources[i]),
            top_prefixes=source_counts(self.top_prefixes[i]), sip_methods=self.sip_methods[i] or {},
            sampled=bool(n["sampled"][i]),
        )  # fmt: skip


def _number_column(col: list[Any]) -> Any:
    """A column as float64, NaN where a value is not a number."""
    import numpy as np

    if set(map(type, col)) <= {int, float}:
        try:
            return np.array(col, dtype=np.float64)
        except OverflowError:
            pass
    out = np.full(len(col), np.nan)
    for i, v in enumerate(col):
        if type(v) in (int, float) and abs(v) < 2**62:
            out[i] = float(v)
    return out


def _all(col: list[Any], types: set[type]) -> bool:
    return set(map(type, col)) <= types


def decode_batch(data: bytes | str | dict[str, Any]) -> TrafficColumns:
    """Decode and check a ``TrafficBatch``: ``BatchError`` when it is unusable (not JSON, too big,
    wrong envelope, missing or ragged columns), else its good records with the bad ones counted
    by reason (``bad_target_id``, ``duplicate``, ``bad_text``, ``bad_number``, ``bad_list``).

    Each check first runs as one C-speed pass over the column (``set(map(type, col))``) and
    looks at single values only when that pass finds something wrong."""
    import numpy as np
    import orjson
    from pydantic import ValidationError

    if isinstance(data, dict):
        doc: Any = data
    else:
        if len(data) > MAX_BATCH_BYTES:
            raise BatchError(f"traffic batch of {len(data)} bytes exceeds {MAX_BATCH_BYTES}")
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise BatchError(f"traffic batch is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BatchError("traffic batch must be a JSON object")
    cols = doc.get("columns")
    if not isinstance(cols, dict):
        raise BatchError("traffic batch has no 'columns' object")
    try:
        batch = TrafficBatch.model_validate({k: v for k, v in doc.items() if k != "columns"})
    except ValidationError as exc:
        raise BatchError(f"traffic batch envelope is invalid: {exc}") from None
    n = batch.count
    for name in BATCH_REQUIRED:
        if name not in cols:
            raise BatchError(f"traffic batch lacks column {name!r}")
    for name, col in cols.items():
        if not isinstance(col, list):
            raise BatchError(f"traffic batch column {name!r} is not a list")
        if len(col) != n:
            raise BatchError(f"traffic batch column {name!r} has {len(col)} values for count {n}")
    batch.columns = cols
    ok = np.ones(n, dtype=bool)
    bad: dict[str, int] = {}

    def reject(mask: Any, reason: str) -> None:
        new = mask & ok
        k = int(np.count_nonzero(new))
        if k:
            bad[reason] = bad.get(reason, 0) + k
            ok[new] = False

    def each(col: list[Any], wrong: Any, reason: str) -> None:
        reject(np.fromiter(map(wrong, col), bool, n), reason)

    ids = cols["target_id"]
    if not (_all(ids, {str}) and min(map(len, ids), default=1) > 0 and max(map(len, ids), default=0) <= 80):
        each(ids, lambda t: not (type(t) is str and 0 < len(t) <= 80), "bad_target_id")
    if len(set(ids if ok.all() else [t for t, g in zip(ids, ok.tolist(), strict=True) if g])) < int(ok.sum()):
        seen: set[str] = set()
        dup = np.zeros(n, dtype=bool)
        for i, t in enumerate(ids):
            if ok[i]:
                dup[i] = t in seen
                seen.add(t)
        reject(dup, "duplicate")
    for name in BATCH_TEXT[1:]:
        if not _all(cols[name], {str}):
            each(cols[name], lambda v: type(v) is not str, "bad_text")
    for name in BATCH_OPT_TEXT:
        if name in cols and not _all(cols[name], {str, type(None)}):
            each(cols[name], lambda v: v is not None and type(v) is not str, "bad_text")
    nums: dict[str, Any] = {}
    for name in (*BATCH_COUNTS, "bytes_per_packet"):
        col = cols.get(name)
        if col is None:
            nums[name] = np.zeros(n)
            continue
        arr = _number_column(col)
        with np.errstate(invalid="ignore"):
            wrong = ~np.isfinite(arr) | (arr < 0)
            if name != "bytes_per_packet":
                wrong |= arr != np.floor(arr)
        reject(wrong, "bad_number")
        nums[name] = np.where(wrong, 0.0, arr)
    sampled = cols.get("sampled")
    nums["sampled"] = np.zeros(n) if sampled is None else np.fromiter(map(bool, sampled), float, n)
    for name in ("exporters", "size_histogram"):
        col = cols.get(name)
        if col is not None and not (_all(col, {list}) and max(map(len, col), default=0) <= MAX_TOP):
            each(col, lambda v: not (isinstance(v, list) and len(v) <= MAX_TOP), "bad_list")
    exp = cols.get("exporters")
    if exp is not None and not _all([e for v in exp if isinstance(v, list) for e in v], {str}):
        each(exp, lambda v: isinstance(v, list) and any(type(e) is not str for e in v), "bad_list")
    hist = cols.get("size_histogram")
    odd = np.zeros(n)
    width = np.zeros(n)  # buckets per record: the minute rollup counts odd sizes only for the usual 6
    if hist is not None:
        try:
            harr = np.array(hist, dtype=np.float64)  # the usual case: every record has the 6 buckets
            if harr.ndim != 2:
                raise ValueError("ragged")
            hbad = (harr < 0).any(axis=1) | (harr != np.floor(harr)).any(axis=1)
            width[:] = harr.shape[1]
            if harr.shape[1] >= 6:
                odd = harr[:, 0] + harr[:, 5]
            reject(hbad, "bad_list")
        except (ValueError, TypeError, OverflowError):
            each(hist, lambda h: isinstance(h, list) and any(type(x) is not int or x < 0 for x in h), "bad_list")
            odd = np.fromiter((h[0] + h[5] if ok_h and isinstance(h, list) and len(h) >= 6 else 0
                               for h, ok_h in zip(hist, ok.tolist(), strict=True)), float, n)  # fmt: skip
            width = np.fromiter((len(h) if isinstance(h, list) else 0 for h in hist), float, n)
    nums["odd_size_packets"] = odd
    nums["size_buckets"] = width
    sip = cols.get("sip_methods")
    if sip is not None and any(sip):

        def bad_sip(m: Any) -> bool:
            if not m:
                return m is not None and not isinstance(m, dict)
            if not isinstance(m, dict) or len(m) > MAX_TOP:
                return True
            return not all(type(k) is str and type(v) is int and v >= 0 for k, v in m.items())

        each(sip, bad_sip, "bad_list")
    for name in BATCH_TOPS:
        col = cols.get(name)
        if col is not None and not (_all(col, {str}) and max(map(len, col), default=0) <= MAX_TOP_CHARS):
            each(col, lambda v: not (type(v) is str and len(v) <= MAX_TOP_CHARS), "bad_list")
    if ok.all():
        return TrafficColumns(batch, None, nums, bad)
    return TrafficColumns(batch, np.flatnonzero(ok).tolist(), nums, bad)
