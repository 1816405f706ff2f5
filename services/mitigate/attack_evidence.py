"""Which source networks really carry an attack: their persistence in the attacked target's ticks.

An incident names the top networks of one tick. With sampled telemetry (sFlow 1:64 on an SBC
edge) one tick holds a handful of sampled packets, and a network with one sample in it is as
likely a registered endpoint that happened to be sampled as an attacker: blocking the top-5 of
that tick blocks callers. An attacking network is there tick after tick; a caller's network
shows up once in a while. So a network counts as part of the attack once it was among the
target's top networks in at least ``min_ticks`` of the ticks seen since the incident opened and
in at least ``min_share`` of them (a long incident does not confirm a network that turns up
now and then). With unsampled flows the attackers are in every tick's top list, so this costs
``min_ticks`` ticks of delay and nothing else.

The last ticks of every followed target are kept briefly, so the ticks that arrived before the
incident event (the one that opened it among them) count too. A target whose ticks never reached
the service has no evidence to wait for: its incident's top networks are planned as named.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from voxguard.mitigate.learned_sources import tick_networks
from voxguard.mitigate.whitelist import IPNetwork
from voxguard.shared.messages import TrafficTick

RECENT_TICKS = 16


@dataclass
class _Track:
    since: float
    ticks: int = 0
    last: float = float("-inf")
    hits: dict[IPNetwork, int] = field(default_factory=dict)


class AttackEvidence:
    """Per attacked target: in how many of its ticks each source network was among the top."""

    def __init__(self, *, min_ticks: int = 3, min_share: float = 0.25, max_targets: int = 4096) -> None:
        self.min_ticks = min_ticks
        self.min_share = min_share
        self.max_targets = max_targets
        self._recent: OrderedDict[str, deque[tuple[float, list[IPNetwork]]]] = OrderedDict()
        self._tracks: dict[str, _Track] = {}

    @property
    def enabled(self) -> bool:
        return self.min_ticks > 0

    def track(self, target_id: str, since: dt.datetime) -> None:
        """Start counting for an incident's target, from the tick it opened on (idempotent)."""
        if target_id in self._tracks:
            return
        t = _Track(since.timestamp() - 0.5)
        self._tracks[target_id] = t
        for at, nets in self._recent.get(target_id, ()):
            self._count(t, at, nets)

    def untrack(self, target_id: str) -> None:
        self._tracks.pop(target_id, None)

    def tracking(self, target_id: str) -> bool:
        return target_id in self._tracks

    def seen(self, target_id: str) -> bool:
        """Whether ticks of the target reach us at all (recently)."""
        return target_id in self._recent

    def on_tick(self, tick: TrafficTick) -> bool:
        """Remember a tick; True when it counted for a tracked target."""
        at = tick.tick_start.timestamp()
        nets = tick_networks(tick)
        ring = self._recent.get(tick.target_id)
        if ring is None:
            ring = self._recent[tick.target_id] = deque(maxlen=RECENT_TICKS)
            while len(self._recent) > self.max_targets:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(tick.target_id)
        ring.append((at, nets))
        t = self._tracks.get(tick.target_id)
        return t is not None and self._count(t, at, nets)

    @staticmethod
    def _count(t: _Track, at: float, nets: list[IPNetwork]) -> bool:
        if at < t.since or at <= t.last:  # before the incident, or a tick already counted
            return False
        t.last = at
        t.ticks += 1
        for n in nets:
            t.hits[n] = t.hits.get(n, 0) + 1
        return True

    def confirmed(self, target_id: str, net: IPNetwork) -> bool:
        """Whether ``net`` has been part of the attack on ``target_id`` persistently enough."""
        t = self._tracks.get(target_id)
        if t is None:
            return False
        hits = t.hits.get(net, 0)
        return hits >= self.min_ticks and hits >= self.min_share * t.ticks

    def describe(self, target_id: str, net: IPNetwork) -> str:
        t = self._tracks.get(target_id)
        return f"{net} in {t.hits.get(net, 0) if t else 0} of {t.ticks if t else 0} ticks"
