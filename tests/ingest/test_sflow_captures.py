"""The sFlow decoder against real captures and tshark (the decoder oracle of design section 7).

The reference decodes (``NAME.tshark.jsonl``, one line per sample) were produced by
``tshark_reference.py`` next to the captures; a live tshark run checks encoder output too.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vghelpers import need_tool, require
from voxguard.ingest.decode.flows import SipFlag, SipMethod, empty_flows, halves_to_addr
from voxguard.ingest.decode.sflow import SflowDecoder
from voxguard.ingest.encode.sflow import SflowEncoder, sip_request
from voxguard.ingest.pcapio import iter_udp_payloads, write_pcap

CAPTURES = ("sflow_akvorado_mixed", "sflow_ipv6_agent_tcpdump")


def _repo_root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    raise RuntimeError("pyproject.toml not found above the tests")


def captures_dir() -> Path:
    """``$VOXGUARD_SHARED_DIR/data/captures`` (default ``<repo>/../shared``); skip when missing."""
    shared = Path(os.environ.get("VOXGUARD_SHARED_DIR") or _repo_root().parent / "shared")
    d = shared / "data" / "captures"
    require((d / "manifest.json").is_file(), f"shared captures not found at {d} (set VOXGUARD_SHARED_DIR)")
    return d


def load(name: str) -> tuple[list[tuple[bytes, str]], list[dict[str, Any]], dict[str, Any]]:
    d = captures_dir()
    datagrams = [(dg.payload, dg.src) for dg in iter_udp_payloads(d / f"{name}.pcap")]
    ref = [json.loads(line) for line in (d / f"{name}.tshark.jsonl").read_text().splitlines() if line]
    manifest = {m["file"]: m for m in json.loads((d / "manifest.json").read_text())}[f"{name}.pcap"]
    return datagrams, ref, manifest


def _key(sample_type: str, seq: int, source_index: int) -> tuple[str, int, int]:
    return sample_type, seq, source_index


def _ref_key(line: dict[str, Any]) -> tuple[str, int, int]:
    f = line["sample_fields"]
    if "counters" in line["sample"]:
        seq = int(f["sflow.counters_sample.sequence_number"])
        idx = int(f["sflow.counters_sample.source_id_index"])
    else:
        seq = int(f["sflow.flow_sample.sequence_number"])
        idx = int(f.get("sflow.flow_sample.source_id_index", f.get("sflow.flow_sample.index", -1)))
    return _key(line["sample"], seq, idx)


@pytest.mark.parametrize("name", CAPTURES)
def test_sample_counts_match_tshark(name: str) -> None:
    datagrams, ref, manifest = load(name)
    assert len(datagrams) == manifest["flow_export_datagrams"]
    batch = SflowDecoder().decode_batch(datagrams, want_records=True)
    assert batch.records is not None
    assert [r.error for r in batch.reports] == [None] * len(datagrams)
    mine = Counter(r["sampleType"] for r in batch.records)
    assert mine == Counter(line["sample"] for line in ref)
    assert dict(mine) == manifest["sflow_sample_types"]
    flows = sum(n for t, n in mine.items() if "flow" in t and "counters" not in t)
    counters = sum(n for t, n in mine.items() if "counters" in t)
    assert (flows, counters) == (manifest["sflow_flow_samples"], manifest["sflow_counter_samples"])
    assert len(batch.flows) == flows == sum(r.flow_records for r in batch.reports)
    assert counters == sum(r.counter_records for r in batch.reports)
    assert len(batch.samples) == sum(len(line.get("headers", [])) for line in ref)


@pytest.mark.parametrize("name", CAPTURES)
def test_samples_match_tshark(name: str) -> None:
    datagrams, ref, _ = load(name)
    batch = SflowDecoder().decode_batch(datagrams, want_records=True)
    assert batch.records is not None
    by_frame: dict[int, dict[tuple[str, int, int], dict[str, Any]]] = {}
    for rec in batch.records:
        key = _key(rec["sampleType"], rec["sampleSequenceNumber"], rec["sourceIdIndex"])
        by_frame.setdefault(rec["datagramIndex"] + 1, {})[key] = rec
    flow_row = {id(r): i for i, r in enumerate(r for r in batch.records if "counters" not in r["sampleType"])}
    checked_headers = 0
    for line in ref:
        rec = by_frame[line["frame"]].pop(_ref_key(line))
        report = batch.reports[line["frame"] - 1]
        assert rec["exporter"] == line["exporter"] == report.exporter
        assert rec["agent"] == line["agent"] == report.agent
        assert rec["observationDomainId"] == line["sub_agent_id"] == report.domain
        assert rec["datagramSequenceNumber"] == line["datagram_seq"] == report.sequence
        f = line["sample_fields"]
        if "counters" in line["sample"]:
            generic = [r["fields"] for r in line["records"] if r["format"] == 1]
            if generic:
                ifc = rec["interfaceCounters"]
                assert ifc["ifIndex"] == int(generic[0]["sflow_245.ifindex"])
                assert ifc["ifInOctets"] == int(generic[0]["sflow_245.ifinoct"])
                assert ifc["ifOutOctets"] == int(generic[0]["sflow_245.ifoutoct"])
            continue
        assert rec["samplingInterval"] == line["sampling_rate"]
        assert rec["samplePool"] == int(f["sflow.flow_sample.sample_pool"])
        assert rec["droppedPacketCount"] == int(f["sflow.flow_sample.dropped_packets"])
        inp = f.get("sflow.flow_sample.input_interface", f.get("sflow.flow_sample.input_interface_value"))
        assert rec["ingressInterface"] == int(inp)
        switch = [r["fields"] for r in line["records"] if r["format"] == 1001]
        if switch and int(switch[0]["sflow_245.vlan.in"]) < 4096 and "vlans" not in line.get("headers", [{}])[0]:
            assert rec["vlanId"] == int(switch[0]["sflow_245.vlan.in"])
        row = batch.flows[flow_row[id(rec)]]
        assert int(row["sampling"]) == line["sampling_rate"]
        assert int(row["packets"]) == 1
        assert int(row["datagram_ix"]) == line["frame"] - 1
        for h in line.get("headers", []):
            checked_headers += 1
            assert rec["headerProtocol"] == h["header_protocol"]
            assert rec["dataLinkFrameSize"] == h["frame_length"] == int(row["bytes"])
            v = "IPv6" if h["l3"] == "ipv6" else "IPv4"
            assert rec[f"source{v}Address"] == h["src_addr"] == halves_to_addr(row["src_hi"], row["src_lo"])
            assert rec[f"destination{v}Address"] == h["dst_addr"] == halves_to_addr(row["dst_hi"], row["dst_lo"])
            assert int(row["ip_version"]) == (6 if v == "IPv6" else 4)
            assert rec["protocolIdentifier"] == h["protocol"] == int(row["proto"])
            assert int(row["src_port"]) == h.get("src_port", 0)
            assert int(row["dst_port"]) == h.get("dst_port", 0)
            if "tcp_flags" in h:
                assert rec["tcpControlBits"] == int(h["tcp_flags"], 16) & 0xFF == int(row["tcp_flags"])
            vlans = [rec[k] for k in ("dot1qVlanId", "dot1qCustomerVlanId") if k in rec]
            assert vlans == h.get("vlans", [])
            assert int(row["sip_method"]) == 0  # no SIP in these captures (tshark agrees)
            assert not h["sip"]
    assert checked_headers == len(batch.samples)
    assert all(not left for left in by_frame.values()), "decoded samples tshark does not have"


def test_icmp_and_mac_details_of_the_mixed_capture() -> None:
    """Values the reference lines do not carry, checked against tshark's own dissection."""
    datagrams, _, _ = load("sflow_akvorado_mixed")
    batch = SflowDecoder().decode_batch(datagrams, want_records=True)
    assert batch.records is not None
    icmp = [
        (r["datagramIndex"], r.get("icmpTypeIPv4"), r.get("icmpTypeIPv6"))
        for r in batch.records
        if r.get("protocolIdentifier") in (1, 58)
    ]
    # tshark -e icmp.type -e icmpv6.type: frame 3 echo request, frame 4 neighbour solicitation,
    # frame 8 two echo replies (raw IPv4 headers, header_protocol 11).
    assert icmp == [(2, 8, None), (3, None, 135), (7, 0, None), (7, 0, None)]
    ext = next(r for r in batch.records if r["datagramIndex"] == 6)
    assert ext["sourceMacAddress"] == "00:fe:c8:99:05:47"  # sflow_245.ethernet.source_mac_address
    assert ext["postVlanId"] == 3001


def _udp_frame(payload: bytes, src: str = "192.0.2.10", dst: str = "192.0.2.254", dport: int = 6343) -> bytes:
    import ipaddress

    ip = struct.pack(
        ">BBHHHBBH4s4s",
        0x45,
        0,
        28 + len(payload),
        1,
        0,
        64,
        17,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    udp = struct.pack(">HHHH", 50000, dport, 8 + len(payload), 0)
    return b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00" + ip + udp + payload


def _tshark() -> str:
    return str(need_tool("tshark"))


def _tshark_fields(path: Path, *fields: str) -> list[list[str]]:
    cmd = [_tshark(), "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def test_live_tshark_reads_the_capture_like_the_decoder() -> None:
    """Run tshark now on a shared capture and compare sampled addresses and agent, datagram by datagram."""
    d = captures_dir()
    path = d / "sflow_ipv6_agent_tcpdump.pcap"
    rows = _tshark_fields(path, "sflow_245.agent.v6", "sflow_245.sequence_number", "ip.src", "ip.dst")
    datagrams = [(dg.payload, dg.src) for dg in iter_udp_payloads(path)]
    batch = SflowDecoder().decode_batch(datagrams)
    assert len(rows) == len(batch.reports)
    for i, (agent, seq, src, dst) in enumerate(rows):
        assert batch.reports[i].agent == agent
        assert batch.reports[i].sequence == int(seq)
        mine = batch.flows[batch.flows["datagram_ix"] == i]
        assert [halves_to_addr(r["src_hi"], r["src_lo"]) for r in mine] == [x for x in src.split(",") if x]
        assert [halves_to_addr(r["dst_hi"], r["dst_lo"]) for r in mine] == [x for x in dst.split(",") if x]


def test_live_tshark_agrees_with_encoder_and_decoder(tmp_path: Path) -> None:
    """Encoder output (with a SIP INVITE inside a sampled header) read by tshark and by the decoder."""
    tshark = _tshark()
    flows = empty_flows(3)
    from voxguard.ingest.decode.flows import addr_to_halves

    spec = [
        ("198.51.100.7", "203.0.113.10", 17, 5060, 5060),
        ("2001:db8::7", "2001:db8::10", 6, 40001, 5061),
        ("198.51.100.8", "203.0.113.10", 1, 0, 0),
    ]
    for row, (s, dst, proto, sp, dp) in zip(flows, spec, strict=True):
        row["src_hi"], row["src_lo"] = addr_to_halves(s)
        row["dst_hi"], row["dst_lo"] = addr_to_halves(dst)
        row["proto"], row["src_port"], row["dst_port"], row["bytes"], row["sampling"] = (
            proto,
            sp,
            dp,
            700,
            2048,
        )
    flows[0]["bytes"] = 0  # the natural length: the whole INVITE fits in the sampled header
    flows[1]["tcp_flags"] = 0x02
    flows[2]["icmp_type"] = 8
    invite = sip_request(user_agent="friendly-scanner")
    enc = SflowEncoder("192.0.2.10", sub_agent_id=7, header_bytes=1500, vlans=(100,))
    dgrams = enc.flow_datagrams(flows, [invite, None, None])
    path = tmp_path / "enc.pcap"
    write_pcap(path, [(1_700_000_000.0 + i, _udp_frame(d)) for i, d in enumerate(dgrams)])
    cmd = [tshark, "-n", "-r", str(path), "-T", "json", "--no-duplicate-keys"]
    pkts = json.loads(subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout)
    text = json.dumps(pkts)
    assert '"sflow_245.sampling_rate": "2048"' in text or '"sflow.flow_sample.sampling_rate": "2048"' in text
    for token in (
        '"ip.src": "198.51.100.7"',
        '"ipv6.src": "2001:db8::7"',
        '"udp.dstport": "5060"',
        '"tcp.dstport": "5061"',
        '"icmp.type": "8"',
        '"vlan.id": "100"',
        '"sip.Method": "INVITE"',
        '"sip.User-Agent": "friendly-scanner"',
    ):
        assert token in text, token
    batch = SflowDecoder().decode_batch([(d, "192.0.2.10") for d in dgrams], want_records=True)
    assert batch.records is not None
    assert [r.error for r in batch.reports] == [None]
    assert int(batch.flows[0]["sip_method"]) == SipMethod.INVITE
    assert int(batch.flows[0]["sip_flags"]) == SipFlag.SCANNER_UA | SipFlag.SDP | SipFlag.CALL_ID
    lengths = [int(x) for x in _tshark_fields(path, "sflow_245.header.frame_length")[0][0].split(",")]
    assert lengths == batch.flows["bytes"].tolist()
    assert lengths[1:] == [700, 700]
    assert batch.records[0]["sip"]["userAgent"] == "friendly-scanner"
    assert np.array_equal(batch.flows["tcp_flags"], [0, 2, 0])
    assert [r["vlanId"] for r in batch.records] == [100, 100, 100]
