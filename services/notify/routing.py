"""Which channels hear about an alert: match rules, quiet hours, per-route rate limits.

Suppressed notifications are still recorded (status ``suppressed``) so the NOC can see what an
attack would have sent; a resolution always gets through, so a page is never left open because
the storm limiter ate its resolve.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from voxguard.notify.clock import Clock
from voxguard.notify.config import NotificationsConfig, QuietHours, Route
from voxguard.notify.events import Alert


@dataclass(frozen=True)
class Decision:
    route: str
    channel: str
    suppressed: str | None = None  # the reason, when not sent


def matches(route: Route, alert: Alert) -> bool:
    m = route.match
    if m.severity and alert.severity not in m.severity:
        return False
    if m.tiers and (alert.tier is None or alert.tier not in {t.value for t in m.tiers}):
        return False
    if m.regions and alert.region not in m.regions:
        return False
    inc = alert.incident
    if m.components and (inc is None or inc.component not in m.components):
        return False
    if m.tags and (inc is None or not set(m.tags) & set(inc.tags)):
        return False
    return not (m.kinds and alert.kind not in m.kinds)


def in_quiet_hours(q: QuietHours, now: dt.datetime) -> bool:
    local = now.astimezone(ZoneInfo(q.tz)).time()
    if q.start <= q.end:
        return q.start <= local < q.end
    return local >= q.start or local < q.end  # window across midnight


class Router:
    def __init__(self, cfg: NotificationsConfig, clock: Clock) -> None:
        self.cfg = cfg
        self.clock = clock
        self._sent: dict[str, deque[dt.datetime]] = {}

    def _rate_limited(self, route: Route, now: dt.datetime) -> bool:
        rl = route.rate_limit
        if rl is None:
            return False
        window = self._sent.setdefault(route.name, deque())
        horizon = now - dt.timedelta(seconds=rl.per_s)
        while window and window[0] <= horizon:
            window.popleft()
        if len(window) >= rl.max:
            return True
        window.append(now)
        return False

    def decide(self, alert: Alert) -> list[Decision]:
        """One decision per (route, channel); a channel reached by two routes is sent once."""
        now = self.clock.now()
        out: list[Decision] = []
        seen: set[str] = set()
        for route in self.cfg.routes:
            if not matches(route, alert):
                continue
            reason: str | None = None
            if (
                route.quiet_hours
                and in_quiet_hours(route.quiet_hours, now)
                and alert.severity not in route.quiet_hours.allow
            ):
                reason = f"quiet hours of route {route.name}"
            elif not alert.resolving and self._rate_limited(route, now):
                assert route.rate_limit is not None
                reason = f"route {route.name} rate limit ({route.rate_limit.max} per {route.rate_limit.per_s:g} s)"
            for ch in route.channels:
                if ch in seen or not self.cfg.channels[ch].enabled:
                    continue
                seen.add(ch)
                out.append(Decision(route.name, ch, reason))
            if route.stop:
                break
        return out
