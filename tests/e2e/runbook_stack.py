"""The real stack the runbook tests play attacks against, and the sinks that listen to it.

``voxguard up`` runs as a process on PostgreSQL (a fresh schema), a nats-server from the wheel
(its own store, so nothing is shared with other runs), ExaBGP peering with a real gobgpd
(``mitigate.mitigate_lab``), e-mail to an aiosmtpd server, a Standard-Webhooks receiver and a
fake Statuspage that both check every request against the vendor contracts
(``notify.fakesaas``). History is backfilled into the same database before the start, so
baselines are learned and mitigation is not monitor-only.

Everything here is synchronous: the sinks run their own event loops in threads, so the tests
can poll the HTTP API and the router's RIB without an event loop of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from vghelpers import free_port, require, stop_process, wait_http_ready
from voxguard.shared.config import example_config_path, load_config
from voxguard.shared.natsserver import port_open

REPO = Path(__file__).resolve().parents[2]
PG_ADMIN = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3"
T = TypeVar("T")

# The test's time scale: the runbooks' thresholds, shortened (the product defaults are minutes).
LEARNING_DAYS = 0.2  # learning period of every tier; the backfill covers a little more
BACKFILL_DAYS = 0.25
QUIET_TICKS = 5  # calm ticks before an incident resolves (default 30)
AFFECT_AFTER_S = 6.0  # status pages: incident age before a component changes (default 60 s)
RECOVER_AFTER_S = 2.0
HOLD_DOWN_S = 1.0  # rules withdrawn this long after their incident resolved (default 60 s)
SBC_VECTORS = ("sip_flood", "malformed_sip", "tls_exhaustion", "icmp_flood", "tdos")
MEDIA_VECTORS = ("rtp_flood", "codec_exhaustion")
REGISTRAR_VECTORS = ("register_storm", "sbc_not_filtering", "call_routing_exhaustion")  # SIP Signaling too
STATUS_IDS = {"sip_signaling": "sipsignal01", "voice_quality": "voicequal01", "api": "apimgmt001"}
GEO_COUNTRY = "XX"  # the country the test's GeoIP database puts the TDoS bots in
CUSTOMER_MAIL = "noc@acme.example"


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.5) -> T:
    """The first truthy value of ``predicate()``; AssertionError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# -- PostgreSQL -------------------------------------------------------------------------------


@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    """A SQLAlchemy URL whose search_path is a fresh schema (dropped afterwards), or skip/fail."""
    import psycopg

    ok = port_open("127.0.0.1", 5432)
    if ok:
        try:
            with psycopg.connect(PG_ADMIN):
                pass
        except psycopg.Error:
            ok = False
    require(ok, "PostgreSQL not reachable at 127.0.0.1:5432 (database test, user postgres, trust auth)")
    schema = f"e2e_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema},public"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- sinks ------------------------------------------------------------------------------------


class LoopThread:
    """An asyncio loop in a daemon thread, for servers written for asyncio (the fake SaaS)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="e2e-sinks", daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class Mail:
    to: list[str]
    message: Message


@dataclass
class Inbox:
    """Messages an aiosmtpd server accepted."""

    mails: list[Mail] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append(Mail(list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"

    def to(self, address: str) -> list[Mail]:
        return [m for m in self.mails if address in m.to]


@contextlib.contextmanager
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    """A local SMTP server (aiosmtpd) on a free port."""
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def text_of(msg: Message) -> str:
    """Subject plus every text part of an e-mail."""
    parts = [str(msg.get("Subject", ""))]
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                parts.append(payload.decode(part.get_content_charset() or "utf-8", "replace"))
    return "\n".join(parts)


def status_changes(saas: Any, component_id: str) -> list[str]:
    """The statuses the fake Statuspage was asked to give one component, in order."""
    out: list[str] = []
    for seen in saas.of("statuspage"):
        body = seen.body if isinstance(seen.body, dict) else {}
        if seen.path.endswith(f"/components/{component_id}") and isinstance(body.get("component"), dict):
            out.append(str(body["component"].get("status")))
        comps = (body.get("incident") or {}).get("components") or {}
        if component_id in comps:
            out.append(str(comps[component_id]))
    return out


# -- the simulator's ground truth ---------------------------------------------------------------


def _prefix_weights(pop: Any) -> list[tuple[str, float]]:
    """A population's /24s, heaviest first (the simulator's own activity weights)."""
    acc: dict[str, float] = {}
    for ip, w in zip(pop.ips.tolist(), pop.weights.tolist(), strict=True):
        net = str(ipaddress.ip_network(f"{ipaddress.IPv4Address(int(ip))}/24", strict=False))
        acc[net] = acc.get(net, 0.0) + float(w)
    return sorted(acc.items(), key=lambda kv: kv[1], reverse=True)


@dataclass
class Truth:
    """What one ``voxguard simulate`` run with one attack really sends (same config, same seed)."""

    attack_prefixes: list[str]  # heaviest first
    legitimate: dict[str, list[str]]  # the platform's own callers, peers and clients, by population


def simulated_truth(config_path: Path, spec: str) -> Truth:
    """Build the simulator's model exactly as ``voxguard simulate --attack SPEC`` does."""
    from voxguard.ingest.simulate.attacks import add_attacks, parse_attack_spec
    from voxguard.ingest.simulate.model import TrafficModel

    model = TrafficModel(load_config(config_path), seed=0)
    (truth,) = add_attacks(model, [parse_attack_spec(spec)], int(time.time()))
    attack = next(p for name, p in model.pops.items() if name.startswith("attack0:"))
    legit = {name: p.prefixes() for name, p in model.pops.items() if not name.startswith("attack")}
    heavy = [net for net, _ in _prefix_weights(attack)]
    assert set(heavy) == set(truth.prefixes)
    return Truth(heavy, legit)


def endpoint_subnets(config_path: Path, component: str, n: int) -> list[str]:
    """The ``n`` busiest /24s of the simulator's registered endpoints behind ``component``."""
    from voxguard.ingest.simulate.model import TrafficModel

    model = TrafficModel(load_config(config_path), seed=0)
    return [net for net, _ in _prefix_weights(model.pops[f"endpoints:{component}"])[:n]]


def write_geoip(path: Path, prefixes: list[str], country: str) -> Path:
    """A MaxMind-format country database (mmdb-writer) placing ``prefixes`` in ``country``."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-Country")
    for p in prefixes:
        w.insert_network(IPSet([p]), {"country": {"iso_code": country}})
    w.insert_network(IPSet(["100.64.0.0/10"]), {"country": {"iso_code": "FR"}})
    w.to_db_file(str(path))
    return path


# -- config -----------------------------------------------------------------------------------


@dataclass
class Sinks:
    saas_url: str
    webhook_secret: str
    sp_page: str
    sp_key: str
    smtp_port: int


def runbook_config(bgp_port: int, sinks: Sinks) -> dict[str, Any]:
    """The example config on free loopback ports, on the test's time scale, with real sinks.

    Shortened: learning period, quiet ticks, status-page affect/recover times, BGP hold-down.
    Added: the BGP peer (gobgpd), notification channels and routes, the Statuspage provider, a
    dedicated-gateway customer on the media gateway. The whitelists and the GeoIP database are
    added by the caller once the simulator's populations are known.
    """
    import socket

    cfg: dict[str, Any] = yaml.safe_load(example_config_path().read_text())
    cfg["ingest"].update(
        host="127.0.0.1",
        netflow_port=free_port(socket.SOCK_DGRAM),
        ipfix_port=free_port(socket.SOCK_DGRAM),
        sflow_port=free_port(socket.SOCK_DGRAM),
    )
    for tier in cfg["tiers"].values():
        tier.setdefault("baseline", {})["learning_days"] = LEARNING_DAYS
    for name, vectors in (("sbc", SBC_VECTORS), ("media", MEDIA_VECTORS), ("registrar", REGISTRAR_VECTORS)):
        det = cfg["tiers"][name].setdefault("detection", {}).setdefault("vectors", {})
        for v in vectors:
            det.setdefault(v, {})["quiet_ticks"] = QUIET_TICKS
    media = cfg["tiers"]["media"]["components"][0]
    media["tags"] = ["dedicated-gateway", "customer-acme"]
    cfg["bgp"] = {
        "local_as": 65000,
        "router_id": "127.0.0.1",
        "local_address": "127.0.0.1",
        "peers": [{"address": "127.0.0.2", "asn": 65001, "port": bgp_port}],
        "hold_down_seconds": HOLD_DOWN_S,
        "reconcile_interval_seconds": 0.5,
        "whitelists": {},
    }
    fast = {"max_attempts": 4, "base_s": 0.2, "cap_s": 1.0, "jitter": 0.2, "timeout_s": 5.0}
    cfg["notifications"] = {
        "link_base": "http://127.0.0.1",
        "retry": fast,
        "channels": {
            "noc": {
                "type": "webhook",
                "url": f"{sinks.saas_url}/webhook/noc",
                "secret": sinks.webhook_secret,
                "rate_per_s": 50,
                "burst": 50,
            },
            "acme-mail": {
                "type": "email",
                "host": "127.0.0.1",
                "port": sinks.smtp_port,
                "starttls": "never",
                "from": "voxguard@operator.example",
                "to": [CUSTOMER_MAIL],
            },
        },
        "routes": [
            {"name": "noc", "match": {"kinds": ["incident.opened", "incident.updated", "incident.resolved",
                                                 "mitigation.announced", "mitigation.withdrawn"]},
             "channels": ["noc"]},
            {"name": "acme-dedicated-gateway", "channels": ["acme-mail"],
             "match": {"components": [media["name"]], "kinds": ["incident.opened", "incident.resolved"]}},
        ],
    }  # fmt: skip
    cfg["status_pages"] = {
        "affect_after_s": AFFECT_AFTER_S,
        "recover_after_s": RECOVER_AFTER_S,
        "min_hold_s": 0,
        "providers": {
            "atlassian": {
                "type": "statuspage",
                "base_url": f"{sinks.saas_url}/statuspage/v1",
                "page_id": sinks.sp_page,
                "api_key": sinks.sp_key,
                "rate_per_s": 5,
                "component_ids": dict(STATUS_IDS),
            }
        },
    }
    return cfg


def whitelisted(cfg: dict[str, Any]) -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]]:
    """Every prefix the config says no rule may match: ``whitelist`` and ``bgp.whitelists``."""
    out = [(ipaddress.ip_network(w["prefix"]), f"whitelist: {w['reason']}") for w in cfg.get("whitelist", [])]
    for kind, nets in (cfg.get("bgp", {}).get("whitelists") or {}).items():
        out += [(ipaddress.ip_network(n), f"bgp.whitelists.{kind}") for n in nets]
    return out


# -- the running product ----------------------------------------------------------------------


def voxguard(*args: str) -> list[str]:
    return [sys.executable, "-m", "voxguard.cli.main", *args]


@dataclass
class Stack:
    """``voxguard up`` and an authenticated client on its API."""

    workdir: Path
    config_path: Path
    config: dict[str, Any]
    env: dict[str, str]
    base: str = ""
    proc: subprocess.Popen[bytes] | None = None
    client: httpx.Client | None = None
    sims: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def backfill(self, days: float) -> str:
        res = subprocess.run(
            voxguard("backfill", "--days", str(days), "--config", str(self.config_path)),
            env=self.env, capture_output=True, text=True, timeout=240, cwd=self.workdir,
        )  # fmt: skip
        assert res.returncode == 0, f"backfill failed:\n{res.stdout}\n{res.stderr[-3000:]}"
        return res.stdout

    def start(self) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        log = (self.workdir / "voxguard-up.log").open("wb")
        self.proc = subprocess.Popen(
            voxguard("up", "--config", str(self.config_path), "--http", f"127.0.0.1:{port}"),
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
        )  # fmt: skip
        log.close()
        try:
            wait_http_ready(self.base, self.proc, timeout=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None
        key = (Path(self.env["VOXGUARD_VAR_DIR"]) / "admin.key").read_text().strip()
        self.client = httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {key}"}, timeout=15)

    def log_tail(self, n: int = 4000) -> str:
        path = self.workdir / "voxguard-up.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def simulate(self, attack: str, duration: float) -> subprocess.Popen[bytes]:
        """Live traffic of the whole platform with one attack, in real time, in the background."""
        log = (self.workdir / f"simulate-{len(self.sims)}.log").open("wb")
        proc = subprocess.Popen(
            voxguard("simulate", "--config", str(self.config_path), "--duration", str(duration), "--attack", attack),
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
        )  # fmt: skip
        log.close()
        self.sims.append(proc)
        return proc

    def stop(self) -> None:
        for sim in self.sims:
            stop_process(sim, 10)
        if self.client is not None:
            self.client.close()
        if self.proc is not None:
            stop_process(self.proc, 40)

    # -- API reads --------------------------------------------------------------------------

    def get(self, path: str, **params: Any) -> Any:
        assert self.client is not None
        r = self.client.get(path, params=params)
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text[:500]}"
        return r.json() if "json" in r.headers.get("content-type", "") else r.text

    def incidents(self, **params: Any) -> list[dict[str, Any]]:
        return list(self.get("/v1/incidents", limit=500, **params)["items"])

    def mitigations(self, incident_id: str) -> list[dict[str, Any]]:
        return list(self.get("/v1/mitigations", incident_id=incident_id, limit=5000))

    def component(self, key: str) -> dict[str, Any]:
        comps = self.get("/v1/status-components")
        found = next((c for c in comps if c.get("key") == key or c.get("component") == key), None)
        assert found is not None, f"no status component {key!r} in {comps}"
        return dict(found)


def stack_env(workdir: Path, database_url: str, nats_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VOXGUARD_CONFIG", "VOXGUARD_HTTP")}
    env.update(
        DATABASE_URL=database_url,
        NATS_URL=nats_url,
        VOXGUARD_VAR_DIR=str(workdir / "var"),
        VOXGUARD_LOG_LEVEL="INFO",
        VOXGUARD_LOG_FORMAT="console",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p),
    )
    return env
