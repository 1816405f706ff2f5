"""The three origin runbooks, end to end on the real stack (one stack for the module).

Each test plays live traffic of the whole platform with one attack (``voxguard simulate``)
against ``voxguard up`` and checks what the runbook promises, where it really shows: the
incident and its runbook over the API, the FlowSpec routes in gobgpd's RIB (read back with
``gobgp``), the status page (a fake Statuspage checking the vendor contract), the e-mail a
customer receives (aiosmtpd), the signed NOC webhook, and the post-incident review.

Time scale: thresholds that are minutes in production (60 s status-page rule, 30 quiet ticks,
60 s hold-down, 7 learning days) are shortened in the test config (``runbook_stack``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from runbook_stack import (
    AFFECT_AFTER_S,
    BACKFILL_DAYS,
    CUSTOMER_MAIL,
    GEO_COUNTRY,
    STATUS_IDS,
    Inbox,
    LoopThread,
    Sinks,
    Stack,
    Truth,
    endpoint_subnets,
    pg_schema,
    runbook_config,
    simulated_truth,
    smtp_server,
    stack_env,
    status_changes,
    text_of,
    wait_until,
    whitelisted,
    write_geoip,
)

from mitigate.mitigate_lab import GoBGP
from notify.fakesaas import SP_KEY, SP_PAGE, WH_SECRET, FakeSaaS
from vghelpers import need_tool, stop_process
from voxguard.shared.natsserver import NatsServer
from voxguard.shared.runbooks import DEFAULT_RUNBOOKS, REGULATORY_CHECKLIST

pytestmark = pytest.mark.slow

LEAD_S, ATTACK_S, SIM_S = 10, 25, 100  # normal traffic first, then the attack, then normal again
SIP_ATTACK = f"sip_flood:sbc-eu-1@{LEAD_S}s+{ATTACK_S}s*10"
RTP_ATTACK = f"rtp_flood:media-gw-eu@{LEAD_S}s+{ATTACK_S}s*6"
TDOS_ATTACK = f"tdos:sbc-us-1@{LEAD_S}s+{ATTACK_S}s*5"
RUNBOOK = {rb.name: rb for rb in DEFAULT_RUNBOOKS}
REPORT_SECTIONS = ("## Timeline", "## Top sources", "## Top networks", "## FlowSpec rules",
                   "## Whitelisted sources seen during the attack", "## Notifications", "## NOC checklist",
                   "## Post-incident steps", "## Evidence")  # fmt: skip
Net = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class Lab:
    stack: Stack
    gobgp: GoBGP
    saas: FakeSaaS
    inbox: Inbox
    config: dict[str, Any]
    sip: Truth
    tdos: Truth
    geoip: Path

    @contextlib.contextmanager
    def playing(self, attack: str) -> Iterator[float]:
        """Live traffic with ``attack`` for the duration of the block; yields when the attack starts."""
        sim = self.stack.simulate(attack, SIM_S)
        try:
            yield time.time() + LEAD_S
        finally:
            stop_process(sim, 10)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Iterator[Lab]:
    """gobgpd, the sinks, PostgreSQL, NATS, a backfilled baseline and ``voxguard up``."""
    gobgpd, gobgp = need_tool("gobgpd"), need_tool("gobgp")
    tmp = tmp_path_factory.mktemp("runbooks")
    with contextlib.ExitStack() as stack:
        router = GoBGP(tmp / "gobgp", gobgpd, gobgp)
        router.start()
        stack.callback(router.stop)
        loop = LoopThread()
        stack.callback(loop.close)
        saas: FakeSaaS = loop.run(FakeSaaS(shared_dir / "data" / "api-specs").start())
        stack.callback(lambda: loop.run(saas.stop()))
        inbox, smtp_port = stack.enter_context(smtp_server())
        database = stack.enter_context(pg_schema())
        nats = NatsServer(tmp / "nats")
        nats_url = nats.start()
        stack.callback(nats.stop)

        cfg = runbook_config(router.bgp_port, Sinks(saas.url, WH_SECRET, SP_PAGE, SP_KEY, smtp_port))
        path = tmp / "voxguard.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        sip, tdos = simulated_truth(path, SIP_ATTACK), simulated_truth(path, TDOS_ATTACK)
        # registered endpoint subnets: the busiest real ones, plus three of the flooding /24s
        # (compromised customer PBXs), so the whitelist has something to refuse
        registered = endpoint_subnets(path, "sbc-eu-1", 5) + sip.attack_prefixes[:3]
        geoip = write_geoip(tmp / "country.mmdb", tdos.attack_prefixes, GEO_COUNTRY)
        cfg["bgp"]["whitelists"] = {"registered_endpoints": registered}
        cfg["bgp"]["geoip"] = {"database": str(geoip), "rate_limit_countries": [GEO_COUNTRY]}
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))

        st = Stack(tmp, path, cfg, stack_env(tmp, database, nats_url))
        stack.callback(st.stop)
        st.backfill(BACKFILL_DAYS)
        st.start()
        wait_until(router.established, 30, "the BGP session ExaBGP -> gobgpd")
        yield Lab(st, router, saas, inbox, cfg, sip, tdos, geoip)


# -- helpers ------------------------------------------------------------------------------------


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def describe(incidents: list[dict[str, Any]], attack_at: float) -> str:
    """What detection reported, for a failure message: vectors, ratios, timing."""
    if not incidents:
        return "no incident at all"
    return "; ".join(
        f"{i['target']} vectors={i['vectors']} state={i['state']} peak={i['peak_ratio']:.1f}x "
        f"({i.get('metric')} {i.get('peak_value', 0):.0f} vs baseline {i.get('baseline_value', 0):.0f}) "
        f"opened t{_ts(i['opened_at']) - attack_at:+.0f}s"
        + (f" resolved t{_ts(i['resolved_at']) - attack_at:+.0f}s" if i.get("resolved_at") else "")
        + (" LEARNING" if i.get("learning") else "")
        for i in incidents
    )


def traffic_vs_baseline(lab: Lab, component: str, since: float) -> str:
    """Observed per-tick rates since ``since`` (median and max) against the learned profile of this
    hour on the component's aggregate targets, for a detection failure message: what the baseline
    expected is half of why a detector stays quiet."""
    out = []
    now = dt.datetime.now(dt.UTC)
    slot = now.weekday() * 24 + now.hour  # the profile's slots start on Monday 00:00 UTC
    try:
        targets = [t for t in lab.stack.get("/v1/targets", limit=10_000)["items"]
                   if t.get("component") == component and not t.get("host")]  # fmt: skip
        start = dt.datetime.fromtimestamp(since, dt.UTC).isoformat()
        for t in targets:
            base = lab.stack.get(f"/v1/targets/{t['id']}/baseline")["metrics"]
            live = lab.stack.get(f"/v1/targets/{t['id']}/live", since=start)
            parts = []
            for m in ("packets", "flows", "bytes"):
                seen = sorted(float(p.get(m) or 0) for p in live["points"]) or [0.0]
                parts.append(
                    f"{m}/s median {seen[len(seen) // 2]:.0f} max {seen[-1]:.0f} vs profile {base[m]['profile'][slot]} "
                    f"(short-term x{base[m]['short_term_level']})"
                )
            out.append(f"{t.get('name') or t['id']}: " + ", ".join(parts))
    except (AssertionError, KeyError, IndexError, TypeError) as exc:  # diagnostics only: never hide the failure
        out.append(f"(no baseline details: {exc!r})")
    return " | ".join(out)


def await_incident(lab: Lab, component: str, vector: str, attack_at: float, timeout: float = 45) -> dict[str, Any]:
    """The incident on ``component`` carrying ``vector`` opened since the attack began, or a failure
    that says exactly what detection reported instead."""
    seen: list[dict[str, Any]] = []

    def find() -> dict[str, Any] | None:
        seen[:] = [
            i for i in lab.stack.incidents()
            if i.get("component") == component and _ts(i["opened_at"]) >= attack_at - LEAD_S
        ]  # fmt: skip
        return next((i for i in seen if vector in i["vectors"] and not i.get("learning")), None)

    try:
        return wait_until(find, timeout, f"a {vector} incident on {component}")
    except AssertionError:
        others = [i for i in lab.stack.incidents() if _ts(i["opened_at"]) >= attack_at - LEAD_S]
        aggregate = [i for i in seen if not i.get("host")] or seen
        pytest.fail(
            f"detection: no {vector} incident (non-learning) on {component} within {timeout:.0f}s of the "
            f"attack ({vector} runbook). On {component}: {describe(aggregate, attack_at)} "
            f"(+{len(seen) - len(aggregate)} per-host). Other incidents since: "
            f"{describe([i for i in others if i.get('component') != component], attack_at)}. "
            f"Traffic: {traffic_vs_baseline(lab, component, attack_at)}",
            pytrace=False,
        )


def source_of(nlri: str) -> Net | None:
    m = re.search(r"\[source: ([0-9a-fA-F:.]+/\d+)", nlri)
    return ipaddress.ip_network(m.group(1)) if m else None


def routes_to(rib: dict[str, str], destination: str) -> dict[str, str]:
    return {n: a for n, a in rib.items() if n.startswith(f"[destination: {destination}]")}


def overlaps_any(net: Net, prefixes: list[str] | list[Net]) -> Net | None:
    for p in prefixes:
        q = ipaddress.ip_network(p) if isinstance(p, str) else p
        if q.version == net.version and net.overlaps(q):
            return q
    return None


def top5_per_event(detail: dict[str, Any]) -> list[list[str]]:
    """The five heaviest source networks the incident carried at each of its events."""
    out = []
    for ev in detail["timeline"]:
        snap = ev.get("incident")
        snap = json.loads(snap) if isinstance(snap, str) else snap or {}
        tops = sorted(snap.get("top_prefixes") or [], key=lambda s: (s["packets"], s["bytes"]), reverse=True)
        if tops:
            out.append([s["source"] for s in tops[:5]])
    return out


def announced_in_rib(lab: Lab, incident_id: str) -> Callable[[], list[dict[str, Any]] | None]:
    """Poll: the incident's announced rules, once at least one exists and all are in the RIB."""

    def check() -> list[dict[str, Any]] | None:
        rules = [m for m in lab.stack.mitigations(incident_id) if m["state"] == "announced"]
        if not rules:
            return None
        rib = lab.gobgp.rib()
        nlris = {nlri_of(m, s) for m in rules for s in (m["match"]["sources"] or [None])}
        return rules if nlris <= set(rib) else None

    return check


def nlri_of(m: dict[str, Any], source: str | None) -> str:
    """How gobgp prints the flow route of one mitigation source."""
    match = m["match"]
    ports = match.get("destination_ports") or ""
    lo, _, hi = ports.partition("-")
    port = f"[destination-port: >={lo}&<={hi}]" if hi else f"[destination-port: =={lo}]" if lo else ""
    src = f"[source: {source}]" if source else ""
    return f"[destination: {match['destination']}]{src}[protocol: =={match['protocol']}]{port}"


def summary(mitigations: list[dict[str, Any]]) -> str:
    """One line per mitigation: action, sources, state and why."""
    return "; ".join(
        f"{m['action']} {m['match']['sources'] or 'any'} -> {m['match']['destination']}: {m['state']}"
        + (f" ({m['reason']})" if m.get("reason") else "")
        for m in mitigations
    )


def assert_rules_gone(lab: Lab, incident_id: str, destinations: set[str]) -> None:
    """After resolution and hold-down: nothing left in the RIB for the attacked destinations."""
    wait_until(lambda: not any(routes_to(lab.gobgp.rib(), d) for d in destinations), 30,
               f"routes to {sorted(destinations)} withdrawn from gobgpd's RIB")  # fmt: skip
    wait_until(
        lambda: all(m["state"] in ("withdrawn", "rejected") for m in lab.stack.mitigations(incident_id)),
        15, "every mitigation of the incident withdrawn",
    )  # fmt: skip


def assert_review(lab: Lab, inc: dict[str, Any], runbook_title: str, *must: str) -> str:
    """The post-incident review, in Markdown and HTML, with its sections."""
    md = lab.stack.get(f"/v1/incidents/{inc['id']}/report", format="md")
    missing = [s for s in REPORT_SECTIONS if s not in md]
    assert not missing, f"review lacks {missing}:\n{md}"
    assert f"Runbook: {runbook_title}" in md
    assert "| announced |" in md and "| withdrawn |" in md, md
    assert re.search(r"\| noc \| sent \|", md), f"no sent NOC notification in the review:\n{md}"
    for text in must:
        assert text in md, f"{text!r} missing from the review:\n{md}"
    html = lab.stack.get(f"/v1/incidents/{inc['id']}/report", format="html")
    assert html.startswith("<!doctype html>") and "<h2>Timeline</h2>" in html and "<svg" in html
    assert "<h2>FlowSpec rules</h2>" in html and "<h2>NOC checklist</h2>" in html
    return str(md)


def assert_noc_webhooks(lab: Lab, incident_id: str) -> None:
    """Signed (checked by the receiver), contract-valid, and the incident's start and end told."""
    types = {
        r.body["type"] for r in lab.saas.of("webhook")
        if isinstance(r.body, dict) and (r.body.get("data") or {}).get("alert_id") == incident_id
    }  # fmt: skip
    assert {"ddos.attack.detected", "ddos.attack.ended"} <= types, types
    assert not lab.saas.violations, lab.saas.violations


# -- the runbooks -------------------------------------------------------------------------------


def test_sip_flood_on_the_sbc(lab: Lab) -> None:
    """UDP/5060 > 5x: top-5 /24s blocked, registered endpoints and calls untouched, SIP Signaling
    degraded and back, a review."""
    dest = "203.0.113.10/32"
    sip_id = STATUS_IDS["sip_signaling"]
    with lab.playing(SIP_ATTACK) as attack_at:
        inc = await_incident(lab, "sbc-eu-1", "sip_flood", attack_at)
        detail = lab.stack.get(f"/v1/incidents/{inc['id']}")
        assert detail["runbook"] and detail["runbook"]["name"] == "sip-flood-sbc", detail["runbook"]
        assert detail["incident"]["runbook"] == "sip-flood-sbc"
        assert detail["checklist"] == RUNBOOK["sip-flood-sbc"].noc_checklist  # not an emergency trunk

        rules = wait_until(announced_in_rib(lab, inc["id"]), 20, "the SIP flood's rules in gobgpd's RIB")
        rib = routes_to(lab.gobgp.rib(), dest)
        blocked = [ipaddress.ip_network(s) for m in rules for s in m["match"]["sources"]]
        assert all(m["action"] == "discard" for m in rules), (
            f"SIP flood rules {summary(rules)} for incident {describe([detail['incident']], attack_at)}"
        )
        assert all("discard" in attrs for attrs in rib.values()), rib
        assert 1 <= len(blocked) <= 5 and all(n.prefixlen == 24 for n in blocked), blocked
        detail = lab.stack.get(f"/v1/incidents/{inc['id']}")
        tops = top5_per_event(detail)
        # existing calls' sources (the simulator's own callers, trunks, peers) are never blocked;
        # checked to the end of the runbook first, so one run shows every step
        callers_blocked = [
            f"{n} of {pops}" for n in blocked
            if (pops := [pop for pop, nets in lab.sip.legitimate.items() if overlaps_any(n, nets)])
        ]  # fmt: skip
        attackers = set(lab.sip.attack_prefixes)
        assert all(str(n) in attackers for n in blocked if not any(str(n) in c for c in callers_blocked)), blocked
        assert all(any(str(n) in t for t in tops) for n in blocked), (blocked, tops)

        # never matched: the config's whitelist (registered endpoints, trunks, SBC sources) ...
        wl = whitelisted(lab.config)
        for nlri in rib:
            src = source_of(nlri)
            assert src is not None, f"a source-less discard rule: {nlri}"
            hit = overlaps_any(src, [n for n, _ in wl])
            assert hit is None, f"{nlri} matches whitelisted {hit}"
        # a whitelisted top network was refused with the whitelist entry named, not announced
        registered = lab.config["bgp"]["whitelists"]["registered_endpoints"]
        first_top = set(tops[0])
        for m in lab.stack.mitigations(inc["id"]):
            if m["state"] == "rejected" and "max_rules_per_incident" not in (m["reason"] or ""):
                assert "registered_endpoints" in (m["reason"] or ""), m
        for net in first_top & set(registered):
            assert any(
                m["state"] == "rejected" and net in m["match"]["sources"] and "registered_endpoints" in m["reason"]
                for m in lab.stack.mitigations(inc["id"])
            ), f"top network {net} is a registered endpoint subnet but no rejected mitigation says so"

        # the status page: SIP Signaling degraded once affected for longer than affect_after_s
        wait_until(lambda: lab.stack.component("sip_signaling")["status"] != "operational", 30 + AFFECT_AFTER_S,
                   "SIP Signaling to leave operational on the status page")  # fmt: skip
        resolved = wait_until(
            lambda: next((i for i in lab.stack.incidents() if i["id"] == inc["id"] and i["state"] == "resolved"), None),
            ATTACK_S + 45, "the SIP flood incident to resolve after the attack",
        )  # fmt: skip
        assert_rules_gone(lab, inc["id"], {dest})
        try:
            wait_until(lambda: lab.stack.component("sip_signaling")["status"] == "operational", 45,
                       "SIP Signaling back to operational")  # fmt: skip
        except AssertionError:
            comp = lab.stack.component("sip_signaling")
            others = [i for i in lab.stack.incidents() if i["state"] != "resolved"]
            pytest.fail(
                f"SIP Signaling stays {comp['status']} after the SIP flood resolved: affected by "
                f"{comp['incidents']}; open incidents: {describe(others, attack_at)}",
                pytrace=False,
            )
    changes = status_changes(lab.saas, sip_id)
    assert changes and changes[0] != "operational" and changes[-1] == "operational", changes
    assert not lab.saas.violations, lab.saas.violations
    assert_noc_webhooks(lab, inc["id"])
    assert resolved["resolved_at"]
    assert_review(lab, resolved, RUNBOOK["sip-flood-sbc"].title, *(str(n) for n in blocked))
    assert not callers_blocked, (
        f"the SIP flood rules blocked networks of calls in progress: {callers_blocked}; they were among the "
        f"incident's top-5 source networks {tops} (each event's top networks come from one sampled tick)"
    )


def test_rtp_flood_on_the_media_gateways(lab: Lab) -> None:
    """UDP/10000-20000 > 3x: sources blocked, unknown sources rate-limited, SBC sources accepted
    first, the enterprise customer of the dedicated gateway told."""
    media = lab.config["tiers"]["media"]
    rate = media["mitigation"]["rate_limit_bps"]
    sbc_sources = [ipaddress.ip_network(w["prefix"]) for w in lab.config["whitelist"] if "SBC" in w["reason"]]
    assert sbc_sources, "the example config names the SBC source addresses in its whitelist"
    with lab.playing(RTP_ATTACK) as attack_at:
        inc = await_incident(lab, "media-gw-eu", "rtp_flood", attack_at)
        detail = lab.stack.get(f"/v1/incidents/{inc['id']}")
        assert detail["runbook"] and detail["runbook"]["name"] == "rtp-flood-media", detail["runbook"]

        ready = announced_in_rib(lab, inc["id"])
        try:
            rules = wait_until(lambda: (r := ready()) and any(m["action"] == "rate_limit" for m in r) and r, 20,
                               "the RTP flood's rate-limit in gobgpd's RIB")  # fmt: skip
        except AssertionError:
            pytest.fail(f"no announced rate-limit of unknown sources: {summary(lab.stack.mitigations(inc['id']))}")
        limit = [m for m in rules if m["action"] == "rate_limit"]
        assert len(limit) == 1 and limit[0]["match"]["sources"] == [] and limit[0]["rate_bps"] == rate, limit
        dest = limit[0]["match"]["destination"]
        accepted = {ipaddress.ip_network(s) for m in rules if m["action"] == "accept" for s in m["match"]["sources"]}
        assert set(sbc_sources) <= accepted, f"SBC sources {sbc_sources} not accepted ahead of the rate-limit"
        assert any(m["action"] == "discard" for m in rules), "no source-block rule"
        rib = routes_to(lab.gobgp.rib(), dest)
        rng = "[protocol: ==udp][destination-port: >=10000&<=20000]"
        assert f"rate: {rate}" in rib[f"[destination: {dest}]{rng}"]
        for net in sbc_sources:
            assert "Extcomms" not in rib[f"[destination: {dest}][source: {net}]{rng}"]  # accept: no action
        wl = [n for n, _ in whitelisted(lab.config)]
        for nlri, attrs in rib.items():
            src = source_of(nlri)
            if src is None or "Extcomms" not in attrs:
                continue  # the any-source rate-limit, behind its accept guards; the guards
            assert overlaps_any(src, wl) is None, f"{nlri} ({attrs}) matches a whitelisted prefix"
            assert overlaps_any(src, lab.sip.legitimate["peers:media-gw-eu"]) is None, f"{nlri} hits RTP peers"

        mails = wait_until(lambda: [m for m in lab.inbox.to(CUSTOMER_MAIL) if inc["id"] in text_of(m.message)],
                           30, "the dedicated-gateway customer's e-mail about the incident")  # fmt: skip
        assert "media-gw-eu" in text_of(mails[0].message)
        wait_until(
            lambda: any(i["id"] == inc["id"] and i["state"] == "resolved" for i in lab.stack.incidents()),
            ATTACK_S + 45, "the RTP flood incident to resolve after the attack",
        )  # fmt: skip
        assert_rules_gone(lab, inc["id"], {dest})
    # the customer hears about their gateway only: every mail names it, none names an SBC incident
    for mail in lab.inbox.to(CUSTOMER_MAIL):
        assert "media-gw-eu" in text_of(mail.message), text_of(mail.message)
    assert len(lab.inbox.to(CUSTOMER_MAIL)) >= 2  # opened and resolved
    assert_noc_webhooks(lab, inc["id"])
    assert_review(lab, lab.stack.get(f"/v1/incidents/{inc['id']}")["incident"], RUNBOOK["rtp-flood-media"].title)


def test_tdos_on_the_emergency_trunk(lab: Lab) -> None:
    """New-flow surge from many sources, media flat: top networks rate-limited plus GeoIP filtering;
    the emergency-services trunk's incident carries the regulatory checklist."""
    import maxminddb

    sbc = lab.config["tiers"]["sbc"]
    comp = next(c for c in sbc["components"] if "emergency-services" in c.get("tags", []))
    dest = comp["addresses"][0]
    rate = sbc["mitigation"].get("rate_limit_bps") or 125_000  # bgp.default_rate_limit_bps
    with lab.playing(TDOS_ATTACK.replace("sbc-us-1", comp["name"])) as attack_at:
        inc = await_incident(lab, comp["name"], "tdos", attack_at)
        detail = lab.stack.get(f"/v1/incidents/{inc['id']}")
        assert "emergency-services" in detail["incident"]["tags"]
        assert detail["runbook"] and detail["runbook"]["name"] == "tdos-sbc", (
            f"TDoS incident {inc['vectors']} got runbook {detail['runbook'] and detail['runbook']['name']}: "
            f"{describe([detail['incident']], attack_at)}; timeline: "
            f"{[(e['event'], e['at']) for e in detail['timeline']]}"
        )
        assert all(step in detail["checklist"] for step in REGULATORY_CHECKLIST), detail["checklist"]

        rules = wait_until(announced_in_rib(lab, inc["id"]), 20, "the TDoS rules in gobgpd's RIB")
        assert all(m["action"] == "rate_limit" and m["rate_bps"] == rate for m in rules), rules
        rib = routes_to(lab.gobgp.rib(), dest)
        assert all(f"rate: {rate}" in attrs for attrs in rib.values()), rib

        limited = [ipaddress.ip_network(s) for m in rules for s in m["match"]["sources"]]
        assert {str(n) for n in limited} <= set(lab.tdos.attack_prefixes), "a rule limits a non-attacker network"
        # a bot army over hundreds of /24s rarely gives one network the evidence a top-network rule
        # needs, so the rules come from the geographic filter: networks in the filtered country
        with maxminddb.open_database(str(lab.geoip)) as geo:
            by_geo = limited
            for n in by_geo:
                rec: Any = geo.get(str(n.network_address))
                assert isinstance(rec, dict) and rec["country"]["iso_code"] == GEO_COUNTRY, (n, rec)
        wl = [n for n, _ in whitelisted(lab.config)]
        for n in limited:
            assert overlaps_any(n, wl) is None and overlaps_any(n, lab.tdos.legitimate["endpoints:sbc-us-1"]) is None
        wait_until(
            lambda: any(i["id"] == inc["id"] and i["state"] == "resolved" for i in lab.stack.incidents()),
            ATTACK_S + 45, "the TDoS incident to resolve after the attack",
        )  # fmt: skip
        assert_rules_gone(lab, inc["id"], {dest})
    assert_noc_webhooks(lab, inc["id"])
    md = assert_review(lab, lab.stack.get(f"/v1/incidents/{inc['id']}")["incident"], RUNBOOK["tdos-sbc"].title)
    assert REGULATORY_CHECKLIST[0] in md
