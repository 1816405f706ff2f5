"""The mitigate service's tables: rules (the desired state), runtime whitelist, audit log.

The rules table is the source of truth the reconciler drives ExaBGP towards: a rule is *desired*
while it is ``proposed`` or ``announced``, not dry-run, not expired and not past its hold-down.
Synchronous (see ``shared/db.py``); the service calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import BigInteger, Boolean, Engine, Index, Integer, String, Text, func, or_, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from voxguard.mitigate.flowspec import FlowRoute, IPNetwork, parse_ports, ports_text
from voxguard.mitigate.policy import Candidate
from voxguard.mitigate.whitelist import WhitelistEntry
from voxguard.shared.config import Tier
from voxguard.shared.db import UtcDateTime, service_metadata, session_factory, upgrade_to_head
from voxguard.shared.messages import FlowMatch, MitigationView

MIGRATIONS = "voxguard.mitigate.migrations"
ACTIVE = ("proposed", "pending_approval", "announced")
DESIRED = ("proposed", "announced")


@dataclass(frozen=True)
class DesiredRule:
    """The columns the reconciler needs (plain tuples: 10x cheaper than ORM rows at 10k rules)."""

    id: str
    state: str
    group_id: str | None
    action: str
    rate_bps: int | None
    destination: str
    sources: str
    protocol: str
    destination_ports: str | None

    def routes(self) -> list[FlowRoute]:
        return _routes(
            self.destination, self.sources, self.protocol, self.destination_ports, self.action, self.rate_bps
        )


def _routes(
    destination: str, sources: str, protocol: str, ports_s: str | None, action: str, rate: int | None
) -> list[FlowRoute]:
    dest = ipaddress.ip_network(destination)
    ports = parse_ports(ports_s)
    srcs: list[IPNetwork | None] = [ipaddress.ip_network(s) for s in json.loads(sources)] or [None]
    return [FlowRoute(dest, s, protocol, ports, action, rate) for s in srcs]  # type: ignore[arg-type]


class MitigateBase(DeclarativeBase):
    metadata = service_metadata("mitigate")


class RuleRow(MitigateBase):
    __tablename__ = "mitigate_rules"
    __table_args__ = (
        Index("ix_mitigate_rules_state", "state"),
        Index("ix_mitigate_rules_incident_id", "incident_id"),
        Index("ix_mitigate_rules_fingerprint", "fingerprint"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    incident_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    tier: Mapped[str | None] = mapped_column(String(16), nullable=True)
    target_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    state: Mapped[str] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(16))
    rate_bps: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    destination: Mapped[str] = mapped_column(String(64))
    sources: Mapped[str] = mapped_column(Text)  # JSON list of prefixes
    protocol: Mapped[str] = mapped_column(String(8))
    destination_ports: Mapped[str | None] = mapped_column(String(16), nullable=True)
    command: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    group_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    withdraw_after: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    announced_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    withdrawn_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)

    def routes(self) -> list[FlowRoute]:
        """The flow routes this rule announces (one per source)."""
        return _routes(
            self.destination, self.sources, self.protocol, self.destination_ports, self.action, self.rate_bps
        )

    def view(self) -> MitigationView:
        """The API / event form (design.md section 4)."""
        return MitigationView(
            id=self.id,
            incident_id=self.incident_id,
            tier=Tier(self.tier) if self.tier else None,
            target_id=self.target_id,
            state=self.state,  # type: ignore[arg-type]
            action=self.action,  # type: ignore[arg-type]
            rate_bps=self.rate_bps,
            match=FlowMatch(
                destination=self.destination,
                sources=json.loads(self.sources),
                protocol=self.protocol,  # type: ignore[arg-type]
                destination_ports=self.destination_ports,
            ),
            expires_at=self.expires_at,
            reason=self.reason,
            command=self.command,
            created_at=self.created_at,
            announced_at=self.announced_at,
            withdrawn_at=self.withdrawn_at,
            created_by=self.created_by,
        )


class WhitelistRow(MitigateBase):
    __tablename__ = "mitigate_whitelist"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    prefix: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)

    def entry(self) -> WhitelistEntry:
        return WhitelistEntry(ipaddress.ip_network(self.prefix), self.kind, self.reason, self.id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prefix": self.prefix,
            "kind": self.kind,
            "reason": self.reason,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "source": "api",
        }


class AuditRow(MitigateBase):
    __tablename__ = "mitigate_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    who: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(40))
    mitigation_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "who": self.who,
            "action": self.action,
            "mitigation_id": self.mitigation_id,
            "why": self.detail,
        }


def fingerprint(incident_id: str | None, c: Candidate, salt: str = "") -> str:
    """Same incident + same rule = same fingerprint, so a redelivered event adds nothing."""
    text = "|".join(
        [
            incident_id or "",
            salt,
            c.action,
            str(c.destination),
            ",".join(str(s) for s in c.sources),
            c.protocol,
            ports_text(c.ports) or "",
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Store:
    """All reads and writes of the mitigate tables."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = session_factory(engine)

    def migrate(self) -> None:
        upgrade_to_head(self.engine, MIGRATIONS)

    # -- rules ---------------------------------------------------------------------------

    def add_candidates(
        self,
        candidates: Sequence[Candidate],
        *,
        incident_id: str | None,
        tier: str | None,
        target_id: str | None,
        expires_at: dt.datetime,
        dry_run: bool,
        created_by: str,
        max_total: int | None = None,
        max_per_incident: int | None = None,
        salt: str = "",
    ) -> list[RuleRow]:
        """Store new candidates (skipping ones already stored for the incident); returns the new rows.

        The total-rules rail is checked here, inside the writing transaction, so concurrent
        writers cannot together exceed it.
        """
        now = _now()
        rows: list[RuleRow] = []
        with self.sessions.begin() as s:
            fps = [fingerprint(incident_id, c, salt) for c in candidates]
            seen = set(s.scalars(select(RuleRow.fingerprint).where(RuleRow.fingerprint.in_(fps))).all())
            # flow routes, not rows: a rule with N sources is N routes in the router
            q_all = select(RuleRow.sources).where(RuleRow.state.in_(ACTIVE), RuleRow.dry_run.is_(False))
            active = sum(max(1, len(json.loads(x))) for x in s.scalars(q_all).all())
            mine = 0
            if incident_id is not None and max_per_incident is not None:
                q = select(RuleRow.sources).where(
                    RuleRow.incident_id == incident_id, RuleRow.state.in_(ACTIVE), RuleRow.action != "accept"
                )
                mine = sum(max(1, len(json.loads(x))) for x in s.scalars(q).all())
            for c, fp in zip(candidates, fps, strict=True):
                if fp in seen:
                    continue
                seen.add(fp)
                state, reason = c.state, c.reason
                n = len(c.sources) or 1
                if state != "rejected" and max_total is not None and not dry_run:
                    if active + n > max_total:
                        state = "rejected"
                        reason = f"rail max_total_rules: {active} active flow routes + {n} exceed {max_total}"
                    else:
                        active += n
                if state != "rejected" and c.action != "accept" and max_per_incident is not None and incident_id:
                    if mine + n > max_per_incident:
                        state = "rejected"
                        reason = (
                            f"rail max_rules_per_incident: {mine} active flow routes + {n} exceed {max_per_incident}"
                        )
                    else:
                        mine += n
                if state == "proposed" and dry_run:
                    reason = "dry-run: not announced" + (f"; {reason}" if reason else "")
                command = "\n".join(r.announce() for r in c.routes())
                row = RuleRow(
                    id=uuid.uuid4().hex,
                    incident_id=incident_id,
                    tier=tier,
                    target_id=target_id,
                    state=state,
                    action=c.action,
                    rate_bps=c.rate_bps,
                    destination=str(c.destination),
                    sources=json.dumps([str(x) for x in c.sources]),
                    protocol=c.protocol,
                    destination_ports=ports_text(c.ports),
                    command=command,
                    fingerprint=fp,
                    group_id=c.group,
                    dry_run=dry_run,
                    reason=reason,
                    created_by=created_by,
                    created_at=now,
                    expires_at=expires_at,
                    withdrawn_at=None,
                )
                s.add(row)
                rows.append(row)
        return rows

    def get(self, rule_id: str) -> RuleRow | None:
        with self.sessions() as s:
            return s.get(RuleRow, rule_id)

    def list_rules(
        self, *, state: str | None = None, incident_id: str | None = None, limit: int = 500, offset: int = 0
    ) -> list[RuleRow]:
        with self.sessions() as s:
            q = select(RuleRow)
            if state:
                q = q.where(RuleRow.state == state)
            if incident_id:
                q = q.where(RuleRow.incident_id == incident_id)
            q = q.order_by(RuleRow.created_at.desc(), RuleRow.id).limit(limit).offset(offset)
            return list(s.scalars(q).all())

    def desired(self, now: dt.datetime | None = None) -> list[DesiredRule]:
        """Rules that should be in the router right now."""
        now = now or _now()
        cols = [getattr(RuleRow, f.name) for f in fields(DesiredRule)]
        with self.sessions() as s:
            q = select(*cols).where(
                RuleRow.state.in_(DESIRED),
                RuleRow.dry_run.is_(False),
                or_(RuleRow.expires_at.is_(None), RuleRow.expires_at > now),
                or_(RuleRow.withdraw_after.is_(None), RuleRow.withdraw_after > now),
            )
            return [DesiredRule(*row) for row in s.execute(q).all()]

    def count_by_state(self) -> dict[str, int]:
        """Rules per state (the ``voxguard_mitigation_rules`` gauge)."""
        with self.sessions() as s:
            rows = s.execute(select(RuleRow.state, func.count()).group_by(RuleRow.state)).all()
            return {str(state): int(n) for state, n in rows}

    def active_rules(self) -> list[RuleRow]:
        with self.sessions() as s:
            return list(s.scalars(select(RuleRow).where(RuleRow.state.in_(ACTIVE))).all())

    def group(self, group_id: str) -> list[RuleRow]:
        """An any-source rule and its accept guards."""
        with self.sessions() as s:
            return list(s.scalars(select(RuleRow).where(RuleRow.group_id == group_id)).all())

    def active_count(self, incident_id: str | None = None) -> int:
        """Flow routes of active rules (optionally of one incident)."""
        with self.sessions() as s:
            q = select(RuleRow.sources).where(RuleRow.state.in_(ACTIVE), RuleRow.action != "accept")
            if incident_id is not None:
                q = q.where(RuleRow.incident_id == incident_id)
            return sum(max(1, len(json.loads(x))) for x in s.scalars(q).all())

    def due_for_withdrawal(self, now: dt.datetime | None = None) -> list[RuleRow]:
        """Active rules whose TTL ran out or whose hold-down ended: marked withdrawn, returned."""
        now = now or _now()
        with self.sessions.begin() as s:
            q = select(RuleRow).where(
                RuleRow.state.in_(ACTIVE),
                or_(RuleRow.expires_at <= now, RuleRow.withdraw_after <= now),
            )
            rows = list(s.scalars(q).all())
            for r in rows:
                why = (
                    "hold-down ended after incident resolved"
                    if r.withdraw_after and r.withdraw_after <= now
                    else "TTL expired"
                )
                r.state, r.withdrawn_at = "withdrawn", now
                r.reason = why if not r.reason else f"{r.reason}; {why}"
        return rows

    def transition(
        self, rule_id: str, to: str, *, from_states: Iterable[str] | None = None, reason: str | None = None
    ) -> RuleRow | None:
        """Move one rule to ``to`` when it is in ``from_states``; None when it was not."""
        now = _now()
        with self.sessions.begin() as s:
            row = s.get(RuleRow, rule_id, with_for_update=True)
            if row is None or (from_states is not None and row.state not in set(from_states)):
                return None
            row.state = to
            if to == "announced" and row.announced_at is None:
                row.announced_at = now
            if to == "withdrawn":
                row.withdrawn_at = now
            if reason:
                row.reason = reason
            return row

    def mark_announced(self, ids: Sequence[str]) -> list[RuleRow]:
        """``proposed`` -> ``announced`` once ExaBGP acknowledged every route; returns the changed rows."""
        if not ids:
            return []
        now = _now()
        with self.sessions.begin() as s:
            rows = list(s.scalars(select(RuleRow).where(RuleRow.id.in_(list(ids)), RuleRow.state == "proposed")))
            for r in rows:
                r.state, r.announced_at = "announced", r.announced_at or now
        return rows

    def schedule_incident_withdrawal(self, incident_id: str, at: dt.datetime) -> int:
        """Incident resolved: its rules go after the hold-down (not at once, so a relapse is covered)."""
        with self.sessions.begin() as s:
            res = s.execute(
                update(RuleRow)
                .where(RuleRow.incident_id == incident_id, RuleRow.state.in_(ACTIVE), RuleRow.withdraw_after.is_(None))
                .values(withdraw_after=at)
            )
            return int(getattr(res, "rowcount", 0) or 0)

    def cancel_incident_withdrawal(self, incident_id: str) -> None:
        """The incident came back during the hold-down: keep its rules."""
        with self.sessions.begin() as s:
            s.execute(
                update(RuleRow)
                .where(RuleRow.incident_id == incident_id, RuleRow.state.in_(ACTIVE))
                .values(withdraw_after=None)
            )

    # -- whitelist -----------------------------------------------------------------------

    def add_whitelist(
        self, prefix: str, kind: str, reason: str, who: str, expires_at: dt.datetime | None = None
    ) -> WhitelistRow:
        row = WhitelistRow(
            id=uuid.uuid4().hex,
            prefix=prefix,
            kind=kind,
            reason=reason,
            created_by=who,
            created_at=_now(),
            expires_at=expires_at,
        )
        with self.sessions.begin() as s:
            s.add(row)
        return row

    def list_whitelist(self, now: dt.datetime | None = None) -> list[WhitelistRow]:
        now = now or _now()
        with self.sessions() as s:
            q = select(WhitelistRow).where(or_(WhitelistRow.expires_at.is_(None), WhitelistRow.expires_at > now))
            return list(s.scalars(q.order_by(WhitelistRow.created_at)).all())

    def get_whitelist(self, entry_id: str) -> WhitelistRow | None:
        with self.sessions() as s:
            return s.get(WhitelistRow, entry_id)

    def delete_whitelist(self, entry_id: str) -> bool:
        with self.sessions.begin() as s:
            row = s.get(WhitelistRow, entry_id)
            if row is None:
                return False
            s.delete(row)
            return True

    # -- audit ---------------------------------------------------------------------------

    def audit(self, who: str, action: str, mitigation_id: str | None = None, detail: str | None = None) -> None:
        with self.sessions.begin() as s:
            s.add(AuditRow(at=_now(), who=who, action=action, mitigation_id=mitigation_id, detail=detail))

    def list_audit(self, limit: int = 500, mitigation_id: str | None = None) -> list[AuditRow]:
        with self.sessions() as s:
            q = select(AuditRow)
            if mitigation_id:
                q = q.where(AuditRow.mitigation_id == mitigation_id)
            return list(s.scalars(q.order_by(AuditRow.id.desc()).limit(limit)).all())
