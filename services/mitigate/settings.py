"""The ``bgp:`` section of ``voxguard.yaml``, owned and validated by the mitigate service.

Why here and not in ``shared/config.py``: only mitigate reads it, so it evolves with the service.
No peer configured means dry-run: rules are computed, stored and shown, never announced.

Example::

    bgp:
      local_as: 65000
      router_id: 192.0.2.1
      local_address: 192.0.2.1
      peers:
        - {address: 192.0.2.2, asn: 65001, port: 179}
      max_total_rules: 1000
      hold_down_seconds: 60
      whitelists:
        registered_endpoints: [198.18.0.0/24]
        sip_trunks: [192.0.2.192/27]
        sbc_sources: [203.0.113.0/28]
      geoip: {database: /var/lib/GeoIP/GeoLite2-Country.mmdb, rate_limit_countries: [XX]}
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from voxguard.shared.config import ConfigError, IPNetwork

WhitelistKind = Literal[
    "static",
    "registered_endpoints",
    "sip_trunks",
    "sbc_sources",
    "active_rtp_peers",
    "authenticated_api_clients",
]
WHITELIST_KINDS: tuple[str, ...] = (
    "static",
    "registered_endpoints",
    "sip_trunks",
    "sbc_sources",
    "active_rtp_peers",
    "authenticated_api_clients",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BgpPeer(_Strict):
    """The upstream router ExaBGP announces FlowSpec to."""

    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    asn: int = Field(ge=1, le=4294967295)
    port: int = Field(default=179, ge=1, le=65535)
    families: list[Literal["ipv4", "ipv6"]] = Field(default_factory=lambda: ["ipv4", "ipv6"])  # type: ignore[arg-type]


class GeoIPSettings(_Strict):
    """Optional geographic filtering for TDoS (needs the ``maxminddb`` package and a database)."""

    database: Path
    rate_limit_countries: list[str] = Field(default_factory=list)


class BgpSettings(_Strict):
    """How mitigate talks BGP and the service-wide rails."""

    local_as: int = Field(default=65000, ge=1, le=4294967295)
    router_id: ipaddress.IPv4Address = ipaddress.IPv4Address("127.0.0.1")
    local_address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address("127.0.0.1")
    peers: list[BgpPeer] = Field(default_factory=list)
    dry_run: bool | None = None  # None: dry-run exactly when no peer is configured
    exabgp: str | None = None  # path of the exabgp executable; default: next to the Python running us
    max_total_rules: int = Field(default=1000, ge=1, le=100_000)
    max_accept_rules: int = Field(default=64, ge=0, le=10_000)  # accept rules guarding one any-source rule
    hold_down_seconds: float = Field(default=60.0, ge=0, le=86_400)
    reconcile_interval_seconds: float = Field(default=5.0, gt=0, le=3600)
    ack_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    default_rate_limit_bps: int = Field(default=125_000, ge=0)  # bytes/s when the tier sets none
    # a top network is blocked once it was among the attacked target's top networks in this many
    # of its ticks and this share of them (attack_evidence.py); 0 ticks: block as the incident names
    evidence_min_ticks: int = Field(default=3, ge=0, le=600)
    evidence_min_share: float = Field(default=0.25, ge=0, le=1)
    whitelists: dict[WhitelistKind, list[IPNetwork]] = Field(default_factory=dict)
    geoip: GeoIPSettings | None = None

    @field_validator("whitelists", mode="before")
    @classmethod
    def _prefixes(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out: dict[str, list[IPNetwork]] = {}
        for kind, items in value.items():
            seq = items if isinstance(items, list) else [items]
            nets = []
            for item in seq:
                try:
                    nets.append(ipaddress.ip_network(str(item), strict=True))
                except ValueError as exc:
                    raise ValueError(f"whitelists.{kind}: {item!r} is not a prefix ({exc})") from None
            out[kind] = nets
        return out

    @property
    def is_dry_run(self) -> bool:
        """Dry-run when asked, and always when there is nobody to announce to."""
        return True if not self.peers else bool(self.dry_run)


def parse_bgp(data: dict[str, Any]) -> BgpSettings:
    """Validate the ``bgp`` section; ConfigError names ``bgp.<key>`` and the reason."""
    try:
        return BgpSettings.model_validate(data or {})
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in ("bgp", *err["loc"]))
            errors.append((loc, err["msg"].removeprefix("Value error, ")))
        raise ConfigError("bgp", errors) from None
