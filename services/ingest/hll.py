"""Vectorised HyperLogLog for distinct source counts per target.

Library sketches (datasketch, hyperloglog) update one item per Python call; at hundreds of
thousands of flows per second we need to update many targets' registers with a few numpy
operations, so the ~40 lines of HLL live here. Standard HLL (Flajolet et al. 2007) with the
linear-counting small-range correction; 2**9 registers give ~4.6 % standard error.
"""

from __future__ import annotations

import numpy as np

P = 9
M = 1 << P
_ALPHA = 0.7213 / (1 + 1.079 / M)
_U64 = np.uint64


def hash_addresses(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """splitmix64 over both address halves: a well-mixed 64-bit hash per address."""
    with np.errstate(over="ignore"):
        x = (hi * _U64(0x9E3779B97F4A7C15)) ^ lo
        x = x + _U64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
        return x ^ (x >> _U64(31))


def pair_key(owners: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """A 64-bit hash of (owner index, address): grouping by one uint64 is far cheaper than by a record."""
    with np.errstate(over="ignore"):
        return hash_addresses(hi, lo) ^ (owners.astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93))


def register_updates(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(register index, rank) for each hash: index = top P bits, rank = leading zeros + 1."""
    idx = (hashes >> _U64(64 - P)).astype(np.intp)
    rest = (hashes << _U64(P)) | _U64(1 << (P - 1))  # sentinel bit bounds the rank
    # leading zeros, exactly: log2 of a 32-bit half is exact in float64
    top = (rest >> _U64(32)).astype(np.float64)
    bottom = (rest & _U64(0xFFFF_FFFF)).astype(np.float64)
    has_top = top > 0
    lz = np.where(
        has_top,
        31 - np.floor(np.log2(np.where(has_top, top, 1.0))),
        63 - np.floor(np.log2(np.where(bottom > 0, bottom, 1.0))),
    ).astype(np.int64)
    return idx, (lz + 1).astype(np.uint8)


class HllBank:
    """A growable matrix of HLL registers, one row per active target in the current tick."""

    def __init__(self, rows: int = 1024):
        self._regs = np.zeros((rows, M), dtype=np.uint8)
        self._row_of: dict[int, int] = {}

    def rows_for(self, targets: np.ndarray) -> np.ndarray:
        """Row numbers for target indices, allocating rows for targets new in this tick."""
        uniq, inv = np.unique(targets, return_inverse=True)
        rows = np.empty(len(uniq), dtype=np.intp)
        for i, t in enumerate(uniq.tolist()):
            r = self._row_of.get(t)
            if r is None:
                r = len(self._row_of)
                self._row_of[t] = r
                if r >= len(self._regs):
                    grown = np.zeros((len(self._regs) * 2, M), dtype=np.uint8)
                    grown[: len(self._regs)] = self._regs
                    self._regs = grown
            rows[i] = r
        return rows[inv]

    def add(self, targets: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> None:
        """Add source addresses (hi, lo) to the sketches of their targets."""
        if len(targets) == 0:
            return
        rows = self.rows_for(targets)
        idx, rank = register_updates(hash_addresses(hi, lo))
        np.maximum.at(self._regs, (rows, idx), rank)

    def estimates(self) -> tuple[np.ndarray, np.ndarray]:
        """(targets seen in this tick, distinct-count estimate of each)."""
        if not self._row_of:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        targets = np.fromiter(self._row_of.keys(), dtype=np.int64)
        rows = np.fromiter(self._row_of.values(), dtype=np.intp)
        regs = self._regs[rows].astype(np.float64)
        raw = _ALPHA * M * M / np.sum(np.exp2(-regs), axis=1)
        zeros = np.count_nonzero(regs == 0, axis=1)
        small = (raw <= 2.5 * M) & (zeros > 0)
        est = raw.copy()
        est[small] = M * np.log(M / zeros[small])
        return targets, np.rint(est).astype(np.int64)

    def reset(self) -> None:
        """Clear for the next tick, keeping the allocated memory."""
        if self._row_of:
            self._regs[: len(self._row_of)] = 0
        self._row_of.clear()
