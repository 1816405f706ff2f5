"""Post-incident review: one document per incident, in Markdown and in HTML with a chart.

Pure rendering from what the baseline service holds about an incident: its view, its own
timeline, the traffic series (observed vs baseline), and the mitigation and notification
events it heard on the bus for that incident. The chart is an inline SVG (no plotting
library, no network), so the HTML file stands alone as evidence.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from voxguard.shared.messages import IncidentView
from voxguard.shared.runbooks import Runbook, checklist_for


@dataclass
class ReviewInput:
    """Everything a review shows."""

    incident: IncidentView
    timeline: list[dict[str, Any]] = field(default_factory=list)  # {"at", "event", "detail"}
    series: list[tuple[datetime, float, float | None]] = field(default_factory=list)  # (t, observed, baseline)
    mitigations: list[dict[str, Any]] = field(default_factory=list)  # MitigationEvent dicts
    notifications: list[dict[str, Any]] = field(default_factory=list)  # NotificationEvent dicts
    runbook: Runbook | None = None
    evidence: dict[str, str] = field(default_factory=dict)  # name -> URL


def _fmt(t: Any) -> str:
    if isinstance(t, datetime):
        return t.strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(t or "")


def _duration(inc: IncidentView) -> str:
    if not inc.resolved_at:
        return "ongoing"
    s = int((inc.resolved_at - inc.opened_at).total_seconds())
    return f"{s // 3600}h {s % 3600 // 60}m {s % 60}s" if s >= 3600 else f"{s // 60}m {s % 60}s"


def _rules(inp: ReviewInput) -> list[tuple[str, str, str, str]]:
    """(time, event, rule, reason) per mitigation event, in order."""
    out = []
    for ev in inp.mitigations:
        m = ev.get("mitigation", {})
        out.append(
            (
                _fmt(ev.get("ts")),
                str(ev.get("event", "")),
                str(m.get("command") or m.get("match")),
                str(m.get("reason") or ""),
            )
        )
    return out


def whitelisted_seen(inp: ReviewInput) -> list[str]:
    """Whitelisted sources seen during the attack: candidates that were dropped or split."""
    seen = []
    for ev in inp.mitigations:
        reason = str(ev.get("mitigation", {}).get("reason") or "")
        if "whitelist" in reason and reason not in seen:
            seen.append(reason)
    return seen


def render_markdown(inp: ReviewInput) -> str:
    """The review as Markdown."""
    inc = inp.incident
    lines = [
        f"# Post-incident review: {', '.join(inc.vectors)} on {inc.target}",
        "",
        f"- Incident `{inc.id}` - tier **{inc.tier.value}**, severity **{inc.severity}**, state **{inc.state}**",
        f"- Opened {_fmt(inc.opened_at)}, resolved {_fmt(inc.resolved_at) or '-'} ({_duration(inc)})",
        f"- Peak {inc.peak_ratio:.1f}x baseline "
        f"({inc.metric or 'rate'} {inc.peak_value:,.0f} vs {inc.baseline_value:,.0f})",
        f"- Runbook: {inp.runbook.title if inp.runbook else 'none'}"
        + (" (monitor only: learning)" if inc.learning else ""),
        "",
        "## Timeline",
        "",
        "| time | event | detail |",
        "|---|---|---|",
    ]
    lines += [f"| {_fmt(e.get('at'))} | {e.get('event', '')} | {e.get('detail', '')} |" for e in inp.timeline]
    lines += ["", "## Top sources", "", "| source | packets | bytes |", "|---|---|---|"]
    lines += [f"| {s.source} | {s.packets:,} | {s.bytes:,} |" for s in inc.top_sources]
    lines += ["", "## Top networks", "", "| network | packets | bytes |", "|---|---|---|"]
    lines += [f"| {s.source} | {s.packets:,} | {s.bytes:,} |" for s in inc.top_prefixes]
    lines += ["", "## FlowSpec rules", "", "| time | event | rule | reason |", "|---|---|---|---|"]
    lines += [f"| {t} | {e} | `{r}` | {why} |" for t, e, r, why in _rules(inp)]
    lines += ["", "## Whitelisted sources seen during the attack", ""]
    lines += [f"- {w}" for w in whitelisted_seen(inp)] or ["- none"]
    lines += ["", "## Notifications", "", "| time | channel | status | attempt | code |", "|---|---|---|---|---|"]
    lines += [
        f"| {_fmt(n.get('ts'))} | {n.get('channel')} | {n.get('status')} | {n.get('attempt')} | "
        f"{n.get('response_code') or ''} |"
        for n in inp.notifications
    ]
    steps = checklist_for(inp.runbook, inc.tags)
    if steps:
        lines += ["", "## NOC checklist", ""] + [f"- [ ] {s}" for s in steps]
    if inp.runbook and inp.runbook.post_incident:
        lines += ["", "## Post-incident steps", ""] + [f"- [ ] {s}" for s in inp.runbook.post_incident]
    lines += ["", "## Evidence", ""] + [f"- [{k}]({v})" for k, v in inp.evidence.items()] or ["- none"]
    return "\n".join(lines) + "\n"


def render_svg(series: list[tuple[datetime, float, float | None]], width: int = 720, height: int = 220) -> str:
    """Observed (solid) against baseline (dashed) as a standalone SVG."""
    pad = 40
    if len(series) < 2:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
            f'<text x="{pad}" y="{height // 2}">not enough data for a chart</text></svg>'
        )
    t0 = series[0][0].timestamp()
    span = max(series[-1][0].timestamp() - t0, 1.0)
    top = max(max(o, b or 0.0) for _, o, b in series) or 1.0

    def xy(t: datetime, v: float) -> str:
        x = pad + (t.timestamp() - t0) / span * (width - 2 * pad)
        y = height - pad - v / top * (height - 2 * pad)
        return f"{x:.1f},{y:.1f}"

    observed = " ".join(xy(t, o) for t, o, _ in series)
    base = " ".join(xy(t, b) for t, _, b in series if b is not None)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="traffic against baseline">'
        f'<rect width="100%" height="100%" fill="#fff"/>'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#999"/>'
        f'<text x="4" y="{pad}" font-size="11">{top:,.0f}</text>'
        f'<text x="{pad}" y="{height - 8}" font-size="11">{html.escape(_fmt(series[0][0]))}</text>'
        f'<text x="{width - pad}" y="{height - 8}" font-size="11" text-anchor="end">'
        f"{html.escape(_fmt(series[-1][0]))}</text>"
        f'<polyline points="{base}" fill="none" stroke="#46a758" stroke-width="1.5" stroke-dasharray="5,4"/>'
        f'<polyline points="{observed}" fill="none" stroke="#2b6cb0" stroke-width="1.5"/>'
        f"</svg>"
    )


def render_html(inp: ReviewInput) -> str:
    """The review as a standalone HTML page (Markdown content as tables, plus the chart)."""
    md = render_markdown(inp)
    body: list[str] = []
    in_table = False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if set("".join(cells)) <= {"-"}:
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
                body.append("<tr>" + "".join(f"<th>{c}</th>" for c in cells) + "</tr>")
            else:
                body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            title = line[3:]
            body.append(f"<h2>{html.escape(title)}</h2>")
            if title == "Timeline":
                body.append(render_svg(inp.series))
        elif line.startswith("- "):
            body.append(f"<p>&bull; {html.escape(line[2:])}</p>")
    if in_table:
        body.append("</table>")
    style = (
        "body{font:14px system-ui,sans-serif;max-width:980px;margin:2rem auto;color:#111}"
        "table{border-collapse:collapse;width:100%;margin:.5rem 0}td,th{border:1px solid #ddd;"
        "padding:.3rem .5rem;text-align:left;font-size:13px}"
    )
    title = html.escape(f"Review {inp.incident.id}")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>"
    )
