"""Each target's last tick, for ``GET /v1/ingest/targets``, without a dict per host target per tick.

Component ticks are kept as the dicts they were published as. Per-host ticks are written into
per-target columns (one array write per field per tick, whatever the number of hosts) and
rendered to the same dict only when the API asks for one. A host target that was quiet in the
latest tick keeps its older tick, as the dicts did.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from voxguard.ingest.closedtick import ClosedTick, TickHead, tick_dict
from voxguard.ingest.targetcolumns import STATIC_FIELDS, TargetColumns

MAX_HEADS = 64  # ticks whose shared fields are kept before the unreferenced ones are dropped


class LastTicks(Mapping[int, dict[str, Any]]):
    """Target index -> its last tick as a ``TrafficTick``-shaped dict. Written by the collector
    thread once per tick, read by the HTTP API; a lock keeps a read from mixing two ticks."""

    def __init__(self, catalog: TargetColumns) -> None:
        self._catalog = catalog
        self._lock = threading.Lock()
        self._components: dict[int, dict[str, Any]] = {}
        self._tick = np.full(0, -1, dtype=np.int64)  # per target: the tick number of its last tick, -1 none
        self._record = np.zeros(0, dtype=np.int64)  # per target: its record number in that tick
        self._columns: dict[str, np.ndarray] = {}  # per target: the non-static fields of its last tick
        self._heads: dict[int, TickHead] = {}
        self._ticks = 0

    def record(self, tick: ClosedTick) -> None:
        """Keep ``tick``'s records as the last ticks of their targets."""
        with self._lock:
            number = self._ticks
            self._ticks += 1
            self._components.update(zip(tick.component_targets, tick.components, strict=True))
            hosts = tick.hosts
            if hosts.n == 0:
                return
            t = hosts.targets
            self._ensure(int(t.max()) + 1, hosts.columns)
            self._tick[t] = number
            self._record[t] = hosts.first_record + np.arange(hosts.n)
            for name, arr in self._columns.items():
                col = hosts.columns[name]
                arr[t] = np.fromiter(col, dtype=object, count=hosts.n) if arr.dtype == object else col
            self._heads[number] = tick.head
            if len(self._heads) > MAX_HEADS:
                live = set(np.unique(self._tick[self._tick >= 0]).tolist())
                self._heads = {k: v for k, v in self._heads.items() if k in live}

    def _ensure(self, size: int, columns: Mapping[str, Any]) -> None:
        """Room for ``size`` targets; the per-target columns shaped after the first tick's."""
        if not self._columns:
            for name, col in columns.items():
                if name not in STATIC_FIELDS:
                    shape = col.shape[1:] if isinstance(col, np.ndarray) else ()
                    dtype = col.dtype if isinstance(col, np.ndarray) else object
                    self._columns[name] = np.zeros((0, *shape), dtype=dtype)
        have = len(self._tick)
        if size <= have:
            return
        size = max(size, 2 * have)
        self._tick = np.concatenate([self._tick, np.full(size - have, -1, dtype=np.int64)])
        self._record = np.concatenate([self._record, np.zeros(size - have, dtype=np.int64)])
        for name, arr in self._columns.items():
            grown = np.zeros((size, *arr.shape[1:]), dtype=arr.dtype)
            grown[:have] = arr
            self._columns[name] = grown

    def __getitem__(self, target: int) -> dict[str, Any]:
        with self._lock:
            comp = self._components.get(target)
            if comp is not None:
                return comp
            if not 0 <= target < len(self._tick) or self._tick[target] < 0:
                raise KeyError(target)
            cat = self._catalog
            cols: dict[str, Any] = {k: cat.column(k) for k in STATIC_FIELDS} | self._columns
            head = self._heads[int(self._tick[target])]
            return tick_dict(cat.tier(target), cols, target, head, int(self._record[target]))

    def __iter__(self) -> Iterator[int]:
        with self._lock:
            keys = [*self._components, *np.flatnonzero(self._tick >= 0).tolist()]
        return iter(keys)

    def __len__(self) -> int:
        with self._lock:
            return len(self._components) + int(np.count_nonzero(self._tick >= 0))
