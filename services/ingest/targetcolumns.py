"""The static message fields of every target as columns, appended as targets are created.

A tick's records gather their target id, name, component, ... with one fancy index per field
instead of copying a dict per record: at 100,000 per-host targets the copies alone cost more
than the rest of closing the tick.

Only the collector thread appends. Readers in other threads (the publisher, the HTTP API) only
read targets that existed when they got their indices (``TargetTable`` lists a target only once
its columns are written), and a grown array is a full copy swapped in whole. The partition
cache is the publisher's alone.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from voxguard.shared.partition import partition_of

# the TrafficTick fields that never change for a target, in the order of a tick's dict
STATIC_FIELDS = ("target_id", "target", "component", "host", "protocol", "ports", "role", "region")


class TargetColumns:
    """Per-target static fields (object arrays), tier codes and host flags, by target index."""

    def __init__(self, capacity: int = 1024) -> None:
        self._n = 0
        self.tiers: list[str] = []  # tier value by tier code
        self._tier_codes: dict[str, int] = {}
        self._text = {k: np.empty(capacity, dtype=object) for k in STATIC_FIELDS}
        self._tier = np.zeros(capacity, dtype=np.int64)
        self._is_host = np.zeros(capacity, dtype=bool)
        self._partitions: dict[int, np.ndarray] = {}  # shards -> partition per target, -1 not yet known

    def append(self, static: Mapping[str, object]) -> int:
        """Add a target from its static message fields (``TargetInfo.static``); its index."""
        ix = self._n
        if ix == len(self._tier):
            self._grow(2 * ix)
        for k in STATIC_FIELDS:
            self._text[k][ix] = static[k]
        tier = str(static["tier"])
        code = self._tier_codes.get(tier)
        if code is None:
            code = self._tier_codes[tier] = len(self.tiers)
            self.tiers.append(tier)
        self._tier[ix] = code
        self._is_host[ix] = static["host"] is not None
        self._n += 1
        return ix

    def _grow(self, size: int) -> None:
        for k, old in self._text.items():
            new = np.empty(size, dtype=object)
            new[: len(old)] = old
            self._text[k] = new
        for name in ("_tier", "_is_host"):
            old = getattr(self, name)
            new = np.zeros(size, dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def text(self, name: str, targets: np.ndarray) -> list[object]:
        """One static field of ``targets``, as a list."""
        return self._text[name][targets].tolist()

    def column(self, name: str) -> np.ndarray:
        """One static field of every target (indexed by target; entries past ``len`` unset)."""
        return self._text[name]

    def tier(self, target: int) -> str:
        """A target's tier value."""
        return self.tiers[int(self._tier[target])]

    def tier_codes(self, targets: np.ndarray) -> np.ndarray:
        """Tier code (index into ``tiers``) of ``targets``."""
        return self._tier[targets]

    def is_host(self, targets: np.ndarray) -> np.ndarray:
        """Which of ``targets`` are per-host targets."""
        return self._is_host[targets]

    def partitions(self, shards: int, targets: np.ndarray, ids: list[str]) -> np.ndarray:
        """``partition_of`` each of ``targets`` (whose target ids are ``ids``), computed once per
        target and shard count: a CRC of 100,000 ids is ~20 ms a tick otherwise."""
        known = self._partitions.get(shards, np.empty(0, dtype=np.int64))
        top = int(targets.max()) + 1 if len(targets) else 0
        if top > len(known):
            grown = np.full(max(top, 2 * len(known)), -1, dtype=np.int64)
            grown[: len(known)] = known
            known = grown
        out = known[targets]
        missing = np.flatnonzero(out < 0)
        if len(missing):
            out[missing] = [partition_of(ids[i], shards) for i in missing.tolist()]
            known[targets[missing]] = out[missing]
        self._partitions[shards] = known
        return out
