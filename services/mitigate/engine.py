"""The mitigate service's core: incidents in, rules stored, events out, ExaBGP driven.

Everything that changes a rule goes through here (bus handler and API alike), so the whitelist,
the rails, the audit log and the events are applied the same way whoever asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine

from voxguard.mitigate import rails
from voxguard.mitigate.exabgp import BridgeServer, ExaBGPProcess, external_speaker, socket_path
from voxguard.mitigate.flowspec import Action, Proto, RuleError, parse_ports, parse_prefix
from voxguard.mitigate.metrics import MITIGATION_EVENTS, RULES
from voxguard.mitigate.policy import Candidate, enforce, plan_incident
from voxguard.mitigate.reconcile import Reconciler
from voxguard.mitigate.rtp_peers import RtpPeerLearner
from voxguard.mitigate.settings import BgpSettings, parse_bgp
from voxguard.mitigate.store import ACTIVE, RuleRow, Store
from voxguard.mitigate.whitelist import Whitelist, WhitelistEntry
from voxguard.shared.bus import STREAM_EVENTS, STREAM_TRAFFIC, Bus, Delivery, Subscription
from voxguard.shared.config import MitigationSettings, Tier, VoxGuardConfig
from voxguard.shared.messages import IncidentEvent, MitigationEvent, TrafficTick, subject_for

log = logging.getLogger("voxguard.mitigate")

DURABLE = "mitigate-incidents"
SYSTEM = "system"


class Refused(Exception):
    """A request the rails or the whitelist refuse; ``code`` is the API error code."""

    def __init__(self, status: int, code: str, message: str, mitigation_id: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.mitigation_id = mitigation_id


@dataclass
class ManualRule:
    """An operator's rule, as validated by the API layer."""

    destination: str
    sources: list[str]
    protocol: Proto
    destination_ports: str | None
    action: Action
    rate_bps: int | None
    tier: Tier | None
    ttl_seconds: int | None
    why: str | None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class MitigateService:
    """Inert until ``start``; ``stop`` ends the consumer, the reconciler and ExaBGP."""

    def __init__(
        self,
        config: VoxGuardConfig,
        bus: Bus,
        engine: Engine,
        var_dir: Path,
        *,
        bgp: BgpSettings | None = None,
        consume: bool = True,
        owns_engine: bool = False,
    ) -> None:
        self.config = config
        self.bus = bus
        self.bgp = bgp or parse_bgp(config.bgp)
        self.store = Store(engine)
        self.var_dir = var_dir
        self.consume = consume
        self.owns_engine = owns_engine  # built by build(): dispose it at stop
        self.dry_run = self.bgp.is_dry_run
        self.bridge = BridgeServer(socket_path(var_dir), self._on_hello, self._on_event)
        self.exabgp = ExaBGPProcess(self.bgp, var_dir / "mitigate", self.bridge.path)
        self.external_exabgp = external_speaker()
        self.reconciler = Reconciler(self.store, self.bridge, self.publish, ack_timeout=self.bgp.ack_timeout_seconds)
        self.reconciler.on_pass = self._refresh_gauges
        self._sub: Subscription[IncidentEvent] | None = None
        self._media_sub: Subscription[TrafficTick] | None = None
        # learned peers get half of the accept guards an any-source rule may need; configured
        # whitelists keep the other half (README: "Any-source rules")
        self.rtp_peers = RtpPeerLearner(max_total=self.bgp.max_accept_rules // 2)
        self._loop_task: asyncio.Task[None] | None = None
        self.started = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.store.migrate)
        if not self.dry_run:
            await self.bridge.start()
            if self.external_exabgp:
                log.info("ExaBGP runs beside this service: waiting for its bridge on %s", self.bridge.path)
            else:
                await self.exabgp.start()
        else:
            log.warning("mitigate in dry-run mode (no BGP peer configured, or bgp.dry_run): rules are not announced")
        self._loop_task = asyncio.create_task(
            self.reconciler.run_forever(self.bgp.reconcile_interval_seconds), name="mitigate-reconcile"
        )
        if self.consume:
            self._sub = await self.bus.subscribe_durable(
                STREAM_EVENTS, DURABLE, subject_for("incident", "*").replace("*", ">"), IncidentEvent, self.on_incident
            )
            self._media_sub = await self.bus.subscribe_durable(
                STREAM_TRAFFIC, DURABLE + "-rtp-peers", subject_for("traffic", "media"), TrafficTick, self.on_media_tick
            )
        self.started = True

    async def stop(self) -> None:
        """Each step bounded: a stuck consumer must never keep ExaBGP (and its routes) alive."""
        if self._sub is not None:
            await self._bounded(self._sub.stop(), "incident consumer")
        if self._media_sub is not None:
            await self._bounded(self._media_sub.stop(), "media traffic consumer")
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._loop_task, 10)
        if not self.dry_run and not self.external_exabgp:
            await self._bounded(self.exabgp.stop(), "ExaBGP")
        if not self.dry_run:
            await self._bounded(self.bridge.stop(), "bridge socket")
        if self.owns_engine:
            self.store.engine.dispose()
        self.started = False

    @staticmethod
    async def _bounded(step: Awaitable[None], what: str, timeout: float = 15.0) -> None:
        try:
            await asyncio.wait_for(step, timeout)
        except TimeoutError:
            log.error("stopping the %s took more than %.0fs; moving on", what, timeout)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def ready(self) -> bool:
        """Ready when the bus answers and, unless dry-run, the ExaBGP bridge is connected."""
        return await self.bus.ready() and (self.dry_run or self.bridge.connected)

    async def _refresh_gauges(self, _res: object) -> None:
        counts = await asyncio.to_thread(self.store.count_by_state)
        for state in ("proposed", "pending_approval", "announced", "withdrawn", "failed", "rejected"):
            RULES.labels(state).set(counts.get(state, 0))

    def _on_hello(self) -> None:
        self.reconciler.reset()

    def _on_event(self, text: str) -> None:
        log.info("ExaBGP: %s", text)
        if " up" in text or "connected" in text:
            self.reconciler.reset()

    def status(self) -> dict[str, Any]:
        last = self.reconciler.last
        return {
            "dry_run": self.dry_run,
            "peers": [f"{p.address}:{p.port} AS{p.asn}" for p in self.bgp.peers],
            "bridge_connected": self.bridge.connected,
            "exabgp_external": self.external_exabgp,
            "exabgp_pid": self.exabgp.proc.pid if self.exabgp.proc else None,
            "exabgp_restarts": self.exabgp.restarts,
            "announced_routes": len(self.reconciler.announced),
            "reconcile_passes": self.reconciler.passes,
            "last_pass": last.__dict__ if last else None,
        }

    # -- events ---------------------------------------------------------------------------

    async def publish(self, rows: Sequence[RuleRow], event: str) -> None:
        """One MitigationEvent per row; a bus outage is logged, never fatal (the DB is the truth)."""
        for row in rows:
            view = row.view()
            name = event if event != "auto" else row.state
            msg = MitigationEvent(event=name, tier=view.tier, mitigation=view)  # type: ignore[arg-type]
            MITIGATION_EVENTS.labels(name).inc()
            try:
                await self.bus.publish(msg.subject(), msg)
            except Exception as exc:
                log.warning("cannot publish mitigation event %s for %s: %r", name, row.id, exc)

    # -- whitelist ------------------------------------------------------------------------

    def static_whitelist(self) -> list[WhitelistEntry]:
        """Config entries: the top-level ``whitelist`` and ``bgp.whitelists`` by kind."""
        out = [WhitelistEntry(e.prefix, "static", e.reason, None) for e in self.config.whitelist]
        for kind, nets in self.bgp.whitelists.items():
            out += [WhitelistEntry(n, kind, f"bgp.whitelists.{kind}", None) for n in nets]
        return out

    def whitelist(self) -> Whitelist:
        """Config entries plus the runtime ones (API-pushed, learned), expired ones excluded."""
        runtime = [r.entry() for r in self.store.list_whitelist()]
        return Whitelist(self.static_whitelist() + runtime + self.rtp_peers.entries())

    async def on_media_tick(self, tick: TrafficTick, delivery: Delivery | None = None) -> None:
        """Learn the peers of calls in progress (see rtp_peers.py)."""
        self.rtp_peers.on_tick(tick)

    # -- incidents ------------------------------------------------------------------------

    async def on_incident(self, ev: IncidentEvent, delivery: Delivery | None = None) -> None:
        """Plan, enforce, store, announce. Idempotent: a redelivered event adds nothing."""
        inc = ev.incident
        self.rtp_peers.on_incident(ev)
        if ev.event == "resolved" or inc.state == "resolved":
            at = _now() + dt.timedelta(seconds=self.bgp.hold_down_seconds)
            n = await asyncio.to_thread(self.store.schedule_incident_withdrawal, inc.id, at)
            if n:
                await asyncio.to_thread(
                    self.store.audit,
                    SYSTEM,
                    "incident_resolved",
                    None,
                    f"incident {inc.id}: {n} rules withdraw at {at}",
                )
            self.reconciler.wake()
            return
        if ev.event == "mitigated":
            return
        await asyncio.to_thread(self.store.cancel_incident_withdrawal, inc.id)
        plan = plan_incident(inc, self.config, self.bgp)
        if plan.skipped:
            log.info("incident %s: no mitigation (%s)", inc.id, plan.skipped)
            return
        policy = self.config.tiers[inc.tier].mitigation
        wl = await asyncio.to_thread(self.whitelist)
        cands = enforce(plan.candidates, wl, policy, self.bgp)
        rows = await asyncio.to_thread(
            self.store.add_candidates,
            cands,
            incident_id=inc.id,
            tier=inc.tier.value,
            target_id=inc.target_id,
            expires_at=rails.expires_at(policy, _now()),
            dry_run=self.dry_run,
            created_by=SYSTEM,
            max_total=self.bgp.max_total_rules,
            max_per_incident=policy.max_rules_per_incident,
        )
        if rows:
            await asyncio.to_thread(
                self.store.audit, SYSTEM, "incident_planned", None, f"incident {inc.id} ({ev.event}): {len(rows)} rules"
            )
            await self.publish(rows, "auto")
            self.reconciler.wake()

    # -- operator actions -----------------------------------------------------------------

    def _policy(self, tier: Tier | None) -> MitigationSettings:
        if tier is None:
            return MitigationSettings()
        tc = self.config.tiers.get(tier)
        if tc is None:
            raise Refused(422, "unknown_tier", f"tier {tier.value} is not configured")
        if tc.internal or tc.mitigation.mode != "flowspec":
            raise Refused(422, "alert_only_tier", f"tier {tier.value} is alert-only: no FlowSpec rules")
        return tc.mitigation

    async def create_manual(self, rule: ManualRule, who: str) -> RuleRow:
        """A rule by hand: the same whitelist and rails as the runbooks, refused rather than split."""
        try:
            dest = parse_prefix(rule.destination, "destination")
            srcs = [parse_prefix(s, f"sources[{i}]") for i, s in enumerate(rule.sources)]
            ports = parse_ports(rule.destination_ports)
            cand = Candidate(rule.action, dest, srcs, rule.protocol, ports, rule.rate_bps)
            cand.routes()
        except RuleError as exc:
            raise Refused(422, "invalid_rule", str(exc)) from None
        policy = self._policy(rule.tier)
        wl = await asyncio.to_thread(self.whitelist)
        # rails first (a /0 is a rail violation before it is a whitelist overlap), then the whitelist
        problems = [p for p in [rails.destination_violation(dest)] if p]
        problems += [p for s in srcs if (p := rails.source_violation(s, policy))]
        code = "rail"
        if not problems:
            for s in srcs:
                hits = wl.overlapping(s)
                if hits:
                    code = "whitelisted"
                    problems.append(f"source {s} covers {'; '.join(h.label() for h in hits)}")
        if not problems:
            enforced = enforce([cand], wl, policy, self.bgp)
            problems = [c.reason or "rejected" for c in enforced if c.state == "rejected"]
        else:
            enforced = [cand.reject("; ".join(problems))]
        if problems:
            enforced = [c if c.state == "rejected" else c.reject("; ".join(problems)) for c in enforced]
        rows = await asyncio.to_thread(
            self.store.add_candidates,
            enforced,
            incident_id=None,
            tier=rule.tier.value if rule.tier else None,
            target_id=None,
            expires_at=rails.expires_at(policy, _now(), rule.ttl_seconds),
            dry_run=self.dry_run,
            created_by=who,
            max_total=self.bgp.max_total_rules,
            salt=_now().isoformat(),
        )
        main = next((r for r in rows if r.action == rule.action), rows[-1])
        await asyncio.to_thread(
            self.store.audit, who, "create", main.id, f"{rule.why or 'manual rule'}: {main.state} {main.reason or ''}"
        )
        await self.publish(rows, "auto")
        if main.state == "rejected":
            status = 409 if main.reason and "max_total_rules" in main.reason else 422
            raise Refused(status, code, main.reason or "rejected", main.id)
        self.reconciler.wake()
        return main

    async def approve(self, rule_id: str, who: str, why: str | None) -> RuleRow:
        """pending_approval -> proposed (the reconciler then announces it); group members too."""
        row = await asyncio.to_thread(self.store.get, rule_id)
        if row is None:
            raise Refused(404, "not_found", f"no mitigation {rule_id}")
        if row.state != "pending_approval":
            raise Refused(409, "wrong_state", f"mitigation {rule_id} is {row.state}, not pending_approval")
        ids = await self._group_ids(row)
        changed = []
        for rid in ids:
            t = await asyncio.to_thread(self.store.transition, rid, "proposed", from_states=("pending_approval",))
            if t is not None:
                changed.append(t)
        await asyncio.to_thread(self.store.audit, who, "approve", rule_id, why)
        await self.publish(changed, "proposed")
        self.reconciler.wake()
        return next(r for r in changed if r.id == rule_id)

    async def withdraw(self, rule_id: str, who: str, why: str | None) -> RuleRow:
        """Withdraw now (no hold-down: a human decided); an any-source rule goes with its guards."""
        row = await asyncio.to_thread(self.store.get, rule_id)
        if row is None:
            raise Refused(404, "not_found", f"no mitigation {rule_id}")
        if row.state not in ACTIVE:
            raise Refused(409, "wrong_state", f"mitigation {rule_id} is already {row.state}")
        changed = []
        for rid in await self._group_ids(row):
            t = await asyncio.to_thread(
                self.store.transition, rid, "withdrawn", from_states=ACTIVE, reason=f"withdrawn by {who}: {why or ''}"
            )
            if t is not None:
                changed.append(t)
        await asyncio.to_thread(self.store.audit, who, "withdraw", rule_id, why)
        await self.publish(changed, "withdrawn")
        self.reconciler.wake()
        return next(r for r in changed if r.id == rule_id)

    async def _group_ids(self, row: RuleRow) -> list[str]:
        if not row.group_id:
            return [row.id]
        rows = await asyncio.to_thread(self.store.group, row.group_id)
        return [r.id for r in rows if r.state in ACTIVE] or [row.id]

    async def add_whitelist(
        self, prefix: str, kind: str, reason: str, who: str, ttl_seconds: int | None = None
    ) -> dict[str, Any]:
        """Whitelist a prefix; active rules that now match it are withdrawn and re-planned around it."""
        try:
            net = parse_prefix(prefix, "prefix")
        except RuleError as exc:
            raise Refused(422, "invalid_prefix", str(exc)) from None
        if net.prefixlen == 0:
            raise Refused(422, "rail", "a /0 whitelist entry would disable all mitigation; refused")
        expires = _now() + dt.timedelta(seconds=ttl_seconds) if ttl_seconds else None
        row = await asyncio.to_thread(self.store.add_whitelist, str(net), kind, reason, who, expires)
        await asyncio.to_thread(self.store.audit, who, "whitelist_add", None, f"{net} ({kind}): {reason}")
        await self._rework_for(net, who)
        return row.as_dict()

    async def _rework_for(self, net: ipaddress.IPv4Network | ipaddress.IPv6Network, who: str) -> None:
        """Rules that would match a newly whitelisted prefix must not stay announced."""
        wl = await asyncio.to_thread(self.whitelist)
        active = await asyncio.to_thread(self.store.active_rules)
        for row in active:
            if row.action == "accept" or ipaddress.ip_network(row.destination).version != net.version:
                continue
            srcs = [ipaddress.ip_network(s) for s in json.loads(row.sources)]
            if srcs and not any(s.overlaps(net) for s in srcs):
                continue
            await self.withdraw(row.id, who, f"now covers whitelisted {net}")
            policy = self.config.tiers[Tier(row.tier)].mitigation if row.tier else MitigationSettings()
            cand = Candidate(
                row.action,  # type: ignore[arg-type]
                ipaddress.ip_network(row.destination),
                srcs,
                row.protocol,  # type: ignore[arg-type]
                parse_ports(row.destination_ports),
                row.rate_bps,
                group=None if srcs else f"{row.group_id}:rework:{net}",
            )
            redo = [c for c in enforce([cand], wl, policy, self.bgp) if c.state != "rejected"]
            if redo:
                rows = await asyncio.to_thread(
                    self.store.add_candidates,
                    redo,
                    incident_id=row.incident_id,
                    tier=row.tier,
                    target_id=row.target_id,
                    expires_at=row.expires_at or rails.expires_at(policy, _now()),
                    dry_run=self.dry_run,
                    created_by=who,
                    max_total=self.bgp.max_total_rules,
                    salt=f"rework:{net}",
                )
                await self.publish(rows, "auto")
        self.reconciler.wake()

    async def delete_whitelist(self, entry_id: str, who: str) -> None:
        ok = await asyncio.to_thread(self.store.delete_whitelist, entry_id)
        if not ok:
            raise Refused(404, "not_found", f"no runtime whitelist entry {entry_id} (config entries are read-only)")
        await asyncio.to_thread(self.store.audit, who, "whitelist_delete", None, entry_id)
