"""Which baseline shard a target belongs to, and the traffic subject its ticks travel on.

Per-host targets are the many (up to ``max_host_targets``), component targets the few. With
``VOXGUARD_BASELINE_SHARDS`` = P > 1 the collector publishes a per-host tick on
``voxguard.traffic.v1.<tier>.<partition>`` so each baseline worker consumes only the
partitions it holds; component ticks stay on ``voxguard.traffic.v1.<tier>``, which every worker
reads, because the detectors' cross-tier context (SBC external SIP, regional media, demand) is
computed from them. Both subjects match ``voxguard.traffic.v1.>`` so the traffic stream and
unsharded consumers are unaffected; with P = 1 nothing changes at all.

The hash is CRC-32 of the target id: stable across processes, versions and platforms (unlike
Python's ``hash``), and the same function is used by the publisher and by the workers.
"""

from __future__ import annotations

import zlib

TRAFFIC_PREFIX = "voxguard.traffic.v1"


def partition_of(target_id: str, shards: int) -> int:
    """The partition (0..shards-1) of a target id."""
    if shards <= 1:
        return 0
    return zlib.crc32(target_id.encode()) % shards


def traffic_subject(tier: str, target_id: str, *, host: str | None, shards: int) -> str:
    """The subject a tick is published on: partitioned for per-host targets when sharded."""
    if shards <= 1 or host is None:
        return f"{TRAFFIC_PREFIX}.{tier}"
    return f"{TRAFFIC_PREFIX}.{tier}.{partition_of(target_id, shards)}"


def context_filter() -> str:
    """Component (aggregate) ticks of every tier: what each worker reads for context."""
    return f"{TRAFFIC_PREFIX}.*"


def partition_filter(partition: int) -> str:
    """The per-host ticks of one partition, all tiers."""
    return f"{TRAFFIC_PREFIX}.*.{partition}"


__all__ = ["TRAFFIC_PREFIX", "context_filter", "partition_filter", "partition_of", "traffic_subject"]
