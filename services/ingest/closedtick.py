"""What the collector hands over when it closes a tick: component ticks as dicts, per-host ticks as columns.

Component targets are few and each travels as one ``TrafficTick`` message, so they stay dicts.
Per-host targets are up to 100,000 a tick and travel as ``TrafficBatch`` columns, so they are
kept as the columns the batch is made of (``voxguard.shared.batches.ticks_to_columns``' names
and values): rendering a dict per record only to turn the dicts back into columns would cost
seconds of the collector's thread.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from voxguard.ingest.targetcolumns import STATIC_FIELDS, TargetColumns
from voxguard.shared.messages import SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class TickHead:
    """The fields one tick's records share."""

    tick_start: float  # unix seconds, the same instant as tick_start_iso
    tick_start_iso: str
    tick_seconds: float
    ts: str  # when the tick was closed
    id_prefix: str  # record k's message id is id_prefix + k as 8 hex digits

    def record_id(self, k: int) -> str:
        return f"{self.id_prefix}{k:08x}"


@dataclass(slots=True)
class HostColumns:
    """One tick's per-host records as batch columns: numbers as arrays (``size_histogram`` 2-D),
    text and list fields as lists. List and dict values may be shared between records: read only."""

    targets: np.ndarray  # target index per record (``TargetColumns``)
    tier: np.ndarray  # tier code per record (``catalog.tiers``)
    columns: dict[str, Any]
    catalog: TargetColumns
    first_record: int = 0  # record k of these columns is record first_record + k of the tick (its id)

    @property
    def n(self) -> int:
        return len(self.targets)

    def groups(self, shards: int = 1) -> Iterator[tuple[str, int | None, dict[str, Any], int]]:
        """(tier, partition or None, columns, count) per tier and, when ``shards`` > 1, baseline
        partition; records keep their order within a group."""
        if self.n == 0:
            return
        key = self.tier
        parts = None
        if shards > 1:
            parts = self.catalog.partitions(shards, self.targets, self.columns["target_id"])
            key = key * shards + parts
        uniq, first = np.unique(key, return_index=True)
        if len(uniq) == 1:
            yield *self._group_key(int(first[0]), parts), self.columns, self.n
            return
        order = np.argsort(key, kind="stable")
        bounds = np.searchsorted(key[order], uniq[1:])
        lists = {k: np.fromiter(v, dtype=object, count=self.n) for k, v in self.columns.items() if isinstance(v, list)}
        for start, rows in zip(first.tolist(), np.split(order, bounds), strict=True):
            cols = {k: lists[k][rows].tolist() if k in lists else v[rows] for k, v in self.columns.items()}
            yield *self._group_key(start, parts), cols, len(rows)

    def _group_key(self, record: int, parts: np.ndarray | None) -> tuple[str, int | None]:
        return self.catalog.tiers[int(self.tier[record])], None if parts is None else int(parts[record])


@dataclass(slots=True)
class ClosedTick:
    """One closed tick: its shared fields, component ticks (dicts) and per-host ticks (columns)."""

    head: TickHead
    components: list[dict[str, Any]]
    component_targets: list[int]  # the target index of each component tick
    hosts: HostColumns

    def __len__(self) -> int:
        """Records (component and per-host ticks)."""
        return len(self.components) + self.hosts.n

    @property
    def tick_start(self) -> float:
        return self.head.tick_start


def tick_dict(tier: str, cols: Mapping[str, Any], i: int, head: TickHead, record: int) -> dict[str, Any]:
    """Record ``i`` of ``cols`` (batch columns, or per-target columns) as a ``TrafficTick``-shaped
    dict: a component's message, or a host target's last tick for the API."""
    out: dict[str, Any] = {"tier": tier}
    for k in STATIC_FIELDS:
        out[k] = cols[k][i]

    def count(k: str) -> int:
        return int(cols[k][i])

    out.update(
        schema_version=SCHEMA_VERSION,
        id=head.record_id(record),
        ts=head.ts,
        tick_start=head.tick_start_iso,
        tick_seconds=head.tick_seconds,
        exporters=list(cols["exporters"][i]),
        bytes=count("bytes"),
        packets=count("packets"),
        flows=count("flows"),
        new_connections=count("new_connections"),
        icmp_packets=count("icmp_packets"),
        long_lived_flows=count("long_lived_flows"),
        distinct_sources=count("distinct_sources"),
        bytes_per_packet=float(cols["bytes_per_packet"][i]),
        size_histogram=[int(x) for x in cols["size_histogram"][i]],
        top_sources=source_dicts(cols["top_sources"][i]),
        top_prefixes=source_dicts(cols["top_prefixes"][i]),
        sip_methods=dict(cols["sip_methods"][i]),
        sip_scanner_packets=count("sip_scanner_packets"),
        sip_malformed_packets=count("sip_malformed_packets"),
        sip_sampled_packets=count("sip_sampled_packets"),
        flow_records=count("flow_records"),
        sampled=bool(cols["sampled"][i]),
    )
    return out


def source_dicts(text: str) -> list[dict[str, Any]]:
    """A top-sources text (``"<source> <packets> <bytes>;..."``) as ``SourceCount``-shaped dicts."""
    if not text:
        return []
    out = []
    for entry in text.split(";"):
        source, packets, nbytes = entry.split(" ")
        out.append({"source": source, "packets": int(packets), "bytes": int(nbytes)})
    return out
