"""The outbox on SQLite and on the real PostgreSQL: idempotent enqueue, attempts, requeue, state."""

from __future__ import annotations

import datetime as dt

from voxguard.notify.store import MIGRATIONS, Store
from voxguard.shared.db import current_revision, make_engine, upgrade_to_head

NOW = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)


def _row(key: str, channel: str = "noc") -> dict[str, object]:
    return {
        "key": key,
        "source_event_id": key.split(":")[0],
        "incident_id": "inc-1",
        "channel": channel,
        "provider": "slack",
        "route": "r",
        "kind": "incident.opened",
        "severity": "critical",
        "tier": "sbc",
        "payload": "{}",
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": NOW,
        "created_at": NOW,
        "updated_at": NOW,
    }


def test_outbox_roundtrip(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade_to_head(engine, MIGRATIONS)
        upgrade_to_head(engine, MIGRATIONS)  # idempotent
        assert current_revision(engine, "notify") == "notify_0001"
        store = Store(engine)
        first = store.enqueue([_row("e1:noc"), _row("e1:pd", "pd")])
        assert len(first) == 2
        assert store.enqueue([_row("e1:noc"), _row("e2:noc")]) != []  # only e2 is new
        assert store.counts() == {"pending": 3}
        due = store.due(NOW, 10, {"pd"}, set())
        assert {r.key for r in due} == {"e1:noc", "e1:pd", "e2:noc"}
        store.record(
            first[0], attempt=1, status="dead_letter", attempt_status="dead_letter", code=500, latency_ms=1.5,
            detail="HTTP 500", now=NOW, next_at=None,
        )  # fmt: skip
        assert store.list(status="dead_letter")[0].last_code == 500
        assert store.requeue(first[0], NOW) and not store.requeue(first[0], NOW)
        assert [a.response_code for a in store.attempts(first[0])] == [500]
        store.save_component(
            "sip_signaling", status="major_outage", changed_at=NOW, incidents={"i": {"severity": "critical"}}
        )
        store.set_ref("statuspage:sp", "ref1", "p31zjtct2jer")
        assert store.load_components()["sip_signaling"].status == "major_outage"
        assert store.get_ref("statuspage:sp", "ref1") == "p31zjtct2jer"
        assert store.list(incident_id="inc-1", limit=1)[0].id == max(r.id for r in store.list())
    finally:
        engine.dispose()
