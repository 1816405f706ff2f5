"""Bounded rings of recent evidence: decoded flow rows and sFlow raw packet headers.

Both are global rings (one array copy per batch, not one append per target), filtered
by target on request; so memory is fixed whatever the number of targets.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from voxguard.ingest.decode.flows import FLOW_DTYPE, halves_to_addr

RING_DTYPE = np.dtype([("flow", FLOW_DTYPE), ("target", "<i8"), ("ts", "<f8")])


@dataclass(slots=True, frozen=True)
class HeaderSample:
    """One sampled packet header and the target it was classified to."""

    ts: float
    target: int
    header_protocol: int
    frame_length: int
    header: bytes


class FlowRing:
    """The last ``size`` classified flow rows, for ``GET /v1/targets/{id}/flows``."""

    def __init__(self, size: int = 200_000):
        self._buf = np.zeros(size, dtype=RING_DTYPE)
        self._pos = 0
        self._filled = 0
        self._lock = threading.Lock()

    def add(self, flows: np.ndarray, targets: np.ndarray, ts: float) -> None:
        """Append rows (already matched to ``targets``); old rows are overwritten."""
        n = len(flows)
        if n == 0:
            return
        size = len(self._buf)
        if n > size:
            flows, targets, n = flows[-size:], targets[-size:], size
        with self._lock:
            first = min(n, size - self._pos)
            for src, dst in (
                (slice(0, first), slice(self._pos, self._pos + first)),
                (slice(first, n), slice(0, n - first)),
            ):
                if src.start == src.stop:
                    continue
                self._buf["flow"][dst] = flows[src]
                self._buf["target"][dst] = targets[src]
                self._buf["ts"][dst] = ts
            self._pos = (self._pos + n) % size
            self._filled = min(size, self._filled + n)

    def for_target(self, target: int, limit: int = 1000) -> list[dict[str, Any]]:
        """Most recent rows of one target, newest first, as JSON-friendly dicts."""
        with self._lock:
            size = len(self._buf)
            order = (np.arange(self._pos - 1, self._pos - 1 - self._filled, -1)) % size
            rows = self._buf[order]
        rows = rows[rows["target"] == target][:limit]
        return [_row_dict(r) for r in rows]


def _row_dict(r: np.void) -> dict[str, Any]:
    f = r["flow"]
    v6 = not (int(f["src_hi"]) == 0 and (int(f["src_lo"]) >> 32) == 0xFFFF)
    src, dst = halves_to_addr(f["src_hi"], f["src_lo"]), halves_to_addr(f["dst_hi"], f["dst_lo"])
    fam = "IPv6" if v6 else "IPv4"
    return {
        "receivedAt": float(r["ts"]),
        f"source{fam}Address": src,
        f"destination{fam}Address": dst,
        "sourceTransportPort": int(f["src_port"]),
        "destinationTransportPort": int(f["dst_port"]),
        "protocolIdentifier": int(f["proto"]),
        "tcpControlBits": int(f["tcp_flags"]),
        "octetDeltaCount": int(f["bytes"]),
        "packetDeltaCount": int(f["packets"]),
        "flowStartMilliseconds": int(f["start_ms"]) or None,
        "flowEndMilliseconds": int(f["end_ms"]) or None,
        "samplingInterval": int(f["sampling"]),
    }


class HeaderRing:
    """The last ``size`` sFlow raw headers with their targets, for evidence pcaps."""

    def __init__(self, size: int = 50_000):
        self._ring: deque[HeaderSample] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, samples: list[HeaderSample]) -> None:
        """Append samples; the oldest fall off."""
        with self._lock:
            self._ring.extend(samples)

    def for_target(self, target: int, limit: int = 10_000) -> list[HeaderSample]:
        """Samples of one target, oldest first (pcap order)."""
        with self._lock:
            found = [s for s in self._ring if s.target == target]
        return found[-limit:]
