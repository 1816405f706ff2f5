"""``voxguard.yaml``: the operator's description of the platform, as validated pydantic models.

One file says which tiers exist, which addresses and ports each monitors, which router
(exporter) feeds it, and the per-tier baseline, detection and mitigation settings. Invalid
config is refused at start with the key path and the reason (see ``load_config``).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Tier(StrEnum):
    """The VoIP platform tiers of design.md section 1."""

    SBC = "sbc"
    REGISTRAR = "registrar"
    MEDIA = "media"
    TURN = "turn"
    API = "api"


class Protocol(StrEnum):
    """Transport protocols a monitor can watch."""

    UDP = "udp"
    TCP = "tcp"
    ICMP = "icmp"  # ICMP and ICMPv6
    ANY = "any"

    @property
    def numbers(self) -> tuple[int, ...]:
        """IANA protocol numbers matched by this protocol."""
        return {"udp": (17,), "tcp": (6,), "icmp": (1, 58), "any": ()}[self.value]


VECTORS = (
    "sip_flood",
    "malformed_sip",
    "tls_exhaustion",
    "icmp_flood",
    "register_storm",
    "sbc_not_filtering",
    "call_routing_exhaustion",
    "rtp_flood",
    "codec_exhaustion",
    "turn_abuse",
    "api_flood",
    "websocket_exhaustion",
    "tdos",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _parse_network(value: Any) -> IPNetwork:
    try:
        return ipaddress.ip_network(str(value), strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IP address or prefix ({exc})") from None


class PortRange(_Strict):
    """An inclusive destination port range; a single port has ``low == high``."""

    low: int = Field(ge=0, le=65535)
    high: int = Field(ge=0, le=65535)

    @model_validator(mode="after")
    def _ordered(self) -> PortRange:
        if self.low > self.high:
            raise ValueError(f"port range {self.low}-{self.high} is inverted")
        return self

    @classmethod
    def parse(cls, value: Any) -> PortRange:
        """Accept 5060, "5060" or "10000-20000"."""
        if isinstance(value, PortRange):
            return value
        if isinstance(value, dict):
            return cls(**value)
        text = str(value).strip()
        try:
            if "-" in text:
                lo, hi = (int(p) for p in text.split("-", 1))
            else:
                lo = hi = int(text)
        except ValueError:
            raise ValueError(f"{value!r} is not a port or a port range like 10000-20000") from None
        for port in (lo, hi):
            if not 0 <= port <= 65535:
                raise ValueError(f"port {port} is outside 0-65535")
        return cls(low=lo, high=hi)

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


class Monitor(_Strict):
    """What to watch on a component: a protocol and, for TCP/UDP, ports or a port range."""

    protocol: Protocol
    ports: PortRange | None = None
    role: Literal["signalling", "media", "tls", "api", "relay", "icmp", "other"] | None = None

    @field_validator("ports", mode="before")
    @classmethod
    def _ports(cls, value: Any) -> PortRange | None:
        return None if value is None else PortRange.parse(value)

    @model_validator(mode="after")
    def _ports_need_transport(self) -> Monitor:
        if self.ports is not None and self.protocol == Protocol.ICMP:
            raise ValueError("icmp has no ports; remove 'ports'")
        return self

    @property
    def effective_role(self) -> str:
        """The role in signalling-to-media terms, inferred from well-known ports when not set."""
        if self.role:
            return self.role
        if self.protocol == Protocol.ICMP:
            return "icmp"
        if self.ports is None:
            return "other"
        lo, hi = self.ports.low, self.ports.high
        if lo <= 5060 <= hi and hi - lo < 10:
            return "signalling"
        if lo in (5061, 5349) and hi - lo < 10:
            return "tls"
        if lo in (443, 8443) and hi == lo:
            return "api"
        if lo == 3478 and hi == lo:
            return "relay"
        if hi - lo >= 100:
            return "media"
        return "other"

    def label(self) -> str:
        """Short text like ``udp/5060`` or ``icmp``."""
        return self.protocol.value if self.ports is None else f"{self.protocol.value}/{self.ports}"


class Component(_Strict):
    """A component of a tier: an address or prefix (one SBC, a media gateway pool, ...)."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    addresses: list[IPNetwork] = Field(min_length=1)
    region: str | None = None
    tags: list[str] = Field(default_factory=list)

    @field_validator("addresses", mode="before")
    @classmethod
    def _addresses(cls, value: Any) -> list[IPNetwork]:
        items = value if isinstance(value, list) else [value]
        return [_parse_network(v) for v in items]


class BaselineSettings(_Strict):
    """How a tier's baselines are learned (used by the baseline service)."""

    window_days: int = Field(default=7, ge=1, le=90)
    learning_days: float = Field(default=7.0, ge=0, le=90)
    granularity: Literal["per_port", "per_ip", "per_ip_per_range", "per_endpoint", "per_session"] = "per_port"
    short_term_minutes: int = Field(default=60, ge=1, le=1440)


class VectorThreshold(_Strict):
    """Trigger for one attack vector on one tier."""

    enabled: bool = True
    ratio: float = Field(default=5.0, gt=1.0, le=10_000)
    min_rate: float = Field(default=0.0, ge=0)  # absolute floor so tiny baselines do not alarm
    hold_ticks: int = Field(default=3, ge=1, le=3600)
    quiet_ticks: int = Field(default=30, ge=1, le=86_400)


class DetectionSettings(_Strict):
    """Per-vector thresholds for a tier; vectors not listed use the catalogue defaults."""

    vectors: dict[str, VectorThreshold] = Field(default_factory=dict)

    @field_validator("vectors")
    @classmethod
    def _known(cls, value: dict[str, VectorThreshold]) -> dict[str, VectorThreshold]:
        unknown = sorted(set(value) - set(VECTORS))
        if unknown:
            raise ValueError(f"unknown attack vector(s) {unknown}; known: {', '.join(VECTORS)}")
        return value


class MitigationSettings(_Strict):
    """The tier's policy for turning incidents into FlowSpec rules."""

    mode: Literal["flowspec", "alert_only"] = "alert_only"
    action: Literal["discard", "rate_limit", "source_block"] = "discard"
    rate_limit_bps: int | None = Field(default=None, ge=0)
    preserve: list[str] = Field(default_factory=list)
    max_rules_per_incident: int = Field(default=10, ge=1, le=1000)
    min_prefix_length_v4: int = Field(default=24, ge=8, le=32)
    min_prefix_length_v6: int = Field(default=48, ge=16, le=128)
    ttl_seconds: int = Field(default=3600, ge=60, le=7 * 86_400)
    approval_required: bool = False


class TierConfig(_Strict):
    """One tier of the platform: its components, monitors, exporters and policies."""

    description: str | None = None
    exporters: list[str] = Field(default_factory=list)
    internal: bool = False  # internal segment: never gets FlowSpec
    components: list[Component] = Field(min_length=1)
    monitors: list[Monitor] = Field(min_length=1)
    per_host: bool = True  # a target per host seen inside a component prefix
    baseline: BaselineSettings = Field(default_factory=BaselineSettings)
    detection: DetectionSettings = Field(default_factory=DetectionSettings)
    mitigation: MitigationSettings = Field(default_factory=MitigationSettings)

    @model_validator(mode="after")
    def _internal_never_flowspec(self) -> TierConfig:
        if self.internal and self.mitigation.mode == "flowspec":
            raise ValueError("an internal tier cannot use FlowSpec mitigation; use mode: alert_only")
        return self


class ExporterConfig(_Strict):
    """A monitoring point: the router or switch that exports flows for one or more tiers."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    region: str | None = None
    sampling_interval: int | None = Field(default=None, ge=1, le=1 << 24)  # override


class ListenerConfig(_Strict):
    """The collector's UDP listeners."""

    host: str = "0.0.0.0"
    netflow_port: int = Field(default=2055, ge=0, le=65535)
    ipfix_port: int = Field(default=4739, ge=0, le=65535)
    sflow_port: int = Field(default=6343, ge=0, le=65535)
    tick_seconds: float = Field(default=1.0, gt=0.05, le=60)
    max_host_targets: int = Field(default=100_000, ge=0, le=10_000_000)
    max_host_ticks: int = Field(default=10_000, ge=0, le=10_000_000)  # host-target messages per tick
    receive_buffer_bytes: int = Field(default=32 * 1024 * 1024, ge=65536)
    accept_unknown_exporters: bool = True


class WhitelistEntry(_Strict):
    """A static source that no mitigation rule may ever match."""

    prefix: IPNetwork
    reason: str = Field(min_length=1)

    @field_validator("prefix", mode="before")
    @classmethod
    def _prefix(cls, value: Any) -> IPNetwork:
        return _parse_network(value)


class VoxGuardConfig(_Strict):
    """The whole ``voxguard.yaml``."""

    version: Literal[1] = 1
    site: str = Field(default="voxguard", min_length=1)
    regions: list[str] = Field(default_factory=list)
    exporters: list[ExporterConfig] = Field(default_factory=list)
    ingest: ListenerConfig = Field(default_factory=ListenerConfig)
    tiers: dict[Tier, TierConfig] = Field(min_length=1)
    whitelist: list[WhitelistEntry] = Field(default_factory=list)
    # Sections owned by later services; validated there, carried here untouched.
    notifications: dict[str, Any] = Field(default_factory=dict)
    status_pages: dict[str, Any] = Field(default_factory=dict)
    runbooks: dict[str, Any] = Field(default_factory=dict)
    bgp: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _cross_references(self) -> VoxGuardConfig:
        names = [e.name for e in self.exporters]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"exporter name(s) defined twice: {dupes}")
        known = set(names)
        for tier, tc in self.tiers.items():
            missing = [e for e in tc.exporters if e not in known]
            if missing:
                raise ValueError(
                    f"tiers.{tier.value}.exporters names {missing}, which are not in 'exporters' "
                    f"(known: {sorted(known) or 'none'})"
                )
            for comp in tc.components:
                if comp.region and self.regions and comp.region not in self.regions:
                    raise ValueError(
                        f"tiers.{tier.value}.components.{comp.name}.region '{comp.region}' is not in "
                        f"'regions' {self.regions}"
                    )
        comps = [c.name for tc in self.tiers.values() for c in tc.components]
        dup_comps = sorted({n for n in comps if comps.count(n) > 1})
        if dup_comps:
            raise ValueError(f"component name(s) used twice: {dup_comps}")
        return self

    def exporter(self, name: str) -> ExporterConfig:
        """The exporter with this name (KeyError if none)."""
        for e in self.exporters:
            if e.name == name:
                return e
        raise KeyError(name)

    def iter_targets(self) -> Iterator[TargetDef]:
        """Every configured (component, monitor) target, in a stable order."""
        for tier, tc in self.tiers.items():
            for comp in tc.components:
                for mon in tc.monitors:
                    yield TargetDef(
                        tier=tier,
                        component=comp.name,
                        prefixes=tuple(comp.addresses),
                        monitor=mon,
                        region=comp.region,
                        tags=tuple(comp.tags),
                    )


class TargetDef(BaseModel):
    """A monitored target: what baselines and detectors work on."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    tier: Tier
    component: str
    prefixes: tuple[IPNetwork, ...]
    monitor: Monitor
    host: str | None = None  # set for per-host targets inside a component prefix
    region: str | None = None
    tags: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """Stable id derived from the definition (tier, address/prefix, protocol, ports)."""
        return target_id(self.tier, self.host or ",".join(str(p) for p in self.prefixes), self.monitor)

    @property
    def name(self) -> str:
        """Human label: ``sbc-eu-1 udp/5060`` or ``media-pool 198.51.100.7 udp/10000-20000``."""
        who = f"{self.component} {self.host}" if self.host else self.component
        return f"{who} {self.monitor.label()}"

    def for_host(self, host: str) -> TargetDef:
        """The per-host target for one address inside this component."""
        return self.model_copy(update={"host": host})


def target_id(tier: Tier | str, where: str, monitor: Monitor) -> str:
    """``<tier>-<12 hex>``: stable across restarts and replicas for the same definition."""
    tier_s = tier.value if isinstance(tier, Tier) else tier
    key = f"{tier_s}|{where}|{monitor.protocol.value}|{monitor.ports or ''}"
    return f"{tier_s}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


class ConfigError(Exception):
    """Config refused; ``errors`` lists every problem as (key path, reason)."""

    def __init__(self, source: str, errors: list[tuple[str, str]]):
        self.source = source
        self.errors = errors
        lines = "\n".join(f"  {path}: {reason}" for path, reason in errors)
        super().__init__(f"invalid config {source}: {len(errors)} error(s)\n{lines}")


def _loc(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        elif p in ("function-after", "function-before") or "[" in str(p):
            continue
        else:
            parts.append(("." if parts else "") + str(p))
    return "".join(parts) or "(top level)"


def parse_config(data: Any, source: str = "<config>") -> VoxGuardConfig:
    """Validate already-loaded YAML data; raise ConfigError listing every error."""
    if not isinstance(data, dict):
        raise ConfigError(source, [("(top level)", "the config must be a mapping of keys to values")])
    try:
        return VoxGuardConfig.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            errors.append((_loc(tuple(err["loc"])), msg))
        raise ConfigError(source, errors) from None


def load_config(path: str | Path) -> VoxGuardConfig:
    """Read and validate a ``voxguard.yaml``."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(str(p), [("(file)", f"cannot read: {exc.strerror or exc}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ConfigError(str(p), [(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    return parse_config(data, str(p))


def example_config_path() -> Path:
    """The example config that expresses the reference deployment (shipped in the package)."""
    return Path(__file__).with_name("voxguard.example.yaml")


__all__ = [
    "VECTORS",
    "Annotated",
    "Component",
    "ConfigError",
    "ExporterConfig",
    "Monitor",
    "PortRange",
    "Protocol",
    "TargetDef",
    "Tier",
    "TierConfig",
    "VoxGuardConfig",
    "example_config_path",
    "load_config",
    "parse_config",
    "target_id",
]
