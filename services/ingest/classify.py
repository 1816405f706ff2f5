"""Vectorised classification of flows to the monitored targets of the config.

A flow belongs to a component when its destination falls in one of the component's
prefixes (most specific prefix wins) and it was exported by one of the tier's monitoring
points; it belongs to the component's target for the first monitor whose protocol and
destination port (range) match. Inside a component prefix wider than one host, the flow
also counts for a per-host target (created on first traffic, capped by
``max_host_targets`` so a spoofed sweep cannot exhaust memory).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numpy as np

from voxguard.ingest.decode.flows import halves_to_addr, is_v4
from voxguard.ingest.hll import pair_key
from voxguard.ingest.targetcolumns import TargetColumns
from voxguard.shared.config import Monitor, TargetDef, Tier, VoxGuardConfig, target_id


@dataclass(slots=True)
class TargetInfo:
    """What the collector needs of a target, computed once (host targets are made by the
    thousand on the hot path, so this is a slotted dataclass, not a pydantic model)."""

    id: str
    name: str
    tier: Tier
    component: str
    host: str | None
    monitor: Monitor
    region: str | None
    static: dict[str, object]  # the message fields that never change, ready to copy

    @classmethod
    def of(cls, td: TargetDef) -> TargetInfo:
        """From a configured target."""
        return cls._make(td.id, td.name, td.tier, td.component, None, td.monitor, td.region)

    def for_host(self, host: str) -> TargetInfo:
        """The per-host target for one address inside this component target."""
        tid = target_id(self.tier, host, self.monitor)
        name = f"{self.component} {host} {self.monitor.label()}"
        return self._make(tid, name, self.tier, self.component, host, self.monitor, self.region)

    @classmethod
    def _make(
        cls, tid: str, name: str, tier: Tier, component: str, host: str | None, monitor: Monitor, region: str | None
    ) -> TargetInfo:
        static: dict[str, object] = {
            "tier": tier.value,
            "target_id": tid,
            "target": name,
            "component": component,
            "host": host,
            "protocol": monitor.protocol.value,
            "ports": str(monitor.ports) if monitor.ports else None,
            "role": monitor.effective_role,
            "region": region,
        }
        return cls(tid, name, tier, component, host, monitor, region, static)


def _prefix_masks(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, int, int, int]:
    """(net_hi, net_lo, mask_hi, mask_lo) of a prefix in the IPv4-mapped 128-bit space."""
    if isinstance(net, ipaddress.IPv4Network):
        value = (0xFFFF << 32) | int(net.network_address)
        plen = 96 + net.prefixlen
    else:
        value = int(net.network_address)
        plen = net.prefixlen
    mask = ((1 << 128) - 1) ^ ((1 << (128 - plen)) - 1)
    return value >> 64, value & 0xFFFF_FFFF_FFFF_FFFF, mask >> 64, mask & 0xFFFF_FFFF_FFFF_FFFF


@dataclass(slots=True)
class Classified:
    """Per-contribution arrays: a flow row may contribute to a component and a host target."""

    rows: np.ndarray  # index into the flow array
    targets: np.ndarray  # target index into TargetTable.targets
    host_rows_dropped: int = 0  # flows that would have created a host target past the cap
    matched: int = 0  # distinct flows that matched a component target


class TargetTable:
    """The config's targets compiled for vectorised matching, plus the host targets seen."""

    def __init__(self, config: VoxGuardConfig):
        self.config = config
        self.max_host_targets = config.ingest.max_host_targets
        self.targets: list[TargetInfo] = []
        self.columns = TargetColumns()  # their static fields as columns, by the same index
        self.index: dict[str, int] = {}
        exporters = [e.name for e in config.exporters]
        self.exporter_names = exporters
        n_comps = 0
        self._tier_of_comp: list[int] = []
        tiers = list(config.tiers)
        self._monitors: list[tuple[int, tuple[int, ...], int, int, bool]] = []  # tier, protos, lo, hi, ports?
        mon_ix_by_tier: dict[int, list[int]] = {}
        for ti, tier in enumerate(tiers):
            for mon in config.tiers[tier].monitors:
                protos = mon.protocol.numbers
                lo, hi = (mon.ports.low, mon.ports.high) if mon.ports else (0, 65535)
                mon_ix_by_tier.setdefault(ti, []).append(len(self._monitors))
                self._monitors.append((ti, protos, lo, hi, mon.ports is not None))
        prefixes: list[tuple[int, int, int, int, int, int]] = []  # plen, comp, masks...
        comp_targets: list[list[int]] = []
        self._per_host: list[bool] = []
        for ti, tier in enumerate(tiers):
            tc = config.tiers[tier]
            for comp in tc.components:
                ci = n_comps
                n_comps += 1
                self._tier_of_comp.append(ti)
                wide = any(n.prefixlen < (32 if isinstance(n, ipaddress.IPv4Network) else 128) for n in comp.addresses)
                self._per_host.append(tc.per_host and wide)
                for net in comp.addresses:
                    plen = net.prefixlen + (96 if isinstance(net, ipaddress.IPv4Network) else 0)
                    prefixes.append((plen, ci, *_prefix_masks(net)))
                row = [-1] * len(self._monitors)
                for mi, mon in zip(mon_ix_by_tier[ti], tc.monitors, strict=True):
                    td = TargetDef(
                        tier=tier,
                        component=comp.name,
                        prefixes=tuple(comp.addresses),
                        monitor=mon,
                        region=comp.region,
                        tags=tuple(comp.tags),
                    )
                    row[mi] = self._add(TargetInfo.of(td))
                comp_targets.append(row)
        self.n_config_targets = len(self.targets)
        prefixes.sort(key=lambda p: -p[0])
        self._prefixes = prefixes
        self._v4_prefixes = [
            (ci, np.uint32(nl & 0xFFFF_FFFF), np.uint32(ml & 0xFFFF_FFFF))
            for plen, ci, nh, nl, mh, ml in prefixes
            if nh == 0 and (nl >> 32) == 0xFFFF and plen >= 96
        ]
        self._v6_prefixes = [
            (ci, np.uint64(nh), np.uint64(nl), np.uint64(mh), np.uint64(ml))
            for plen, ci, nh, nl, mh, ml in prefixes
            if not (nh == 0 and (nl >> 32) == 0xFFFF and plen >= 96)
        ]
        self._comp_target = np.array(comp_targets, dtype=np.int64).reshape(n_comps, len(self._monitors))
        self._tier_of_comp_arr = np.array(self._tier_of_comp, dtype=np.int64)
        self._per_host_arr = np.array(self._per_host, dtype=bool)
        # allowed[exporter_ix, comp]: the last row is "an exporter not in the config"
        allowed = np.zeros((len(exporters) + 1, max(n_comps, 1)), dtype=bool)
        for ci in range(n_comps):
            tc = config.tiers[tiers[self._tier_of_comp[ci]]]
            if not tc.exporters:
                allowed[:, ci] = True
            else:
                for name in tc.exporters:
                    allowed[exporters.index(name), ci] = True
        self._allowed = allowed
        self._host_index: dict[tuple[int, int, int], int] = {}
        self.host_targets_dropped = 0

    def _add(self, info: TargetInfo) -> int:
        ix = self.columns.append(info.static)
        self.targets.append(info)  # after its columns: readers take indices from this list
        self.index[info.id] = ix
        return ix

    @property
    def unknown_exporter(self) -> int:
        """Exporter index used for datagrams from addresses not in the config."""
        return len(self.exporter_names)

    def classify(self, flows: np.ndarray, exporter_ix: np.ndarray) -> Classified:
        """Target contributions of each flow (``exporter_ix`` per flow row)."""
        n = len(flows)
        if n == 0 or not self._prefixes:
            return Classified(np.empty(0, np.int64), np.empty(0, np.int64))
        dst_hi = flows["dst_hi"]
        dst_lo = flows["dst_lo"]
        comp = np.full(n, -1, dtype=np.int64)
        v4 = is_v4(dst_hi, dst_lo)
        all_v4 = bool(v4.all())
        if self._v4_prefixes:
            # IPv4 fast path: 32-bit compares on the low word
            d32 = dst_lo.astype(np.uint32)
            for ci, net, mask in self._v4_prefixes:
                m = (d32 & mask) == net
                if not all_v4:
                    m &= v4
                m &= comp < 0
                comp[m] = ci
        if self._v6_prefixes and not all_v4:
            six = np.flatnonzero(~v4)
            hi6, lo6, c6 = dst_hi[six], dst_lo[six], comp[six]
            for ci, nh, nl, mh, ml in self._v6_prefixes:
                m = ((lo6 & ml) == nl) & ((hi6 & mh) == nh) & (c6 < 0)
                c6[m] = ci
            comp[six] = c6
        rows = np.flatnonzero(comp >= 0)
        if len(rows) == 0:
            return Classified(np.empty(0, np.int64), np.empty(0, np.int64))
        c = comp[rows]
        ok = self._allowed[exporter_ix[rows], c]
        rows, c = rows[ok], c[ok]
        tier = self._tier_of_comp_arr[c]
        proto = flows["proto"][rows]
        port = flows["dst_port"][rows]
        target = np.full(len(rows), -1, dtype=np.int64)
        for mi, (ti, protos, lo, hi, has_ports) in enumerate(self._monitors):
            m = (target < 0) & (tier == ti)
            if protos:
                m &= np.isin(proto, protos) if len(protos) > 1 else proto == protos[0]
            if has_ports:
                m &= (port >= lo) & (port <= hi)
            if m.any():
                target[m] = self._comp_target[c[m], mi]
        hit = target >= 0
        rows, c, target = rows[hit], c[hit], target[hit]
        host_mask = self._per_host_arr[c]
        if not host_mask.any():
            return Classified(rows, target, 0, len(rows))
        h_rows = rows[host_mask]
        h_parent = target[host_mask]
        h_targets, dropped = self._host_targets(h_parent, dst_hi[h_rows], dst_lo[h_rows])
        keep = h_targets >= 0
        return Classified(
            np.concatenate([rows, h_rows[keep]]),
            np.concatenate([target, h_targets[keep]]),
            dropped,
            len(rows),
        )

    def _host_targets(self, parent: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, int]:
        keys = pair_key(parent, hi, lo)
        _, first, inv = np.unique(keys, return_index=True, return_inverse=True)
        uniq = zip(parent[first].tolist(), hi[first].tolist(), lo[first].tolist(), strict=True)
        out = np.empty(len(first), dtype=np.int64)
        dropped = 0
        for i, (p, h, lw) in enumerate(uniq):
            key = (p, h, lw)
            ix = self._host_index.get(key)
            if ix is None:
                if len(self._host_index) >= self.max_host_targets:
                    out[i] = -1
                    dropped += 1
                    continue
                ix = self._add(self.targets[p].for_host(halves_to_addr(h, lw)))
                self._host_index[key] = ix
            out[i] = ix
        result = out[inv.reshape(-1)]
        lost = int(np.count_nonzero(result < 0))
        self.host_targets_dropped += dropped
        return result, lost

    @property
    def host_target_count(self) -> int:
        """Host targets created so far."""
        return len(self._host_index)
