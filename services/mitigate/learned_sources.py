"""Networks that were busy sources of a tier before an attack, learned from its traffic ticks.

Two of the whitelist kinds cannot be listed in the config because they change all the time:

* ``active_rtp_peers`` (media tier, role ``media``): the callers and carriers whose calls are up
  right now, so a source-block or rate-limit rule never cuts calls in progress;
* ``registered_endpoints`` (SBC tier, role ``signalling``): the endpoints and trunks that
  register and call through an SBC, so a runbook's top-network rule never blocks them.

Ticks name their top sources. While a component has no open incident, the /24 (IPv4) or /64
(IPv6) networks of its busiest sources are learned and whitelisted for ``ttl`` after they were
last seen. Once an incident opens on a component, its sources stop being learned: attackers
that show up during the attack are never whitelisted. A network only counts once it has been
seen for ``min_span`` seconds: a peer or endpoint is there for minutes, while the sources of a
flood that ramps up before its incident opens (spoofed ones change every packet) are not.
The busiest networks (most sightings, then the most recent) are kept, capped per tick and in
total, because any-source rules need one accept guard per whitelisted prefix and
``max_accept_rules`` bounds them (see ``share_budget``).
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from voxguard.mitigate.whitelist import IPNetwork, WhitelistEntry
from voxguard.shared.messages import IncidentEvent, TrafficTick

RTP_PEERS = "active_rtp_peers"
REGISTERED_ENDPOINTS = "registered_endpoints"


def host_network(source: str) -> IPNetwork | None:
    """The /24 (IPv4) or /64 (IPv6) of an address or prefix text; None when malformed."""
    try:
        ip = ipaddress.ip_address(source.split("/")[0])
    except ValueError:
        return None
    return ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 64}", strict=False)


def tick_networks(tick: TrafficTick, limit: int = 16) -> list[IPNetwork]:
    """A tick's top source networks, heaviest first: its top /24s (/64s), else its top sources folded."""
    out: list[IPNetwork] = []
    for item in tick.top_prefixes or tick.top_sources:
        net = host_network(item.source)
        if net is not None and net not in out:
            out.append(net)
        if len(out) >= limit:
            break
    return out


def scope_of(component: str | None, target_id: str) -> str:
    """What an incident freezes: its whole component (aggregate and per-host targets alike)."""
    return f"component:{component}" if component else f"target:{target_id}"


@dataclass
class _Sighting:
    first: float  # first seen in the current run of sightings
    last: float
    hits: int
    label: str  # the target it was learned on


class SourceLearner:
    """In-memory, bounded, expiring set of the networks that were busy sources of one role."""

    def __init__(
        self,
        *,
        role: str,
        kind: str,
        label: str,
        ttl: float = 600.0,
        per_target: int = 16,
        max_total: int = 32,
        min_span: float = 8.0,
        max_candidates: int = 4096,
    ) -> None:
        self.role = role
        self.kind = kind
        self.label = label  # "<label> of <target> before the attack" is the entries' reason
        self.ttl = ttl
        self.per_target = per_target
        self.max_total = max_total
        self.min_span = min_span
        self.max_candidates = max_candidates
        self._seen: OrderedDict[IPNetwork, _Sighting] = OrderedDict()  # least recently seen first
        self._under_attack: set[str] = set()

    def on_incident(self, ev: IncidentEvent) -> None:
        """Freeze learning for a component while it is attacked."""
        scope = scope_of(ev.incident.component, ev.incident.target_id)
        if ev.incident.state == "resolved" or ev.event == "resolved":
            self._under_attack.discard(scope)
        else:
            self._under_attack.add(scope)

    def on_tick(self, tick: TrafficTick, now: float | None = None) -> int:
        """Learn the busiest source networks of a tick of this role; returns how many were refreshed."""
        if tick.role != self.role or scope_of(tick.component, tick.target_id) in self._under_attack:
            return 0
        now = time.time() if now is None else now
        nets = tick_networks(tick, self.per_target)
        for net in nets:
            s = self._seen.get(net)
            if s is None or now - s.last > self.ttl:
                self._seen[net] = _Sighting(now, now, 1, tick.target)
            else:
                s.last, s.hits, s.label = now, s.hits + 1, tick.target
            self._seen.move_to_end(net)
        while len(self._seen) > self.max_candidates:  # most candidates are never confirmed
            self._seen.popitem(last=False)
        return len(nets)

    def networks(self) -> list[IPNetwork]:
        """Every network seen and not yet forgotten, confirmed or not (for inspection)."""
        return list(self._seen)

    def entries(self, now: float | None = None) -> list[WhitelistEntry]:
        """The live whitelist entries, most important first (expired ones dropped)."""
        now = time.time() if now is None else now
        for net in [n for n, s in self._seen.items() if now - s.last > self.ttl]:
            del self._seen[net]
        confirmed = [(n, s) for n, s in self._seen.items() if s.last - s.first >= self.min_span]
        confirmed.sort(key=lambda ns: (ns[1].hits, ns[1].last), reverse=True)
        return [
            WhitelistEntry(net, self.kind, f"{self.label} of {s.label} before the attack")
            for net, s in confirmed[: max(self.max_total, 0)]
        ]


def rtp_peer_learner(max_total: int) -> SourceLearner:
    """Peers of calls in progress on the media tier (10 minutes after last seen)."""
    return SourceLearner(role="media", kind=RTP_PEERS, label="active RTP peer", max_total=max_total)


def endpoint_learner(max_total: int) -> SourceLearner:
    """Registered endpoints and trunks of the SBCs' signalling: they re-register every few minutes
    and sampled telemetry sees each network rarely, so they are kept for an hour after last seen."""
    return SourceLearner(
        role="signalling", kind=REGISTERED_ENDPOINTS, label="registered endpoint network", ttl=3600.0,
        max_total=max_total, min_span=5.0,
    )  # fmt: skip


def share_budget(lists: Sequence[Sequence[WhitelistEntry]], budget: int) -> list[WhitelistEntry]:
    """At most ``budget`` entries from several learners, each list ordered most important first:
    an equal share each, and what one learner leaves unused goes to the others."""
    take = [0] * len(lists)
    left = max(budget, 0)
    while left > 0:
        hungry = [i for i, lst in enumerate(lists) if take[i] < len(lst)]
        if not hungry:
            break
        share = max(left // len(hungry), 1)
        for i in hungry:
            n = min(share, len(lists[i]) - take[i], left)
            take[i] += n
            left -= n
            if left == 0:
                break
    return [e for lst, n in zip(lists, take, strict=True) for e in lst[:n]]
