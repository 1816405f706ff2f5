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
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson
from fastapi import FastAPI
from nats.js.api import DeliverPolicy
from sqlalchemy import Engine

from voxguard.mitigate import rails
from voxguard.mitigate.attack_evidence import AttackEvidence
from voxguard.mitigate.exabgp import BridgeServer, ExaBGPProcess, external_speaker, socket_path
from voxguard.mitigate.flowspec import Action, Proto, RuleError, parse_ports, parse_prefix
from voxguard.mitigate.learned_sources import endpoint_learner, rtp_peer_learner, share_budget
from voxguard.mitigate.metrics import MITIGATION_EVENTS, RULES
from voxguard.mitigate.policy import (
    TOP_NETWORK_BOOKS,
    Candidate,
    enforce,
    plan_incident,
    runbook,
    runbooks_of,
    top_networks,
)
from voxguard.mitigate.reconcile import Reconciler
from voxguard.mitigate.settings import BgpSettings, parse_bgp
from voxguard.mitigate.store import ACTIVE, RuleRow, Store
from voxguard.mitigate.whitelist import IPNetwork, Whitelist, WhitelistEntry
from voxguard.shared.batches import TrafficColumns, decode_batch
from voxguard.shared.bus import STREAM_EVENTS, STREAM_TRAFFIC, Bus, Delivery, Subscription
from voxguard.shared.config import MitigationSettings, Tier, VoxGuardConfig
from voxguard.shared.messages import IncidentEvent, IncidentView, MitigationEvent, SourceCount, TrafficTick, subject_for
from voxguard.shared.partition import TRAFFIC_PREFIX

log = logging.getLogger("voxguard.mitigate")

DURABLE = "mitigate-incidents"
SYSTEM = "system"
# Traffic the service follows: the media tier (RTP peers) and the SBC tier (registered endpoints,
# attack evidence). Component ticks travel on voxguard.traffic.v1.<tier>, per-host ticks on
# voxguard.traffic.v1.<tier>.<partition> when ingest is sharded (shared/partition.py): one
# consumer per form keeps the filtering in the server (nats-server 2.9 has no multi-filter consumers).
FOLLOWED_TIERS = (Tier.MEDIA, Tier.SBC)


def traffic_consumers() -> list[tuple[str, str]]:
    """(durable name, subject filter) of the traffic consumers, both subject forms of every tier."""
    out = []
    for tier in FOLLOWED_TIERS:
        # the media component consumer keeps the durable name it always had
        name = DURABLE + "-rtp-peers" if tier == Tier.MEDIA else f"mitigate-traffic-{tier.value}"
        out.append((name, f"{TRAFFIC_PREFIX}.{tier.value}"))
        out.append((f"mitigate-traffic-{tier.value}-parts", f"{TRAFFIC_PREFIX}.{tier.value}.*"))
    return out


def decode_traffic(data: bytes) -> TrafficTick | TrafficColumns:
    """A traffic message: a batch of per-host ticks (it has ``columns``) or one TrafficTick;
    ValueError (the bus terminates and counts the message) when it is neither."""
    doc = orjson.loads(data)
    if isinstance(doc, dict) and "columns" in doc:
        return decode_batch(doc)
    return TrafficTick.model_validate(doc)


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
        self._traffic_subs: list[Subscription[TrafficTick]] = []
        # learned networks get half of the accept guards an any-source rule may need, shared by
        # the two learners; configured whitelists keep the other half (README: "Any-source rules")
        self.learned_budget = self.bgp.max_accept_rules // 2
        self.rtp_peers = rtp_peer_learner(self.learned_budget)
        self.endpoints = endpoint_learner(self.learned_budget)
        # without the traffic consumers there is no evidence: top networks are planned as named
        self.evidence = AttackEvidence(
            min_ticks=self.bgp.evidence_min_ticks if consume else 0, min_share=self.bgp.evidence_min_share
        )
        # target id -> the incident (with its pool of top networks) and the networks it holds back
        self._pending: dict[str, tuple[IncidentView, list[IPNetwork]]] = {}
        self._pools: dict[str, list[SourceCount]] = {}  # incident id -> every event's top networks
        self._plan_lock = asyncio.Lock()
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
            for name, subject in traffic_consumers():
                policy = DeliverPolicy.ALL if name == DURABLE + "-rtp-peers" else DeliverPolicy.NEW
                self._traffic_subs.append(
                    await self.bus.subscribe_durable(
                        STREAM_TRAFFIC,
                        name,
                        subject,
                        TrafficTick,
                        self._on_traffic_message,
                        deliver_policy=policy,
                        decoder=cast("Callable[[bytes], TrafficTick]", decode_traffic),
                    )
                )
        self.started = True

    async def stop(self) -> None:
        """Each step bounded: a stuck consumer must never keep ExaBGP (and its routes) alive."""
        if self._sub is not None:
            await self._bounded(self._sub.stop(), "incident consumer")
        for tsub in self._traffic_subs:
            await self._bounded(tsub.stop(), f"traffic consumer {tsub.durable}")
        self._traffic_subs = []
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
        return Whitelist(self.static_whitelist() + runtime + self.learned())

    def learned(self) -> list[WhitelistEntry]:
        """Learned RTP peers and registered endpoints, within their shared budget."""
        return share_budget([self.rtp_peers.entries(), self.endpoints.entries()], self.learned_budget)

    async def on_traffic_tick(self, tick: TrafficTick, delivery: Delivery | None = None) -> None:
        """Learn the sources of calm targets (learned_sources.py); on attacked ones, count which
        networks persist (attack_evidence.py) and plan the top networks that now have evidence."""
        self.rtp_peers.on_tick(tick)
        self.endpoints.on_tick(tick)
        if not self.evidence.on_tick(tick):
            return
        inc, held = self._pending.get(tick.target_id) or (None, [])
        if inc is not None and any(self.evidence.confirmed(tick.target_id, n) for n in held):
            await self._plan(inc, "evidence")

    on_media_tick = on_traffic_tick  # the name the media consumer had

    async def _on_traffic_message(self, msg: TrafficTick | TrafficColumns, delivery: Delivery | None = None) -> None:
        """A component tick, or a batch of per-host ticks (one tick per record)."""
        if isinstance(msg, TrafficColumns):
            for i in range(msg.n):
                await self.on_traffic_tick(msg.tick(i))
        else:
            await self.on_traffic_tick(msg)

    # -- incidents ------------------------------------------------------------------------

    async def on_incident(self, ev: IncidentEvent, delivery: Delivery | None = None) -> None:
        """Plan, enforce, store, announce. Idempotent: a redelivered event adds nothing."""
        inc = ev.incident
        self.rtp_peers.on_incident(ev)
        self.endpoints.on_incident(ev)
        if ev.event == "resolved" or inc.state == "resolved":
            async with self._plan_lock:  # no evidence plan for it after this point
                self.evidence.untrack(inc.target_id)
                self._pending.pop(inc.target_id, None)
                self._pools.pop(inc.id, None)
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
        await self._plan(inc, ev.event)

    def _gated(self, inc: IncidentView) -> bool:
        """Whether the incident's top networks wait for evidence from the target's own ticks: only
        when its ticks reach this service (otherwise the incident's own top networks are all there is)."""
        return (
            self.evidence.enabled
            and inc.tier in FOLLOWED_TIERS
            and (self.evidence.tracking(inc.target_id) or self.evidence.seen(inc.target_id))
            and runbook(inc, runbooks_of(self.config)) in TOP_NETWORK_BOOKS
        )

    def _with_pool(self, inc: IncidentView) -> IncidentView:
        """The incident with the top networks of every event so far: a network named once by the
        incident and confirmed later by the traffic is still one of the incident's top networks."""
        pool = self._pools.setdefault(inc.id, [])
        known = {s.source for s in pool}
        pool += [s for s in top_networks(inc) if s.source not in known]
        return inc.model_copy(update={"top_prefixes": list(pool)})

    async def _plan(self, inc: IncidentView, why: str) -> None:
        """Plan, enforce, store, announce (one plan at a time: events and evidence both plan)."""
        async with self._plan_lock:
            await self._plan_locked(inc, why)

    async def _plan_locked(self, inc: IncidentView, why: str) -> None:
        pending, _ = self._pending.get(inc.target_id) or (None, [])
        if why == "evidence" and (pending is None or pending.id != inc.id):
            return  # resolved (or superseded) while this plan waited
        wl = await asyncio.to_thread(self.whitelist)
        if self._gated(inc):
            self.evidence.track(inc.target_id, inc.opened_at)
            inc = self._with_pool(inc)
            target = inc.target_id

            def confirmed(net: IPNetwork) -> bool:
                # wholly whitelisted networks go through, so the whitelist refuses them with its
                # reason; a partly whitelisted one needs evidence like any other (its rest is blocked)
                return self.evidence.confirmed(target, net) or wl.apply(net).dropped

            plan = plan_incident(inc, self.config, self.bgp, confirmed=confirmed)
            self._pending[target] = (inc, plan.held)
            if plan.held:
                log.info(
                    "incident %s (%s): top networks without evidence yet: %s", inc.id, why,
                    ", ".join(self.evidence.describe(target, n) for n in plan.held),
                )  # fmt: skip
        else:
            plan = plan_incident(inc, self.config, self.bgp)
        if plan.skipped:
            log.info("incident %s: no mitigation (%s)", inc.id, plan.skipped)
            return
        policy = self.config.tiers[inc.tier].mitigation
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
                self.store.audit, SYSTEM, "incident_planned", None, f"incident {inc.id} ({why}): {len(rows)} rules"
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
