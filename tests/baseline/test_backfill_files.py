"""Backfill from flow archives: a shared router capture, a pcap of softflowd's exports and an
nfcapd file written by the real nfcapd, all bucketed by the flows' own timestamps."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dpkt
import pytest

from vghelpers import ethernet_frame
from voxguard.baseline.flowfiles import FlowFileError, backfill_files, read_nfcapd
from voxguard.baseline.store import BaselineStore
from voxguard.cli.decode_cmd import decode_file
from voxguard.ingest.pcapio import write_pcap
from voxguard.shared.config import parse_config
from voxguard.shared.db import make_engine

MX80 = parse_config(
    {
        "exporters": [{"name": "mx80", "address": "192.0.2.11"}],
        "tiers": {
            "api": {
                "exporters": ["mx80"],
                "per_host": False,
                "components": [{"name": "web", "addresses": ["192.168.0.0/30"]}],
                "monitors": [{"protocol": "tcp", "ports": 80}, {"protocol": "tcp", "ports": 443}],
            }
        },
    }
)
SOFTFLOWD = parse_config(
    {
        "exporters": [{"name": "softflowd", "address": "127.0.0.1"}],
        "tiers": {
            "sbc": {
                "exporters": ["softflowd"],
                "per_host": False,
                "components": [{"name": "sbc-a", "addresses": ["203.0.113.10/32"]}],
                "monitors": [{"protocol": "udp", "ports": 5060}, {"protocol": "tcp", "ports": 5061}],
            }
        },
    }
)
T_PCAP = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC: when the sniffed packets were "seen"


@pytest.fixture
def store(db_url: str) -> Any:
    engine = make_engine(db_url)
    s = BaselineStore(engine)
    s.migrate()
    yield s
    engine.dispose()


def test_shared_netflow5_capture_uses_flow_times(store: BaselineStore, shared_dir: Path) -> None:
    capture = shared_dir / "data" / "captures" / "nf5_juniper_mx80.pcap"
    records, _ = decode_file(capture)
    expected: dict[tuple[int, int], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for r in records:
        if r["destinationIPv4Address"].startswith("192.168.0.") and r["destinationTransportPort"] in (80, 443):
            assert r["flowStartMilliseconds"] // 60000 == r["flowEndMilliseconds"] // 60000  # one minute each
            key = (r["destinationTransportPort"], r["flowStartMilliseconds"] // 60000 * 60)
            expected[key][0] += r["packetDeltaCount"] * r["samplingInterval"]
            expected[key][1] += r["octetDeltaCount"] * r["samplingInterval"]
    assert expected

    report = backfill_files(MX80, store, None, [capture])
    assert report.rows > 0 and report.skipped_files == []
    assert report.start is not None and report.start.year == 2016  # the flows' time, not the capture's
    names = {t.name: t.id for t in store.targets()}
    got: dict[tuple[int, int], list[float]] = {}
    for port in (80, 443):
        raw = store.minute_sums(names[f"web tcp/{port}"], report.start, report.end or report.start)
        for m, p, b in zip(raw["minutes"].tolist(), raw["packets"].tolist(), raw["bytes"].tolist(), strict=True):
            if p:
                got[(port, m)] = [p, b]
        assert set(raw["seconds"].tolist()) == {60.0}  # the covered range counts as observed
    assert got == {k: v for k, v in expected.items()}

    # without the exporter in the config nothing matches, unless asked to ignore exporters
    other = parse_config({**MX80.model_dump(mode="json"), "exporters": [{"name": "mx80", "address": "192.0.2.99"}]})
    assert backfill_files(other, store, None, [capture]).classified == 0
    assert backfill_files(other, store, None, [capture], any_exporter=True).classified > 0


def _traffic_pcap(path: Path) -> None:
    """Three minutes of SIP (10 packets of 500 B a minute) and 4 TLS SYNs in minute 1."""
    w = dpkt.pcap.Writer(path.open("wb"))
    for m in range(3):
        for i in range(10):
            w.writepkt(ethernet_frame(f"198.18.1.{i + 1}", "203.0.113.10", 6000 + m, 5060, 500), T_PCAP + m * 60 + i)
    for i in range(4):
        w.writepkt(ethernet_frame(f"198.18.3.{i + 1}", "203.0.113.10", 50000 + i, 5061, 40, 6, 0x02), T_PCAP + 65 + i)
    w.close()


def _run_softflowd(need_tool: Callable[[str], Path], pcap: Path, port: int) -> None:
    proc = subprocess.run(
        [str(need_tool("softflowd")), "-r", str(pcap), "-n", f"127.0.0.1:{port}", "-v", "9", "-D"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-300:]


def _check_sbc_minutes(store: BaselineStore, first: dt.datetime) -> None:
    names = {t.name: t.id for t in store.targets()}
    sip = store.minute_sums(names["sbc-a udp/5060"], first, first + dt.timedelta(minutes=10))
    assert sip["packets"].tolist() == [10.0, 10.0, 10.0]
    assert sip["bytes"].tolist() == [5000.0, 5000.0, 5000.0]
    assert sip["flows"].tolist() == [10.0, 10.0, 10.0]
    tls = store.minute_sums(names["sbc-a tcp/5061"], first, first + dt.timedelta(minutes=10))
    assert tls["new_connections"].sum() == 4.0 and tls["odd_size_packets"].sum() == 4.0


def test_pcap_of_softflowd_exports(store: BaselineStore, tmp_path: Path, need_tool: Callable[[str], Path]) -> None:
    """softflowd exports over loopback are captured (arrival = now) and backfilled: the minutes
    are the flows' own (v9 first/last switched against the header's sysUptime and unix secs;
    softflowd reading a pcap puts them days before the capture was written), not arrival."""
    _traffic_pcap(tmp_path / "voip.pcap")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    port = sock.getsockname()[1]
    try:
        _run_softflowd(need_tool, tmp_path / "voip.pcap", port)
        frames = []
        while True:
            try:
                data = sock.recv(65535)
            except TimeoutError:
                break
            udp = dpkt.udp.UDP(sport=40000, dport=port, data=data)
            udp.ulen = len(udp)
            ip = dpkt.ip.IP(src=socket.inet_aton("127.0.0.1"), dst=socket.inet_aton("127.0.0.1"), p=17, data=udp)
            ip.len = len(ip)
            frames.append((time.time(), bytes(dpkt.ethernet.Ethernet(type=0x0800, data=ip))))
            sock.settimeout(1)
    finally:
        sock.close()
    assert frames
    write_pcap(tmp_path / "exports.pcap", frames)

    report = backfill_files(SOFTFLOWD, store, None, [tmp_path / "exports.pcap"])
    assert report.classified == 34
    records, _ = decode_file(tmp_path / "exports.pcap")
    first_ms = min(r["flowStartMilliseconds"] for r in records if r.get("flowStartMilliseconds"))
    assert report.start == dt.datetime.fromtimestamp(first_ms // 60000 * 60, dt.UTC)
    # far from the arrival time, on either side: softflowd dates a pcap's flows from the machine's
    # uptime, so where they land moves with it (weeks in the future on a freshly booted machine)
    assert abs(frames[0][0] - first_ms / 1000) > 3600
    _check_sbc_minutes(store, report.start)


def test_nfcapd_file(store: BaselineStore, tmp_path: Path, need_tool: Callable[[str], Path]) -> None:
    nfcapd, nfdump = need_tool("nfcapd"), need_tool("nfdump")
    _traffic_pcap(tmp_path / "voip.pcap")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    flowdir = tmp_path / "flows"
    flowdir.mkdir()
    proc = subprocess.Popen(
        [str(nfcapd), "-b", "127.0.0.1", "-p", str(port), "-w", str(flowdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(1.0)
        _run_softflowd(need_tool, tmp_path / "voip.pcap", port)
        time.sleep(1.0)
    finally:
        proc.terminate()  # nfcapd writes its file on SIGTERM
        proc.wait(10)
    files = sorted(flowdir.glob("nfcapd.*"))
    assert files, "nfcapd wrote no file"
    flows = [f for d in read_nfcapd(files[0], str(nfdump)) for f in d.flows]
    assert len(flows) == 34

    report = backfill_files(SOFTFLOWD, store, None, files)
    assert report.skipped_files == [] and report.classified == 34
    # nfcapd derives absolute times from softflowd's header (weeks away from today, by an offset
    # that depends on the date); whatever they are, they are the flows' times from the file, not
    # the time the file was read
    assert report.start is not None
    assert report.start == dt.datetime.fromtimestamp(min(int(f["start_ms"]) for f in flows) // 60000 * 60, dt.UTC)
    assert abs(dt.datetime.now(dt.UTC) - report.start) > dt.timedelta(days=1)
    _check_sbc_minutes(store, report.start)


def test_unreadable_files_are_reported(store: BaselineStore, tmp_path: Path, need_tool: Callable[[str], Path]) -> None:
    need_tool("nfdump")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"this is not an archive" * 10)
    report = backfill_files(SOFTFLOWD, store, None, [junk])
    assert report.rows == 0 and len(report.skipped_files) == 1 and "junk.bin" in report.skipped_files[0]
    with pytest.raises(FlowFileError):
        list(read_nfcapd(junk))


def test_engine_is_fitted_and_state_saved(store: BaselineStore, shared_dir: Path, fake_engine: Any) -> None:
    capture = shared_dir / "data" / "captures" / "nf5_juniper_mx80.pcap"
    eng = fake_engine()
    report = backfill_files(MX80, store, eng, [capture])
    assert report.fitted == 2 and set(eng.history) == {t.id for t in store.targets()}
    _, values = next(iter(eng.history.values()))
    assert "distinct_sources" not in values and "packets" in values  # not rebuildable from flows
    assert store.load_state() is not None


CATCH_ALL = parse_config(
    {
        "tiers": {
            "api": {
                "per_host": False,
                "components": [{"name": "everything", "addresses": ["0.0.0.0/0", "::/0"]}],
                "monitors": [{"protocol": "any"}],
            }
        },
    }
)


@pytest.mark.parametrize(
    "name",
    ["nf9_cisco_pmacct_101", "nf9_cisco_pmacct_102_sampling", "ipfix_cisco_pmacct_100", "nf5_juniper_mx80",
     "sflow_akvorado_mixed"],
)  # fmt: skip
def test_shared_captures_every_format(store: BaselineStore, shared_dir: Path, name: str) -> None:
    """v5, v9 (with sampling), IPFIX and sFlow: the buckets hold every sampled-scaled packet of the
    capture, in the minutes of the flows' own start times (sFlow: the sample's capture time)."""
    capture = shared_dir / "data" / "captures" / f"{name}.pcap"
    report = backfill_files(CATCH_ALL, store, None, [capture])
    assert report.skipped_files == [] and report.classified == report.flows > 0
    tid = store.targets()[0].id
    assert report.start is not None and report.end is not None
    raw = store.minute_sums(tid, report.start, report.end)
    from voxguard.ingest.decode.netflow import NetflowDecoder
    from voxguard.ingest.decode.sflow import SflowDecoder
    from voxguard.ingest.pcapio import iter_udp_payloads
    from voxguard.ingest.pipeline import is_sflow

    nf, sf = NetflowDecoder(), SflowDecoder()
    total = 0.0
    starts: set[int] = set()
    for dg in iter_udp_payloads(capture):
        batch = (sf if is_sflow(dg.payload) else nf).decode_batch([(dg.payload, dg.src)], now=dg.timestamp)
        f = batch.flows
        total += float((f["packets"].astype(float) * f["sampling"].clip(min=1)).sum())
        starts |= {int(ms) // 60000 * 60 if ms else int(dg.timestamp) // 60 * 60 for ms in f["start_ms"].tolist()}
    assert raw["packets"].sum() == pytest.approx(total)
    assert min(starts) == raw["minutes"][0]
    assert starts <= set(raw["minutes"].tolist())
