"""Component state machine: incidents in, debounced status changes out to every provider.

Rules (design.md, issue 6):
* an incident affects the components of its tier and the component of its region;
* a component changes only once an incident has affected it for ``affect_after_s`` (60 s):
  short blips never reach customers;
* it goes worse at once, better only after ``min_hold_s`` since its last change, and back to
  operational only after ``recover_after_s`` without any incident: it never flaps;
* on the first change away from operational a status-page incident may be opened; going back
  to operational resolves it.
The state is persisted, so a restart neither forgets an open page incident nor re-sends it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from voxguard.notify.clock import Clock
from voxguard.notify.config import ComponentStatus, NotifyConfig, StatusComponent
from voxguard.notify.events import Alert
from voxguard.notify.statuspages.base import OPERATIONAL, RANK, Adapter
from voxguard.notify.statuspages.sender import plan
from voxguard.notify.store import Store

Enqueue = Callable[[list[dict[str, Any]]], Awaitable[list[int]]]

_FRIENDLY = {
    "sip_signaling": "call setup and registration",
    "voice_quality": "call audio quality",
    "api": "the API and management portal",
}
_TIER_WORDS = {"sbc": "signalling", "registrar": "registration", "media": "media", "turn": "media relay", "api": "API"}


@dataclass
class CompState:
    status: str = OPERATIONAL
    changed_at: dt.datetime | None = None
    incidents: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> {severity, since}
    clear_since: dt.datetime | None = None
    page_ref: str | None = None


@dataclass
class Change:
    component: str
    old: str
    new: ComponentStatus
    action: str  # component, open, resolve
    ref: str | None
    reason: str


def _ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def channel_name(provider: str) -> str:
    return f"statuspage:{provider}"


class StatusEngine:
    def __init__(
        self,
        cfg: NotifyConfig,
        store: Store,
        clock: Clock,
        adapters: Mapping[str, Adapter],
        enqueue: Enqueue,
    ) -> None:
        self.sp = cfg.status_pages
        self.components: dict[str, StatusComponent] = cfg.components()
        self.store = store
        self.clock = clock
        self.adapters = dict(adapters)
        self.enqueue = enqueue
        self.state: dict[str, CompState] = {k: CompState() for k in self.components}
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        rows = await self.store.run(self.store.load_components)
        for key, row in rows.items():
            if key in self.state:
                self.state[key] = CompState(
                    row.status, row.changed_at, orjson.loads(row.incidents or "{}"), row.clear_since, row.page_ref
                )

    def affected(self, alert: Alert) -> list[str]:
        out = []
        for key, comp in self.components.items():
            if (alert.tier and alert.tier in {t.value for t in comp.tiers}) or (
                comp.region and alert.region == comp.region
            ):
                out.append(key)
        return out

    async def on_alert(self, alert: Alert) -> list[Change]:
        """Track an incident event, then evaluate (which may enqueue provider calls)."""
        if alert.incident is None or alert.incident_id is None:
            return []
        now = self.clock.now()
        async with self._lock:
            for key in self.affected(alert):
                st = self.state[key]
                before = (dict(st.incidents), st.clear_since)
                mapped = self.sp.severity_status.get(alert.severity)  # type: ignore[call-overload]
                if alert.resolving or alert.incident.state == "resolved" or mapped is None:
                    st.incidents.pop(alert.incident_id, None)
                else:
                    prev = st.incidents.get(alert.incident_id)
                    since = prev["since"] if prev else alert.incident.opened_at.isoformat()
                    st.incidents[alert.incident_id] = {"severity": alert.severity, "since": since}
                if not st.incidents and st.clear_since is None:
                    st.clear_since = now
                elif st.incidents:
                    st.clear_since = None
                if (st.incidents, st.clear_since) != before:
                    await self._save(key)
        return await self.evaluate()

    def desired(self, key: str, now: dt.datetime) -> tuple[ComponentStatus, str] | None:
        """The status this component should show now, or None to keep the current one."""
        st = self.state[key]
        horizon = now - dt.timedelta(seconds=self.sp.affect_after_s)
        worst: ComponentStatus | None = None
        for inc_id, info in st.incidents.items():
            status = self.sp.severity_status.get(info["severity"])  # type: ignore[call-overload]
            if status is None or _ts(info["since"]) > horizon:
                continue
            if worst is None or RANK[status] > RANK[worst]:
                worst = status
                reason = f"incident {inc_id} ({info['severity']}) for more than {self.sp.affect_after_s:g} s"
        current = st.status
        if worst is not None:
            if RANK[worst] > RANK[current]:
                return worst, reason
            held = st.changed_at is None or (now - st.changed_at).total_seconds() >= self.sp.min_hold_s
            if RANK[worst] < RANK[current] and held:
                return worst, reason + " (lowered after the hold time)"
            return None
        if st.incidents or current == OPERATIONAL:
            return None  # young incidents only: wait; or nothing to do
        clear = st.clear_since or st.changed_at or now
        if (now - clear).total_seconds() >= self.sp.recover_after_s:
            return OPERATIONAL, f"no incident for {self.sp.recover_after_s:g} s"
        return None

    def pending_changes(self, now: dt.datetime) -> list[Change]:
        changes = []
        for key in self.components:
            want = self.desired(key, now)
            if want is None:
                continue
            new, reason = want
            st = self.state[key]
            if new == OPERATIONAL:
                action, ref = ("resolve", st.page_ref) if st.page_ref else ("component", None)
            elif st.status == OPERATIONAL and self.sp.open_incidents:
                ref = f"{key}-{int(now.timestamp())}"
                action = "open"
            else:
                action, ref = "component", st.page_ref
            changes.append(Change(key, st.status, new, action, ref, reason))
        return changes

    async def evaluate(self) -> list[Change]:
        """Apply due changes: persist the new state, enqueue one outbox row per provider."""
        async with self._lock:
            now = self.clock.now()
            changes = self.pending_changes(now)
            for ch in changes:
                st = self.state[ch.component]
                rows = [self._row(ch, name, now) for name, ad in self.adapters.items() if ad.component_id(ch.component)]
                await self.enqueue([r for r in rows if r is not None])
                st.status, st.changed_at = ch.new, now
                if ch.action == "open":
                    st.page_ref = ch.ref
                elif ch.new == OPERATIONAL:
                    st.page_ref = None
                await self._save(ch.component)
            return changes

    def _action(self, ch: Change, now: dt.datetime) -> dict[str, Any]:
        comp = self.components[ch.component]
        action: dict[str, Any] = {"action": ch.action, "component": ch.component, "status": ch.new, "ref": ch.ref}
        if ch.action == "open":
            tiers = sorted({_TIER_WORDS.get(t.value, t.value) for t in comp.tiers})
            what = _FRIENDLY.get(ch.component, comp.name)
            action.update(
                title=f"{comp.name}: degraded service",
                message=(
                    f"We are seeing unusual traffic affecting {what}"
                    + (f" ({', '.join(tiers)})" if tiers else "")
                    + ". Our network protection is active and engineers are working on it. "
                    "Some calls may fail to connect or have reduced audio quality."
                ),
                started=now.isoformat(),
            )
        elif ch.action == "resolve":
            action["message"] = f"{comp.name} is operating normally again. Thank you for your patience."
        return action

    def _row(self, ch: Change, provider: str, now: dt.datetime) -> dict[str, Any]:
        action = self._action(ch, now)
        seq = f"{ch.component}:{ch.action}:{ch.new}:{int(now.timestamp() * 1000)}"
        event_id = hashlib.sha256(seq.encode()).hexdigest()[:32]
        return {
            "key": f"{event_id}:{channel_name(provider)}",
            "source_event_id": event_id,
            "incident_id": next(iter(self.state[ch.component].incidents), None),
            "channel": channel_name(provider),
            "provider": self.adapters[provider].provider,
            "route": "status_pages",
            "kind": f"status.{ch.action}",
            "severity": "info",
            "tier": None,
            "payload": orjson.dumps(action).decode(),
        }

    async def _save(self, key: str) -> None:
        st = self.state[key]
        await self.store.run(
            self.store.save_component,
            key,
            status=st.status,
            changed_at=st.changed_at,
            incidents=st.incidents,
            clear_since=st.clear_since,
            page_ref=st.page_ref,
        )

    def view(self) -> list[dict[str, Any]]:
        """``GET /status-components``: every component, its state and its vendor ids."""
        out = []
        for key, comp in self.components.items():
            st = self.state[key]
            out.append(
                {
                    "key": key,
                    "name": comp.name,
                    "tiers": [t.value for t in comp.tiers],
                    "region": comp.region,
                    "status": st.status,
                    "changed_at": st.changed_at,
                    "incidents": [{"id": i, **info} for i, info in st.incidents.items()],
                    "page_incident_ref": st.page_ref,
                    "providers": {n: ad.component_id(key) for n, ad in self.adapters.items()},
                }
            )
        return out

    def preview(self) -> list[dict[str, Any]]:
        """Dry run: the changes due now and the exact requests (credentials masked) per provider."""
        now = self.clock.now()
        out = []
        for ch in self.pending_changes(now):
            action = self._action(ch, now)
            requests = {}
            for name, ad in self.adapters.items():
                ext = self.store.get_ref(channel_name(name), ch.ref) if ch.ref else None
                requests[name] = [c.redacted() for c in plan(ad, action, ext)]
            out.append(
                {
                    "component": ch.component,
                    "from": ch.old,
                    "to": ch.new,
                    "action": ch.action,
                    "reason": ch.reason,
                    "requests": requests,
                }
            )
        return out
