"""Runbooks as data: what to do when an attack of a kind hits a tier.

A runbook names its trigger (tier and vectors), the automatic actions the mitigate service
applies, the NOC checklist, the customer communication and the post-incident steps. The
three runbooks from the product's origin are the defaults; ``runbooks:`` in the config adds
to or replaces them by name. Incidents carry the name of their runbook, and the API shows the
runbook with its checklist, plus the regulatory reporting checklist when the attacked target
is tagged as an emergency-services trunk.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from voxguard.shared.config import VECTORS, ConfigError, Tier

EMERGENCY_TAG = "emergency-services"


class Trigger(BaseModel):
    """When a runbook applies: the incident's tier and any of its vectors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tier: Tier
    vectors: list[str] = Field(min_length=1)
    min_ratio: float = Field(default=0.0, ge=0)

    @field_validator("vectors")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(VECTORS))
        if unknown:
            raise ValueError(f"unknown attack vector(s) {unknown}")
        return value


class Action(BaseModel):
    """One automatic mitigation step, interpreted by the mitigate service."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal[
        "block_top_prefixes",
        "source_block",
        "rate_limit_unknown",
        "rate_limit_top_networks",
        "geo_filter",
        "accept_preserved",
        "notify",
    ]
    count: int | None = Field(default=None, ge=1, le=1000)
    rate_bps: int | None = Field(default=None, ge=0)
    preserve: list[str] = Field(default_factory=list)
    audience: str | None = None  # for notify: e.g. "dedicated-gateway-customers"


class Runbook(BaseModel):
    """One runbook."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9_-]+$")
    title: str
    trigger: Trigger
    actions: list[Action] = Field(default_factory=list)
    noc_checklist: list[str] = Field(default_factory=list)
    customer_communication: str = ""
    post_incident: list[str] = Field(default_factory=list)

    def matches(self, tier: str, vectors: list[str], ratio: float = 0.0) -> bool:
        """Whether an incident of ``tier`` with ``vectors`` triggers this runbook."""
        return (
            self.trigger.tier.value == tier
            and bool(set(self.trigger.vectors) & set(vectors))
            and ratio >= self.trigger.min_ratio
        )


REGULATORY_CHECKLIST = [
    "Notify the emergency-services regulator within the mandated window (record the time of the report).",
    "Confirm emergency calls were routed (or failed over) during the incident; attach CDR counts.",
    "Preserve evidence: flow records, sFlow pcap, FlowSpec rules and their announce/withdraw times.",
    "File the written incident report with root cause and mitigation timeline.",
]

DEFAULT_RUNBOOKS: list[Runbook] = [
    Runbook(
        name="sip-flood-sbc",
        title="SIP flood on the SBC",
        trigger=Trigger(tier=Tier.SBC, vectors=["sip_flood", "malformed_sip"]),
        actions=[Action(kind="block_top_prefixes", count=5, preserve=["registered_endpoints", "sip_trunks"])],
        noc_checklist=[
            "Confirm UDP/5060 is above 5x baseline and the top /24s are not registered endpoint subnets.",
            "Check the FlowSpec rules announced (top-5 source /24s) and that existing calls' sources are not matched.",
            "Watch SBC CPU and registration rate; escalate to the SBC vendor if signalling stays degraded.",
        ],
        customer_communication=(
            "We are mitigating a denial-of-service attack against our SIP signalling. Some call attempts may "
            "fail or be delayed; calls in progress are not affected."
        ),
        post_incident=["Review the blocked prefixes for false positives.", "Update the SIP trunk whitelist."],
    ),
    Runbook(
        name="rtp-flood-media",
        title="RTP port-range flood on the media gateways",
        trigger=Trigger(tier=Tier.MEDIA, vectors=["rtp_flood", "codec_exhaustion"]),
        actions=[
            Action(kind="accept_preserved", preserve=["sbc_sources", "active_rtp_peers"]),
            Action(kind="source_block", count=10),
            Action(kind="rate_limit_unknown", rate_bps=10_000_000),
            Action(kind="notify", audience="dedicated-gateway-customers"),
        ],
        noc_checklist=[
            "Confirm UDP/10000-20000 is above 3x baseline on the gateway(s).",
            "Check that SBC source IPs are accepted ahead of the rate-limit rule.",
            "Notify enterprise customers with a dedicated gateway.",
        ],
        customer_communication=(
            "We are mitigating an attack on our media gateways. Voice quality may be degraded for some calls."
        ),
        post_incident=["Check MOS / packet-loss reports for the attack window.", "Review rate-limit levels."],
    ),
    Runbook(
        name="tdos-sbc",
        title="Telephony denial of service (automated call flood)",
        trigger=Trigger(tier=Tier.SBC, vectors=["tdos"]),
        actions=[
            Action(kind="rate_limit_top_networks", count=10, rate_bps=1_000_000),
            Action(kind="geo_filter"),
        ],
        noc_checklist=[
            "Confirm the new-call rate to 5060 is elevated with high source diversity and media is NOT growing.",
            "Check the rate-limited networks; apply geographic filtering if a GeoIP database is configured.",
            "Coordinate with upstream carriers on the originating networks.",
        ],
        customer_communication=(
            "We are filtering an automated call flood. Some inbound calls may be rejected while we mitigate."
        ),
        post_incident=["Report the originating networks to the carriers.", "Review call-admission limits."],
    ),
]


def load_runbooks(section: dict[str, Any]) -> list[Runbook]:
    """Default runbooks plus the config's ``runbooks:`` section (same name replaces a default)."""
    books = {rb.name: rb for rb in DEFAULT_RUNBOOKS}
    errors: list[tuple[str, str]] = []
    for name, body in (section or {}).items():
        try:
            books[name] = Runbook.model_validate({"name": name, **(body or {})})
        except ValidationError as exc:
            errors += [(f"runbooks.{name}." + ".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
        except TypeError:
            errors.append((f"runbooks.{name}", "a runbook must be a mapping"))
    if errors:
        raise ConfigError("runbooks", errors)
    return list(books.values())


def runbook_for(runbooks: list[Runbook], tier: str, vectors: list[str], ratio: float = 0.0) -> Runbook | None:
    """The first runbook an incident triggers (config order, defaults first)."""
    return next((rb for rb in runbooks if rb.matches(tier, vectors, ratio)), None)


def checklist_for(runbook: Runbook | None, tags: list[str]) -> list[str]:
    """The NOC checklist of an incident, with the regulatory steps for emergency-services targets."""
    steps = list(runbook.noc_checklist) if runbook else []
    if EMERGENCY_TAG in tags:
        steps += REGULATORY_CHECKLIST
    return steps
