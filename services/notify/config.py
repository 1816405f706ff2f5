"""The ``notifications`` and ``status_pages`` sections of ``voxguard.yaml``, validated here.

``shared/config.py`` carries both sections as plain dicts; this module owns their shape so the
notify service can refuse a bad config at build time with errors that name the key path
(``notifications.channels.noc.url: ...``). Secrets are ``SecretStr`` so they never show up in
a repr, a log line or an API answer.
"""

from __future__ import annotations

import re
from datetime import time
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from voxguard.shared.config import ConfigError, Tier, VoxGuardConfig, _loc

Severity = Literal["info", "warning", "major", "critical"]
EventKind = Literal[
    "incident.opened",
    "incident.updated",
    "incident.mitigated",
    "incident.resolved",
    "mitigation.proposed",
    "mitigation.pending_approval",
    "mitigation.announced",
    "mitigation.withdrawn",
    "mitigation.failed",
    "mitigation.rejected",
]
ComponentStatus = Literal["operational", "degraded_performance", "partial_outage", "major_outage"]
PdSeverity = Literal["critical", "error", "warning", "info"]


def _pd_map() -> dict[Severity, PdSeverity]:
    return {"critical": "critical", "major": "error", "warning": "warning", "info": "info"}


def _critical_only() -> list[Severity]:
    return ["critical"]


def _severity_status() -> dict[Severity, ComponentStatus | None]:
    """info never touches the status page; the rest follow integrations.md section 8."""
    return {"info": None, "warning": "degraded_performance", "major": "partial_outage", "critical": "major_outage"}


_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def _http_url(value: str) -> str:
    """Refuse anything but an absolute http(s) URL with a host: a typo must fail at start."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an absolute http(s) URL with a host, got {_redact_url(value)!r}")
    return value


def _redact_url(value: str) -> str:
    """Scheme and host only: Slack webhook URLs carry their secret in the path."""
    parts = urlsplit(value)
    return f"{parts.scheme}://{parts.hostname}/..." if parts.hostname else "<not a URL>"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Strict):
    """Exponential backoff with jitter (integrations.md section 7 defaults)."""

    max_attempts: int = Field(default=6, ge=1, le=50)
    base_s: float = Field(default=1.0, gt=0)
    cap_s: float = Field(default=300.0, gt=0)
    jitter: float = Field(default=0.5, ge=0, le=1)  # fraction of the delay randomised
    timeout_s: float = Field(default=15.0, gt=0)


class _ChannelBase(_Strict):
    enabled: bool = True
    rate_per_s: float = Field(default=1.0, gt=0, description="provider rate limit (token bucket refill)")
    burst: int = Field(default=5, ge=1)
    concurrency: int = Field(default=4, ge=1, le=64)
    retry: RetryPolicy | None = None


class SlackChannel(_ChannelBase):
    type: Literal["slack"]
    url: SecretStr  # the URL is the credential

    @field_validator("url")
    @classmethod
    def _url(cls, v: SecretStr) -> SecretStr:
        _http_url(v.get_secret_value())
        return v


class PagerDutyChannel(_ChannelBase):
    type: Literal["pagerduty"]
    routing_key: SecretStr
    url: str = "https://events.pagerduty.com/v2/enqueue"
    rate_per_s: float = Field(default=2.0, gt=0)  # ~120 events/min per integration key
    severity_map: dict[Severity, PdSeverity] = Field(default_factory=_pd_map)

    @field_validator("routing_key")
    @classmethod
    def _key(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value()) != 32:
            raise ValueError("must be the 32-character Events API v2 integration key")
        return v

    @field_validator("url")
    @classmethod
    def _u(cls, v: str) -> str:
        return _http_url(v)


class EmailChannel(_ChannelBase):
    type: Literal["email"]
    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    starttls: Literal["auto", "required", "never"] = "auto"  # auto: upgrade whenever offered
    username: str | None = None
    password: SecretStr | None = None
    sender: str = Field(alias="from", min_length=3)
    to: list[str] = Field(min_length=1)
    ca_file: str | None = None  # private CA for the relay's certificate
    rate_per_s: float = Field(default=5.0, gt=0)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("to")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if "@" not in a]
        if bad:
            raise ValueError(f"not e-mail addresses: {bad}")
        return v


class WebhookChannel(_ChannelBase):
    type: Literal["webhook"]
    url: str
    secret: SecretStr  # whsec_<base64>, Standard Webhooks
    rate_per_s: float = Field(default=10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _u(cls, v: str) -> str:
        return _http_url(v)

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: SecretStr) -> SecretStr:
        from voxguard.notify.signing import decode_secret

        decode_secret(v.get_secret_value())
        return v


Channel = Annotated[SlackChannel | PagerDutyChannel | EmailChannel | WebhookChannel, Field(discriminator="type")]


class Match(_Strict):
    """Empty lists match everything."""

    severity: list[Severity] = Field(default_factory=list)
    tiers: list[Tier] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list)
    kinds: list[EventKind] = Field(default_factory=list)
    # incident events only: the attacked component, or any of its config tags (a customer's
    # dedicated gateway tagged ``dedicated-gateway``); mitigation events never match these
    components: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)


class QuietHours(_Strict):
    """A daily window (UTC unless ``tz``) in which the route stays silent except ``allow`` severities."""

    start: time
    end: time
    tz: str = "UTC"
    allow: list[Severity] = Field(default_factory=_critical_only)

    @field_validator("tz")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(v)
        except Exception as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v


class RouteRateLimit(_Strict):
    """At most ``max`` notifications per ``per_s`` seconds on this route (resolutions always pass)."""

    max: int = Field(ge=1)
    per_s: float = Field(gt=0)


class Route(_Strict):
    name: str
    match: Match = Field(default_factory=Match)
    channels: list[str] = Field(min_length=1)
    quiet_hours: QuietHours | None = None
    rate_limit: RouteRateLimit | None = None
    stop: bool = False  # first matching route with stop=True ends the evaluation


class NotificationsConfig(_Strict):
    link_base: str = "http://127.0.0.1:8080"
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    channels: dict[str, Channel] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)

    @field_validator("channels")
    @classmethod
    def _names(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = [n for n in v if not _NAME.match(n)]
        if bad:
            raise ValueError(f"channel names must match {_NAME.pattern}: {bad}")
        return v

    @model_validator(mode="after")
    def _routes_reference_channels(self) -> NotificationsConfig:
        for i, route in enumerate(self.routes):
            for name in route.channels:
                if name not in self.channels:
                    raise ValueError(
                        f"routes[{i}] ({route.name}) sends to channel {name!r}, which is not defined "
                        f"(known: {sorted(self.channels) or 'none'})"
                    )
        return self


class StatusComponent(_Strict):
    name: str
    tiers: list[Tier] = Field(default_factory=list)
    region: str | None = None  # a per-region component matches incidents of that region


def default_components() -> dict[str, StatusComponent]:
    return {
        "sip_signaling": StatusComponent(name="SIP Signaling", tiers=[Tier("sbc"), Tier("registrar")]),
        "voice_quality": StatusComponent(name="Voice Quality", tiers=[Tier("media"), Tier("turn")]),
        "api": StatusComponent(name="API / Management", tiers=[Tier("api")]),
    }


class _ProviderBase(_Strict):
    base_url: str
    component_ids: dict[str, str] = Field(default_factory=dict)  # our component key -> vendor id
    dry_run: bool = False
    rate_per_s: float = Field(default=1.0, gt=0)
    retry: RetryPolicy | None = None

    @field_validator("base_url")
    @classmethod
    def _u(cls, v: str) -> str:
        return _http_url(v).rstrip("/")


class StatuspageProvider(_ProviderBase):
    type: Literal["statuspage"]
    base_url: str = "https://api.statuspage.io/v1"
    page_id: str = Field(min_length=1)
    api_key: SecretStr


class InstatusProvider(_ProviderBase):
    type: Literal["instatus"]
    base_url: str = "https://api.instatus.com"
    page_id: str = Field(min_length=1)
    api_key: SecretStr


class CachetProvider(_ProviderBase):
    type: Literal["cachet"]
    token: SecretStr  # base_url is the instance's .../api/v1

    @field_validator("component_ids")
    @classmethod
    def _ints(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k, i in v.items() if not str(i).isdigit()]
        if bad:
            raise ValueError(f"Cachet component ids are integers: {bad}")
        return v


class GenericProvider(_ProviderBase):
    type: Literal["generic"]
    secret: SecretStr | None = None  # when set, requests are signed like our webhooks


Provider = Annotated[
    StatuspageProvider | InstatusProvider | CachetProvider | GenericProvider, Field(discriminator="type")
]


class StatusPagesConfig(_Strict):
    affect_after_s: float = Field(default=60.0, ge=0, description="incident age before a component changes")
    recover_after_s: float = Field(default=120.0, ge=0, description="quiet time before back to operational")
    min_hold_s: float = Field(default=300.0, ge=0, description="minimum time between two lowerings")
    open_incidents: bool = True
    severity_status: dict[Severity, ComponentStatus | None] = Field(default_factory=_severity_status)
    per_region: bool = True
    components: dict[str, StatusComponent] = Field(default_factory=default_components)
    providers: dict[str, Provider] = Field(default_factory=dict)


class NotifyConfig(_Strict):
    notifications: NotificationsConfig
    status_pages: StatusPagesConfig
    regions: list[str] = Field(default_factory=list)

    def components(self) -> dict[str, StatusComponent]:
        """Configured components plus one per region (``region-<name>``) when regions exist."""
        comps = dict(self.status_pages.components)
        if self.status_pages.per_region:
            for region in self.regions:
                comps.setdefault(f"region-{region}", StatusComponent(name=f"Region {region}", region=region))
        return comps


_TAGS = {"slack", "pagerduty", "email", "webhook", "statuspage", "instatus", "cachet", "generic"}


def _drop_tags(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """Remove the union tag pydantic inserts (``channels.noc.slack.url`` -> ``channels.noc.url``)."""
    out: list[int | str] = []
    for i, part in enumerate(loc):
        if i >= 2 and loc[i - 2] in ("channels", "providers") and part in _TAGS:
            continue
        out.append(part)
    return tuple(out)


def load_notify_config(config: VoxGuardConfig, source: str = "voxguard.yaml") -> NotifyConfig:
    """Validate both sections; ConfigError lists every problem with its key path."""
    errors: list[tuple[str, str]] = []
    parsed: dict[str, Any] = {}
    for key, model in (("notifications", NotificationsConfig), ("status_pages", StatusPagesConfig)):
        try:
            parsed[key] = model.model_validate(getattr(config, key) or {})
        except ValidationError as exc:
            for err in exc.errors():
                loc = _loc(_drop_tags(tuple(err["loc"])))
                errors.append((f"{key}.{loc}" if loc != "(top level)" else key, err["msg"]))
    if not errors:
        sp: StatusPagesConfig = parsed["status_pages"]
        for comp_key, comp in sp.components.items():
            if comp.region and config.regions and comp.region not in config.regions:
                errors.append((f"status_pages.components.{comp_key}.region", f"{comp.region!r} is not in 'regions'"))
    if errors:
        raise ConfigError(source, errors)
    return NotifyConfig(regions=list(config.regions), **parsed)
