"""Sources no mitigation rule may ever match, and the prefix arithmetic that keeps them out.

A candidate source prefix inside a whitelisted prefix is dropped; one that contains whitelisted
space is split around it (``ipaddress.address_exclude``), so the rest of the attacking network is
still blocked. Rules without a source (any source) cannot be split; they are only allowed behind
``accept`` rules for the whitelisted prefixes (see ``policy.guard_any_source``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class WhitelistEntry:
    """One whitelisted prefix, where it came from and why."""

    prefix: IPNetwork
    kind: str  # static, registered_endpoints, sip_trunks, sbc_sources, active_rtp_peers, ...
    reason: str
    id: str | None = None

    def label(self) -> str:
        """What a rejected or split rule records as its reason."""
        ref = f" #{self.id}" if self.id else ""
        return f"whitelist {self.kind}{ref} {self.prefix} ({self.reason})"


@dataclass
class Outcome:
    """What remains of one source prefix after the whitelist."""

    kept: list[IPNetwork] = field(default_factory=list)
    hits: list[WhitelistEntry] = field(default_factory=list)  # entries that cut or dropped it

    @property
    def dropped(self) -> bool:
        return not self.kept

    def reason(self) -> str | None:
        """``dropped: <entry>`` or ``split around: <entries>``, or None when untouched."""
        if not self.hits:
            return None
        labels = "; ".join(e.label() for e in self.hits)
        return f"dropped: covered by {labels}" if self.dropped else f"split around {labels}"


def subtract(source: IPNetwork, holes: Iterable[IPNetwork]) -> list[IPNetwork]:
    """``source`` minus every hole, as the fewest CIDR prefixes."""
    pieces = [source]
    for hole in holes:
        if hole.version != source.version:
            continue
        nxt: list[IPNetwork] = []
        for piece in pieces:
            if not piece.overlaps(hole):
                nxt.append(piece)
            elif piece.subnet_of(hole):  # type: ignore[arg-type]
                continue
            else:
                nxt.extend(piece.address_exclude(hole))  # type: ignore[arg-type]
        pieces = nxt
    return sorted(pieces, key=lambda n: (n.network_address, n.prefixlen))


class Whitelist:
    """An immutable snapshot of every whitelist source (config, runtime API, learned)."""

    def __init__(self, entries: Sequence[WhitelistEntry] = ()) -> None:
        self.entries = tuple(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def overlapping(self, net: IPNetwork) -> list[WhitelistEntry]:
        """Entries sharing any address with ``net``."""
        return [e for e in self.entries if e.prefix.version == net.version and e.prefix.overlaps(net)]

    def apply(self, source: IPNetwork) -> Outcome:
        """Split or drop ``source`` so that no whitelisted address remains in it."""
        hits = self.overlapping(source)
        if not hits:
            return Outcome(kept=[source])
        return Outcome(kept=subtract(source, (e.prefix for e in hits)), hits=hits)

    def for_version(self, version: int) -> list[WhitelistEntry]:
        """Entries of one address family, deduplicated and without prefixes nested in others."""
        nets = sorted({e.prefix for e in self.entries if e.prefix.version == version}, key=lambda n: n.prefixlen)
        top: list[IPNetwork] = []
        for n in nets:
            if not any(n.subnet_of(t) for t in top):  # type: ignore[arg-type]
                top.append(n)
        by_net = {e.prefix: e for e in self.entries}
        return [by_net[n] for n in top]
