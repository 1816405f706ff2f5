"""Peers with active RTP flows, learned from the media tier's traffic before an attack.

The media tier's ticks name their top sources. While a media target has no open incident,
the networks of its busiest sources are the callers and carriers whose calls are up right
now; they are whitelisted (kind ``active_rtp_peers``) for ``ttl`` after they were last seen,
so a source-block or rate-limit rule never cuts calls that were in progress before the attack
began. Once an incident opens on a target, its peers stop being learned: attackers that show
up during the attack are never whitelisted. A network only counts as a peer once it has been
seen for ``min_span`` seconds: the peer of a call is there for minutes, while the sources of a
flood that ramps up before its incident opens (spoofed ones change every packet) are not.
Peers are kept as /24 (IPv4) or /64 (IPv6) networks and capped per target and in total, so the
accept guards that protect them stay within the mitigate rails.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict

from voxguard.mitigate.whitelist import WhitelistEntry
from voxguard.shared.messages import IncidentEvent, TrafficTick

KIND = "active_rtp_peers"


class RtpPeerLearner:
    """In-memory, bounded, expiring set of peer networks of the media tier."""

    def __init__(self, *, ttl: float = 600.0, per_target: int = 16, max_total: int = 32, min_span: float = 8.0) -> None:
        self.ttl = ttl
        self.per_target = per_target
        self.max_total = max_total
        self.min_span = min_span
        self._seen: OrderedDict[str, tuple[float, str]] = OrderedDict()  # network -> (last seen, target)
        self._first: dict[str, float] = {}  # network -> first seen (in its current run of sightings)
        self._under_attack: set[str] = set()

    def on_incident(self, ev: IncidentEvent) -> None:
        """Freeze learning for a target while it is attacked."""
        if ev.incident.state == "resolved" or ev.event == "resolved":
            self._under_attack.discard(ev.incident.target_id)
        else:
            self._under_attack.add(ev.incident.target_id)

    def on_tick(self, tick: TrafficTick, now: float | None = None) -> int:
        """Learn the busiest source networks of a media tick; returns how many were refreshed."""
        if tick.role != "media" or tick.target_id in self._under_attack:
            return 0
        now = time.time() if now is None else now
        learned = 0
        for src in tick.top_sources[: self.per_target]:
            try:
                ip = ipaddress.ip_address(src.source)
            except ValueError:
                continue
            net = str(ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 64}", strict=False))
            last = self._seen.get(net)
            if last is None or now - last[0] > self.ttl:
                self._first[net] = now
            self._seen[net] = (now, tick.target)
            self._seen.move_to_end(net)
            learned += 1
        while len(self._seen) > 4 * self.max_total:  # candidates, most of them never confirmed
            old, _ = self._seen.popitem(last=False)  # least recently seen goes first
            self._first.pop(old, None)
        return learned

    def entries(self, now: float | None = None) -> list[WhitelistEntry]:
        """The live whitelist entries (expired peers dropped)."""
        now = time.time() if now is None else now
        for net in [n for n, (at, _) in self._seen.items() if now - at > self.ttl]:
            del self._seen[net]
            self._first.pop(net, None)
        confirmed = [(n, t) for n, (at, t) in self._seen.items() if at - self._first.get(n, at) >= self.min_span]
        return [
            WhitelistEntry(ipaddress.ip_network(net), KIND, f"active RTP peer of {target} before the attack")
            for net, target in (confirmed[-self.max_total :] if self.max_total > 0 else [])  # most recent
        ]
