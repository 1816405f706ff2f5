"""Tick manifests: how a consumer knows it holds a producer's whole tick without waiting for a timeout.

A collector publishes each tick as one burst (component ticks and batches of per-host ticks on
several subjects). Every message of the burst carries the same three headers: who produced it,
which tick, and how many messages the burst holds per subject. A consumer that has received that
many messages per subject (of the subjects it reads) from every producer it currently hears has
the tick complete and can decide it at once; the engine's grace (a timeout) remains for producers
that send no manifest, that went silent, or whose messages are lost.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PRODUCER_HEADER = "Voxguard-Producer"
TICK_HEADER = "Voxguard-Tick"  # the tick's start, unix seconds
MESSAGES_HEADER = "Voxguard-Tick-Messages"  # "<subject>=<count>,..." (logical subjects)
MAX_SUBJECTS = 256
MAX_HEADER_CHARS = 16_384


@dataclass(frozen=True)
class Manifest:
    """One producer's burst for one tick: messages per logical subject."""

    producer: str
    tick: float
    messages: Mapping[str, int]


def manifest_headers(producer: str, tick_start: float, subjects: Iterable[str]) -> dict[str, str]:
    """The headers every message of a burst carries; ``subjects`` lists each message's subject."""
    counts = Counter(subjects)
    return {
        PRODUCER_HEADER: producer,
        TICK_HEADER: repr(float(tick_start)),
        MESSAGES_HEADER: ",".join(f"{s}={n}" for s, n in sorted(counts.items())),
    }


def parse_manifest(headers: Mapping[str, str] | None) -> Manifest | None:
    """The manifest in a message's headers; None when there is none or it is malformed (the
    consumer then falls back to its grace for that message's tick)."""
    if not headers:
        return None
    producer, tick_s, spec = headers.get(PRODUCER_HEADER), headers.get(TICK_HEADER), headers.get(MESSAGES_HEADER)
    if not producer or not tick_s or not spec or len(spec) > MAX_HEADER_CHARS or len(producer) > 200:
        return None
    try:
        tick = float(tick_s)
    except ValueError:
        return None
    if not math.isfinite(tick):
        return None
    messages: dict[str, int] = {}
    for part in spec.split(",")[: MAX_SUBJECTS + 1]:
        subject, sep, count = part.rpartition("=")
        if not sep or not subject or not count.isdigit():
            return None
        messages[subject] = int(count)
    if len(messages) > MAX_SUBJECTS:
        return None
    return Manifest(producer, tick, messages)


__all__ = ["MESSAGES_HEADER", "PRODUCER_HEADER", "TICK_HEADER", "Manifest", "manifest_headers", "parse_manifest"]
