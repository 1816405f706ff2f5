"""FlowSpec flow routes and their ExaBGP text commands (RFC 8955 for IPv4, RFC 8956 for IPv6).

One ``FlowRoute`` is one NLRI: a destination prefix, at most one source prefix, a protocol and a
destination port or range, plus the action carried as an extended community. The NLRI (the match)
is the route's identity in BGP: announcing a second route with the same match replaces the first,
so ``FlowRoute.key`` (the match text) is also what the reconciler tracks.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Action = Literal["discard", "rate_limit", "accept"]
Proto = Literal["udp", "tcp", "icmp", "any"]


class RuleError(ValueError):
    """A rule that cannot be expressed or is malformed; ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_prefix(value: str, field: str) -> IPNetwork:
    """A prefix from user or event input; host bits set or garbage is refused, not guessed."""
    try:
        return ipaddress.ip_network(str(value).strip(), strict=True)
    except ValueError as exc:
        raise RuleError(field, f"{value!r} is not a valid IP prefix ({exc})") from None


def parse_ports(value: str | None, field: str = "destination_ports") -> tuple[int, int] | None:
    """``"5060"`` or ``"10000-20000"``; an inverted or out-of-range range is refused."""
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip()
    try:
        lo_s, dash, hi_s = text.partition("-")
        lo = int(lo_s)
        hi = int(hi_s) if dash else lo
    except ValueError:
        raise RuleError(field, f"{value!r} is not a port or a range like 10000-20000") from None
    for port in (lo, hi):
        if not 0 <= port <= 65535:
            raise RuleError(field, f"port {port} is outside 0-65535")
    if lo > hi:
        raise RuleError(field, f"port range {lo}-{hi} is inverted (low > high)")
    return lo, hi


def ports_text(ports: tuple[int, int] | None) -> str | None:
    """The API form of a port match."""
    if ports is None:
        return None
    return str(ports[0]) if ports[0] == ports[1] else f"{ports[0]}-{ports[1]}"


@dataclass(frozen=True)
class FlowRoute:
    """One FlowSpec NLRI and its action."""

    destination: IPNetwork
    source: IPNetwork | None
    protocol: Proto
    ports: tuple[int, int] | None
    action: Action
    rate_bps: int | None = None

    def __post_init__(self) -> None:
        if self.source is not None and self.source.version != self.destination.version:
            raise RuleError("sources", f"{self.source} and destination {self.destination} are different IP versions")
        if self.ports is not None and self.protocol not in ("udp", "tcp"):
            raise RuleError("destination_ports", "ports need protocol udp or tcp")
        if self.action == "rate_limit" and (self.rate_bps is None or self.rate_bps < 0):
            raise RuleError("rate_bps", "a rate_limit rule needs rate_bps >= 0 (bytes per second)")

    @property
    def key(self) -> str:
        """The match text: the NLRI identity."""
        return match_text(self)

    def body(self) -> str:
        """``route { match { ... } then { ... } }``: what follows ``announce flow`` / ``withdraw flow``."""
        return f"route {{ match {{ {match_text(self)} }} then {{ {then_text(self)} }} }}"

    def announce(self) -> str:
        """``announce flow route { match { ... } then { ... } }``."""
        return f"announce flow {self.body()}"

    def withdraw(self) -> str:
        """Withdraw by the same match (the action is ignored by the peer)."""
        return f"withdraw flow {self.body()}"


def batch_command(verb: str, bodies: list[str]) -> str:
    """Several routes in one command (``announce flow route {..} route {..}``), acknowledged once.

    ExaBGP's per-command overhead is most of its cost, so batching makes a full re-announce of
    thousands of rules several times faster; a batch fails as a whole (nothing of it is applied).
    """
    return f"{verb} flow " + " ".join(bodies)


def _prefix(net: IPNetwork) -> str:
    # RFC 8956 IPv6 prefixes carry an offset; ExaBGP writes it as prefix/len/offset.
    return f"{net}/0" if net.version == 6 else str(net)


def match_text(route: FlowRoute) -> str:
    """The ``match { }`` body, components in RFC type order (destination, source, protocol, port)."""
    parts = [f"destination {_prefix(route.destination)};"]
    if route.source is not None:
        parts.append(f"source {_prefix(route.source)};")
    if route.protocol != "any":
        if route.destination.version == 4:
            parts.append(f"protocol {'=icmp' if route.protocol == 'icmp' else route.protocol};")
        else:
            parts.append(f"next-header {'=58' if route.protocol == 'icmp' else route.protocol};")
    if route.ports is not None:
        lo, hi = route.ports
        parts.append(f"destination-port ={lo};" if lo == hi else f"destination-port >={lo}&<={hi};")
    return " ".join(parts)


def then_text(route: FlowRoute) -> str:
    """The ``then { }`` body: discard = rate 0, rate-limit in bytes/s, accept = no action."""
    if route.action == "discard":
        return "discard;"
    if route.action == "rate_limit":
        return f"rate-limit {int(route.rate_bps or 0)};"
    return "accept;"
