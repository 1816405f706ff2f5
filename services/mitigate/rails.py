"""Safety rails: the limits no rule gets past, whoever proposed it (runbook or operator).

Each check returns the name of the rail and why, so a rejected rule says exactly what stopped it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress

from voxguard.shared.config import MitigationSettings

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A destination shorter than these would aim a rule at a whole provider, not at our component.
MIN_DESTINATION_V4 = 16
MIN_DESTINATION_V6 = 32


def source_violation(net: IPNetwork, policy: MitigationSettings) -> str | None:
    """``rail min_prefix_length ...`` when a source prefix is too short (a /0 never passes)."""
    minimum = policy.min_prefix_length_v4 if net.version == 4 else policy.min_prefix_length_v6
    if net.prefixlen == 0:
        return f"rail min_prefix_length: source {net} would match every address"
    if net.prefixlen < minimum:
        return f"rail min_prefix_length: source {net} is shorter than /{minimum} (IPv{net.version})"
    return None


def destination_violation(net: IPNetwork) -> str | None:
    """Destinations must be our components, never a wide prefix (and never /0)."""
    minimum = MIN_DESTINATION_V4 if net.version == 4 else MIN_DESTINATION_V6
    if net.prefixlen < minimum:
        return f"rail min_destination_length: destination {net} is shorter than /{minimum}"
    return None


def expires_at(policy: MitigationSettings, now: dt.datetime, ttl_seconds: int | None = None) -> dt.datetime:
    """Every rule has a TTL; an operator may ask for less than the tier's, never for more."""
    ttl = policy.ttl_seconds if ttl_seconds is None else min(ttl_seconds, policy.ttl_seconds)
    return now + dt.timedelta(seconds=max(1, ttl))


def total_violation(active: int, adding: int, maximum: int) -> str | None:
    """The service-wide cap on active rules (flow routes)."""
    if active + adding > maximum:
        return f"rail max_total_rules: {active} active + {adding} new flow routes exceed {maximum}"
    return None
