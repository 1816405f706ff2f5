"""Which buffered ticks are complete, so the engine can decide them before its grace runs out.

The engine waits ``grace`` ticks after a tick's start for late messages (default 2 ticks): that
wait, not the detection, was most of the time from a traffic tick published to an incident event.
Collectors send a manifest with every message of a tick's burst (``shared.tickmanifest``). A tick
is complete here when every producer heard recently has delivered, for that tick, as many
messages per subject as its manifest announced (counting only the subjects this consumer reads,
by message id so a redelivery is not counted twice). A tick that also holds a message without a
manifest (another kind of producer) is never complete early: it waits for the grace, as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from voxguard.shared.tickmanifest import Manifest, parse_manifest

ACTIVE_TICKS = 10  # a producer not heard for this many ticks is no longer waited for
MAX_TICKS = 120  # tick entries kept (older ones are dropped)
MAX_PRODUCERS = 1_000


@dataclass
class _Burst:
    """One producer's messages of one tick."""

    expected: Mapping[str, int]
    seen: dict[str, set[str]] = field(default_factory=dict)  # subject -> message ids
    anonymous: dict[str, int] = field(default_factory=dict)  # subject -> messages without an id

    def received(self, subject: str) -> int:
        return len(self.seen.get(subject, ())) + self.anonymous.get(subject, 0)


@dataclass
class _Tick:
    bursts: dict[str, _Burst] = field(default_factory=dict)
    unmanifested: bool = False


class TickCompleteness:
    """Tracks manifests and deliveries per tick. ``reads(subject)`` says whether this consumer
    receives a subject at all (a sharded worker reads only its partitions); it is asked when
    completeness is checked, so partitions gained or lost take effect at once."""

    def __init__(self, tick_seconds: float = 1.0, reads: Callable[[str], bool] | None = None) -> None:
        self.dt = float(tick_seconds)
        self.reads = reads or (lambda _s: True)
        self.ticks: dict[float, _Tick] = {}
        self.last_tick: dict[str, float] = {}  # producer -> latest tick it sent
        self.stats = {"manifested": 0, "unmanifested": 0, "bad_manifests": 0, "early_ticks": 0}

    def _key(self, tick: float) -> float:
        return math.floor(tick / self.dt) * self.dt

    def record(self, subject: str, headers: Mapping[str, str] | None, msg_id: str | None, tick: float) -> str:
        """A traffic message for ``tick`` (its start, unix seconds) has been taken in. Returns
        what its manifest was: ``manifested``, ``unmanifested`` or ``bad_manifests``."""
        key = self._key(tick)
        manifest = parse_manifest(headers)
        bad = manifest is not None and self._key(manifest.tick) != key
        if bad:
            manifest = None  # a manifest naming another tick than the message's is not trusted
            self.stats["bad_manifests"] += 1
        entry = self.ticks.get(key)
        if entry is None:
            entry = self.ticks[key] = _Tick()
            self._prune()
        if manifest is None:
            entry.unmanifested = True
            if bad:
                return "bad_manifests"
            self.stats["unmanifested"] += 1
            return "unmanifested"
        self.stats["manifested"] += 1
        self._heard(manifest)
        burst = entry.bursts.get(manifest.producer)
        if burst is None:
            burst = entry.bursts[manifest.producer] = _Burst(manifest.messages)
        if msg_id:
            burst.seen.setdefault(subject, set()).add(msg_id)
        else:
            burst.anonymous[subject] = burst.anonymous.get(subject, 0) + 1
        return "manifested"

    def _heard(self, m: Manifest) -> None:
        last = self.last_tick.get(m.producer)
        self.last_tick[m.producer] = m.tick if last is None else max(last, m.tick)
        if len(self.last_tick) > MAX_PRODUCERS:
            oldest = sorted(self.last_tick, key=self.last_tick.__getitem__)[: len(self.last_tick) - MAX_PRODUCERS]
            for p in oldest:
                del self.last_tick[p]

    def _prune(self) -> None:
        if len(self.ticks) > MAX_TICKS:
            for k in sorted(self.ticks)[: len(self.ticks) - MAX_TICKS]:
                del self.ticks[k]

    def complete(self, tick: float) -> bool:
        """Every producer heard in the last ``ACTIVE_TICKS`` ticks has delivered this tick in full."""
        key = self._key(tick)
        entry = self.ticks.get(key)
        if entry is None or entry.unmanifested or not entry.bursts:
            return False
        horizon = key - ACTIVE_TICKS * self.dt
        for producer, last in self.last_tick.items():
            if last < horizon:
                continue
            burst = entry.bursts.get(producer)
            if burst is None:
                return False
            for subject, count in burst.expected.items():
                if self.reads(subject) and burst.received(subject) < count:
                    return False
        return True

    def ready_through(self, pending: Iterable[float], due: float) -> float | None:
        """The latest buffered tick time that may be decided now: every buffered tick up to it
        is complete or already past the grace (``< due``). None when the oldest is neither."""
        ready = None
        for t in sorted(pending):
            if t < due or self.complete(t):
                ready = t
            else:
                break
        return ready

    def forget_through(self, tick: float) -> None:
        """Drop entries of ticks already decided."""
        for k in [k for k in self.ticks if k <= tick]:
            del self.ticks[k]


__all__ = ["ACTIVE_TICKS", "TickCompleteness"]
