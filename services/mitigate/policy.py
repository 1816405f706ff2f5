"""Incident -> candidate rules, by the tier's policy and the runbook of the attack vector.

Runbooks (the product's origin, as defaults):

* ``sip_flood`` and the other signalling vectors: block the top-5 source /24s (``top_prefixes``)
  to the attacked component, protocol and port, with the tier's action.
* ``rtp_flood``: discard the identified source addresses, and rate-limit UDP from any other source
  to the media range; whitelisted sources (SBC source IPs...) get ``accept`` rules that win under
  FlowSpec ordering (RFC 8955 section 5.1: a rule with a source component sorts before one without).
* ``tdos``: rate-limit the highest-volume source networks; with a GeoIP database configured, also
  rate-limit the networks of top sources located in the configured countries.

The incident's runbook (by name: the config's ``runbooks`` or the defaults) picks the book by its
actions, so a SIP flood that also looks like TDoS is still handled as the SIP flood it was opened
as. Top networks can be held back until the attacked target's own traffic confirms them
(``confirmed``, see attack_evidence.py): with sampled telemetry one tick's top list is not enough.

Then the whitelist splits or drops sources, and the rails reject what is still unsafe. Every
dropped or rejected candidate carries its reason.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from voxguard.mitigate import rails
from voxguard.mitigate.flowspec import Action, FlowRoute, IPNetwork, Proto, RuleError
from voxguard.mitigate.settings import BgpSettings
from voxguard.mitigate.whitelist import Whitelist
from voxguard.shared.config import MitigationSettings, Tier, TierConfig, VoxGuardConfig
from voxguard.shared.messages import IncidentView, SourceCount
from voxguard.shared.runbooks import DEFAULT_RUNBOOKS, Runbook, load_runbooks

log = logging.getLogger("voxguard.mitigate.policy")

TOP_NETWORKS = 5


@dataclass
class Candidate:
    """A rule before it is stored: what it matches, what it does, and whether it may go out."""

    action: Action
    destination: IPNetwork
    sources: list[IPNetwork]
    protocol: Proto
    ports: tuple[int, int] | None
    rate_bps: int | None = None
    state: str = "proposed"  # proposed | pending_approval | rejected
    reason: str | None = None
    group: str | None = None  # an any-source rule and its accept guards share a group

    def routes(self) -> list[FlowRoute]:
        """One flow route per source (FlowSpec NLRI carry one source prefix), or one for any source."""
        srcs: Sequence[IPNetwork | None] = self.sources or [None]
        return [FlowRoute(self.destination, s, self.protocol, self.ports, self.action, self.rate_bps) for s in srcs]

    def reject(self, reason: str) -> Candidate:
        return replace(self, state="rejected", reason=reason)


@dataclass
class Plan:
    """The outcome for one incident."""

    candidates: list[Candidate] = field(default_factory=list)
    skipped: str | None = None  # why nothing was planned (alert-only tier, learning...)
    held: list[IPNetwork] = field(default_factory=list)  # top networks not (yet) confirmed


def _sorted_counts(items: Sequence[SourceCount]) -> list[SourceCount]:
    return sorted(items, key=lambda s: (s.packets, s.bytes), reverse=True)


Confirmed = Callable[[IPNetwork], bool]


def _networks(
    items: Sequence[SourceCount], limit: int, confirmed: Confirmed | None = None, held: list[IPNetwork] | None = None
) -> list[IPNetwork]:
    """The ``limit`` heaviest networks; with ``confirmed``, unconfirmed ones go to ``held`` instead."""
    out: list[IPNetwork] = []
    for item in _sorted_counts(items):
        try:
            net = ipaddress.ip_network(item.source, strict=False)
        except ValueError:
            log.warning("ignoring malformed source %r in incident", item.source)
            continue
        if net in out:
            continue
        if confirmed is not None and not confirmed(net):
            if held is not None and net not in held:
                held.append(net)
            continue
        out.append(net)
        if len(out) >= limit:
            break
    return out


def top_networks(incident: IncidentView, limit: int = TOP_NETWORKS) -> list[SourceCount]:
    """The incident's ``limit`` heaviest source networks (/24, /64), as the runbooks read them."""
    items = _sorted_counts(incident.top_prefixes or _aggregate(incident.top_sources))
    keep = {str(n) for n in _networks(items, limit)}
    out: list[SourceCount] = []
    for s in items:
        with contextlib.suppress(ValueError):
            key = str(ipaddress.ip_network(s.source, strict=False))
            if key in keep:
                keep.discard(key)
                out.append(s)
    return out


def _aggregate(items: Sequence[SourceCount]) -> list[SourceCount]:
    """Top sources folded into /24 (IPv4) or /64 (IPv6) when the incident has no top_prefixes."""
    acc: dict[str, SourceCount] = {}
    for s in items:
        try:
            ip = ipaddress.ip_address(s.source.split("/")[0])
        except ValueError:
            continue
        net = str(ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 64}", strict=False))
        prev = acc.get(net)
        acc[net] = SourceCount(
            source=net, packets=s.packets + (prev.packets if prev else 0), bytes=s.bytes + (prev.bytes if prev else 0)
        )
    return list(acc.values())


@dataclass(frozen=True)
class Target:
    """Where and what the rules match: destinations, protocol and ports."""

    destinations: list[IPNetwork]
    protocol: Proto
    ports: tuple[int, int] | None


def resolve_target(incident: IncidentView, config: VoxGuardConfig) -> Target | None:
    """The attacked host or component, and the protocol/ports of the monitor that fired."""
    tier_cfg = config.tiers.get(incident.tier)
    monitor = None
    prefixes: list[IPNetwork] = []
    for t in config.iter_targets():
        if t.tier != incident.tier:
            continue
        if t.id == incident.target_id or (incident.host and t.for_host(incident.host).id == incident.target_id):
            monitor, prefixes = t.monitor, list(t.prefixes)
            break
    if not prefixes and tier_cfg is not None and incident.component:
        for comp in tier_cfg.components:
            if comp.name == incident.component:
                prefixes = list(comp.addresses)
    if incident.host:
        try:
            prefixes = [ipaddress.ip_network(incident.host, strict=False)]
        except ValueError:
            log.warning("incident %s has a malformed host %r", incident.id, incident.host)
    if not prefixes:
        return None
    if monitor is None:
        return Target(prefixes, "any", None)
    proto: Proto = monitor.protocol.value
    ports = (monitor.ports.low, monitor.ports.high) if monitor.ports else None
    return Target(prefixes, proto, ports)


def _block_action(policy: MitigationSettings, bgp: BgpSettings) -> tuple[Action, int | None]:
    if policy.action == "rate_limit":
        return "rate_limit", policy.rate_limit_bps if policy.rate_limit_bps is not None else bgp.default_rate_limit_bps
    return "discard", None  # discard and source_block both drop the named sources


def _rate(policy: MitigationSettings, bgp: BgpSettings) -> int:
    return policy.rate_limit_bps if policy.rate_limit_bps is not None else bgp.default_rate_limit_bps


# what a runbook's actions make of an incident: its book in plan_incident
_BOOKS = {
    "source_block": "rtp_flood",
    "rate_limit_unknown": "rtp_flood",
    "rate_limit_top_networks": "tdos",
    "geo_filter": "tdos",
    "block_top_prefixes": "block_top_networks",
}
TOP_NETWORK_BOOKS = ("block_top_networks", "tdos")  # books whose rules name the top networks


def runbook(incident: IncidentView, books: Sequence[Runbook] = DEFAULT_RUNBOOKS) -> str:
    """Which book applies: the incident's runbook (by its actions), else by vector priority."""
    if incident.runbook in ("rtp_flood", "tdos", "sip_flood"):
        return "block_top_networks" if incident.runbook == "sip_flood" else incident.runbook
    named = next((rb for rb in books if rb.name == incident.runbook), None)
    for action in named.actions if named else ():
        if action.kind in _BOOKS:
            return _BOOKS[action.kind]
    for v in ("rtp_flood", "tdos"):
        if v in incident.vectors:
            return v
    if incident.tier == Tier.MEDIA and "codec_exhaustion" in incident.vectors:
        return "rtp_flood"  # the RTP runbook's trigger (shared/runbooks.py): a media flood seen by its sizes
    return "block_top_networks"


def _country(record: object) -> str | None:
    """ISO code of a MaxMind country/city record (None when the record has none)."""
    country = record.get("country") if isinstance(record, dict) else None
    code = country.get("iso_code") if isinstance(country, dict) else None
    return code if isinstance(code, str) else None


def geoip_networks(incident: IncidentView, bgp: BgpSettings, min_prefix: tuple[int, int] = (24, 64)) -> list[IPNetwork]:
    """Networks of top sources in the configured countries; empty without maxminddb or a database.

    A country's block is usually far wider than the rails let a rule be (``min_prefix`` for IPv4,
    IPv6): the network is then the source's own block of that size, so the rule passes the rails
    instead of being refused, and stays as surgical as any other."""
    if bgp.geoip is None or not bgp.geoip.rate_limit_countries:
        return []
    try:
        import maxminddb
    except ImportError:
        log.warning("bgp.geoip is configured but the maxminddb package is not installed; skipping")
        return []
    wanted = {c.upper() for c in bgp.geoip.rate_limit_countries}
    out: list[IPNetwork] = []
    try:
        reader = maxminddb.open_database(str(bgp.geoip.database))
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        log.warning("cannot open the GeoIP database %s: %s; skipping", bgp.geoip.database, exc)
        return []
    with reader:
        for s in _sorted_counts(incident.top_sources):
            try:
                rec, plen = reader.get_with_prefix_len(s.source.split("/")[0])
            except ValueError:
                continue
            country = _country(rec)
            if country and country.upper() in wanted:
                addr = s.source.split("/")[0]
                floor = min_prefix[0] if ":" not in addr else min_prefix[1]
                net = ipaddress.ip_network(f"{addr}/{max(plen, floor)}", strict=False)
                if net not in out:
                    out.append(net)
    return out


def runbooks_of(config: VoxGuardConfig) -> list[Runbook]:
    """The runbooks in force (defaults plus the config's), as the baseline names them."""
    return load_runbooks(config.runbooks or {}) if config.runbooks else list(DEFAULT_RUNBOOKS)


def plan_incident(
    incident: IncidentView,
    config: VoxGuardConfig,
    bgp: BgpSettings,
    *,
    budget: int | None = None,
    confirmed: Confirmed | None = None,
) -> Plan:
    """Raw candidates for an incident (before whitelist and rails), or why there are none.

    ``confirmed``: when given, top networks it does not confirm are left out and listed in
    ``Plan.held`` (the caller plans again once they are confirmed).
    """
    tier_cfg: TierConfig | None = config.tiers.get(incident.tier)
    if tier_cfg is None:
        return Plan(skipped=f"tier {incident.tier} is not configured")
    if incident.learning:
        return Plan(skipped="target still in baseline learning mode: monitor only")
    if tier_cfg.internal or tier_cfg.mitigation.mode != "flowspec":
        return Plan(skipped=f"tier {incident.tier.value} is alert-only")
    target = resolve_target(incident, config)
    if target is None:
        return Plan(skipped="cannot resolve the attacked destination from the config")
    policy = tier_cfg.mitigation
    limit = min(TOP_NETWORKS, policy.max_rules_per_incident) if budget is None else budget
    book = runbook(incident, runbooks_of(config))
    out: list[Candidate] = []
    held: list[IPNetwork] = []
    for dest in target.destinations:
        base = {"destination": dest, "protocol": target.protocol, "ports": target.ports}
        if book == "rtp_flood":
            # one flow route of the cap stays for the rate-limit of unknown sources: with ten top
            # sources (a spoofed flood always has them) it would otherwise be the one rejected
            room = max(policy.max_rules_per_incident - 1, 0)
            srcs = [n for n in _networks(incident.top_sources, room) if n.version == dest.version] if room else []
            out += [Candidate("discard", sources=[s], **base) for s in srcs]  # type: ignore[arg-type]
            group = f"{incident.id}:{dest}:any"
            out.append(Candidate("rate_limit", sources=[], rate_bps=_rate(policy, bgp), group=group, **base))  # type: ignore[arg-type]
        elif book == "tdos":
            prefixes = incident.top_prefixes or _aggregate(incident.top_sources)
            top = [n for n in _networks(prefixes, limit, confirmed, held) if n.version == dest.version]
            floors = (policy.min_prefix_length_v4, policy.min_prefix_length_v6)
            geo = [n for n in geoip_networks(incident, bgp, floors) if n.version == dest.version and n not in top]
            # the geographic filter gets up to half of the per-incident budget: appended after a
            # full set of top networks, the max_rules_per_incident rail would always reject it
            nets = top[: limit - min(len(geo), limit // 2)]
            nets += geo[: max(limit - len(nets), 0)]
            out += [Candidate("rate_limit", sources=[n], rate_bps=_rate(policy, bgp), **base) for n in nets]  # type: ignore[arg-type]
        else:
            prefixes = incident.top_prefixes or _aggregate(incident.top_sources)
            action, rate = _block_action(policy, bgp)
            nets = [n for n in _networks(prefixes, limit, confirmed, held) if n.version == dest.version]
            out += [Candidate(action, sources=[n], rate_bps=rate, **base) for n in nets]  # type: ignore[arg-type]
    return Plan(candidates=out, held=held)


def enforce(
    candidates: list[Candidate],
    whitelist: Whitelist,
    policy: MitigationSettings,
    bgp: BgpSettings,
    *,
    already: int = 0,
) -> list[Candidate]:
    """Whitelist (split/drop), rails (prefix lengths, per-incident cap), accept guards; approval."""
    out: list[Candidate] = []
    for c in candidates:
        out.extend(_enforce_one(c, whitelist, policy, bgp))
    kept = already
    final: list[Candidate] = []
    for c in out:
        c = check_routes(c)
        if c.state != "rejected" and c.action != "accept":
            n = len(c.sources) or 1
            if kept + n > policy.max_rules_per_incident:
                c = c.reject(
                    f"rail max_rules_per_incident: {kept} flow routes already, {n} more exceed "
                    f"{policy.max_rules_per_incident}"
                )
            else:
                kept += n
        final.append(c)
    # an accept guard without its any-source rule is pointless: reject along with it
    dead = {c.group for c in final if c.group and c.action != "accept" and c.state == "rejected"}
    final = [
        c.reject(f"guarded rule rejected: {c.group}") if c.action == "accept" and c.group in dead else c for c in final
    ]
    if policy.approval_required:
        final = [replace(c, state="pending_approval") if c.state == "proposed" else c for c in final]
    return final


def _enforce_one(c: Candidate, wl: Whitelist, policy: MitigationSettings, bgp: BgpSettings) -> list[Candidate]:
    if c.state == "rejected":
        return [c]
    why = rails.destination_violation(c.destination)
    if why:
        return [c.reject(why)]
    if not c.sources:
        return _guard_any_source(c, wl, bgp)
    kept: list[IPNetwork] = []
    notes: list[str] = []
    for src in c.sources:
        why = rails.source_violation(src, policy)
        if why:
            notes.append(why)
            continue
        res = wl.apply(src)
        if res.hits:
            notes.append(res.reason() or "")
        kept += [k for k in res.kept if k not in kept]
    if not kept:
        return [c.reject("; ".join(notes) or "no source left")]
    return [replace(c, sources=kept, reason="; ".join(notes) or None)]


def _guard_any_source(c: Candidate, wl: Whitelist, bgp: BgpSettings) -> list[Candidate]:
    """An any-source rule matches whitelisted sources too, unless accept rules sort before it."""
    if c.action == "discard":
        return [c.reject("rail any_source_discard: a discard rule must name its source prefixes")]
    entries = wl.for_version(c.destination.version)
    if len(entries) > bgp.max_accept_rules:
        return [
            c.reject(
                f"rail max_accept_rules: {len(entries)} whitelisted prefixes would need accept rules "
                f"(limit {bgp.max_accept_rules})"
            )
        ]
    group = c.group or f"any:{c.destination}"
    guards = [
        Candidate(
            "accept",
            destination=c.destination,
            sources=[e.prefix],
            protocol=c.protocol,
            ports=c.ports,
            reason=f"preserve {e.label()}",
            group=group,
        )
        for e in entries
    ]
    return [*guards, replace(c, group=group)]


def check_routes(c: Candidate) -> Candidate:
    """Build the flow routes once so an inexpressible rule is rejected, not announced."""
    try:
        c.routes()
    except RuleError as exc:
        return c.reject(f"invalid rule: {exc}")
    return c


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
