"""The rules table on SQLite and PostgreSQL: idempotent inserts, rails in the transaction, TTL, hold-down."""

from __future__ import annotations

import datetime as dt
import ipaddress

from voxguard.mitigate.policy import Candidate
from voxguard.mitigate.store import Store
from voxguard.shared.db import current_revision, make_engine


def cand(src: str, state: str = "proposed") -> Candidate:
    return Candidate(
        "discard",
        ipaddress.ip_network("203.0.113.10/32"),
        [ipaddress.ip_network(src)],
        "udp",
        (5060, 5060),
        state=state,
    )


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def test_store_lifecycle(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        store = Store(engine)
        store.migrate()
        store.migrate()  # idempotent
        assert current_revision(engine, "mitigate") == "mitigate_0001"
        later = now() + dt.timedelta(hours=1)
        kw = {"incident_id": "inc1", "tier": "sbc", "target_id": "t", "expires_at": later, "created_by": "system"}
        rows = store.add_candidates([cand("198.19.1.0/24"), cand("198.19.2.0/24")], dry_run=False, **kw)  # type: ignore[arg-type]
        assert len(rows) == 2
        again = store.add_candidates([cand("198.19.1.0/24")], dry_run=False, **kw)  # type: ignore[arg-type]
        assert again == []  # redelivered event: nothing new
        capped = store.add_candidates(
            [cand("198.19.3.0/24"), cand("198.19.4.0/24")],
            dry_run=False,
            max_total=3,
            **kw,  # type: ignore[arg-type]
        )
        assert [r.state for r in capped] == ["proposed", "rejected"]
        assert "max_total_rules" in (capped[1].reason or "")
        assert store.active_count("inc1") == 3
        assert {r.id for r in store.desired()} == {rows[0].id, rows[1].id, capped[0].id}

        assert store.schedule_incident_withdrawal("inc1", now() - dt.timedelta(seconds=1)) == 3
        assert store.desired() == []
        gone = store.due_for_withdrawal()
        assert len(gone) == 3 and all(r.state == "withdrawn" and r.withdrawn_at for r in gone)
        assert "hold-down" in (gone[0].reason or "")

        short = store.add_candidates(
            [cand("198.19.5.0/24")],
            dry_run=False,
            **{**kw, "expires_at": now() - dt.timedelta(seconds=1)},  # type: ignore[arg-type]
        )
        assert store.desired() == []
        expired = store.due_for_withdrawal()
        assert [r.id for r in expired] == [short[0].id] and "TTL expired" in (expired[0].reason or "")

        view = rows[0].view()
        assert view.match.sources == ["198.19.1.0/24"] and view.match.destination_ports == "5060"
        assert view.command and view.command.startswith("announce flow route")

        store.audit("alice", "create", rows[0].id, "why not")
        assert store.list_audit()[0].as_dict()["who"] == "alice"
        w = store.add_whitelist("198.18.0.0/24", "sip_trunks", "carrier", "alice")
        assert [x.id for x in store.list_whitelist()] == [w.id]
        assert store.delete_whitelist(w.id) and not store.delete_whitelist(w.id)
    finally:
        engine.dispose()
