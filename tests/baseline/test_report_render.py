"""Post-incident review rendering: every section, from a realistic incident."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from voxguard.baseline.report import ReviewInput, render_html, render_markdown, render_svg, whitelisted_seen
from voxguard.shared.config import Tier
from voxguard.shared.messages import IncidentView, SourceCount
from voxguard.shared.runbooks import REGULATORY_CHECKLIST, load_runbooks, runbook_for

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def review(tags: list[str]) -> ReviewInput:
    inc = IncidentView(
        id="inc-1",
        tier=Tier.SBC,
        target_id="sbc-1",
        target="sbc-us-1 udp/5060",
        tags=tags,
        vectors=["tdos"],
        state="resolved",
        severity="critical",
        opened_at=T0,
        resolved_at=T0 + timedelta(minutes=4, seconds=5),
        peak_ratio=12.5,
        peak_value=25_000,
        baseline_value=2_000,
        metric="flows_per_s",
        top_sources=[SourceCount(source="198.18.0.9", packets=900, bytes=90_000)],
        top_prefixes=[SourceCount(source="198.18.0.0/24", packets=5000, bytes=500_000)],
    )
    series: list[tuple[datetime, float, float | None]] = [
        (T0 + timedelta(seconds=10 * i), 2000.0 + (20000 if 6 < i < 30 else 0), 2000.0) for i in range(40)
    ]
    mits = [
        {
            "ts": T0 + timedelta(seconds=7),
            "event": "announced",
            "mitigation": {
                "command": "announce flow route { match { source 198.18.0.0/24; } then { rate-limit 1000000; } }"
            },
        },
        {
            "ts": T0 + timedelta(seconds=7),
            "event": "rejected",
            "mitigation": {"match": {}, "reason": "dropped: covered by whitelist static 192.0.2.192/27 (SIP trunk)"},
        },
        {"ts": T0 + timedelta(minutes=5), "event": "withdrawn", "mitigation": {"command": "withdraw flow route {...}"}},
    ]
    notes = [
        {"ts": T0 + timedelta(seconds=8), "channel": "pager", "status": "sent", "attempt": 1, "response_code": 202}
    ]
    timeline = [
        {"at": T0, "event": "opened", "detail": "tdos 5.1x"},
        {"at": T0 + timedelta(minutes=4), "event": "resolved"},
    ]
    rb = runbook_for(load_runbooks({}), "sbc", ["tdos"])
    return ReviewInput(inc, timeline, series, mits, notes, rb, {"flows": "/v1/targets/sbc-1/flows"})


def test_markdown_has_every_section() -> None:
    md = render_markdown(review([]))
    for heading in (
        "## Timeline",
        "## Top sources",
        "## Top networks",
        "## FlowSpec rules",
        "## Whitelisted sources seen during the attack",
        "## Notifications",
        "## NOC checklist",
        "## Post-incident steps",
        "## Evidence",
    ):
        assert heading in md
    assert "12.5x baseline" in md and "(4m 5s)" in md and "198.18.0.0/24" in md
    assert "rate-limit 1000000" in md and "| pager | sent | 1 | 202 |" in md
    assert "Telephony denial of service" in md
    assert not set(REGULATORY_CHECKLIST) & set(md.splitlines())
    assert whitelisted_seen(review([])) == ["dropped: covered by whitelist static 192.0.2.192/27 (SIP trunk)"]


def test_emergency_trunk_review_carries_the_regulatory_checklist() -> None:
    md = render_markdown(review(["emergency-services"]))
    assert all(f"- [ ] {step}" in md for step in REGULATORY_CHECKLIST)


def test_html_is_standalone_with_a_chart() -> None:
    page = render_html(review([]))
    assert page.startswith("<!doctype html>") and "<svg" in page and "<table>" in page
    assert "http" not in page.split("<body>")[0]  # nothing fetched from elsewhere
    svg = render_svg(review([]).series)
    root = ET.fromstring(svg)
    polylines = [e for e in root.iter() if e.tag.endswith("polyline")]
    assert len(polylines) == 2 and len(polylines[1].attrib["points"].split()) == 40
    assert "not enough data" in render_svg([])
