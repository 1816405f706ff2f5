"""Real captures vs tshark: same records, same values (the stored reference and a live run)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from voxguard.ingest.decode.base import DecodeBatch
from voxguard.ingest.decode.flows import halves_to_addr
from voxguard.ingest.decode.netflow import NetflowDecoder

try:
    from . import test_netflow_helpers as h
except ImportError:  # tests/ingest is not a package: pytest put it on sys.path
    import test_netflow_helpers as h  # type: ignore[no-redef]

CAPTURES = [
    "nf5_juniper_mx80",
    "nf9_cisco_pmacct_101",
    "nf9_cisco_pmacct_102_sampling",
    "nf9_cisco_asr9k_options",
    "nf9_cisco_asa_nsel",
    "nf9_paloalto_panos",
    "nf9_softflowd_ipv6",
    "nf9_akvorado_multiplesamplingrates",
    "ipfix_cisco_pmacct_100",
    "ipfix_cisco_pmacct_104_ipv6_sampling",
    "ipfix_cisco_pmacct_401_mpls_bulk",
    "ipfix_citrix_netscaler",
    "ipfix_mikrotik",
    "ipfix_ipfixprobe_biflow",
]


# -- how tshark's text compares to our JSON values ----------------------------------------------------
def _int(t: str) -> int:
    return int(t, 0)


def _addr(t: str) -> str:
    return str(ipaddress.ip_address(t))


def _hex(t: str) -> str:
    return t.replace(":", "").lower()


def _abs_ms(t: str) -> int:
    """tshark's 'Oct  9, 2015 09:47:47.569000000 UTC' -> unix ms (rounded, as NTP times are)."""
    date, frac = t.replace(" UTC", "").rsplit(".", 1)
    dt = datetime.strptime(" ".join(date.split()), "%b %d, %Y %H:%M:%S").replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1000 + (int(frac.ljust(9, "0")[:9]) + 500_000) // 1_000_000


def _rel_ms(t: str) -> int:
    """tshark's relative '1098319.359000000' seconds -> ms."""
    secs, frac = t.split(".")
    return int(secs) * 1000 + int(frac[:3])


def _ours_hex(v: Any) -> str:
    return v if isinstance(v, str) else format(v, "x")


def _mpls(part: str) -> Callable[[Any], int]:
    def get(v: Any) -> int:
        x = int(v, 16)
        return {"label": x >> 4, "exp": (x >> 1) & 7, "bos": x & 1}[part]

    return get


_MPLS = tuple(
    ["mplsTopLabelStackSection"] + [f"mplsLabelStackSection{i}" for i in range(2, 11)]
)  # sections of 3 bytes: label(20) exp(3) bos(1)

# tshark cflow.* name -> (our IE names it may come from, tshark text -> value, our value -> value)
IDENT = lambda v: v  # noqa: E731
MAPPING: dict[str, tuple[tuple[str, ...], Callable[[str], Any], Callable[[Any], Any]]] = {
    "cflow.srcaddr": (("sourceIPv4Address",), _addr, IDENT),
    "cflow.dstaddr": (("destinationIPv4Address",), _addr, IDENT),
    "cflow.srcaddrv6": (("sourceIPv6Address",), _addr, IDENT),
    "cflow.dstaddrv6": (("destinationIPv6Address",), _addr, IDENT),
    "cflow.srcport": (("sourceTransportPort",), _int, IDENT),
    "cflow.dstport": (("destinationTransportPort",), _int, IDENT),
    "cflow.protocol": (("protocolIdentifier",), _int, IDENT),
    "cflow.octets": (("octetDeltaCount",), _int, IDENT),
    "cflow.packets": (("packetDeltaCount",), _int, IDENT),
    "cflow.permanent_octets": (("octetTotalCount",), _int, IDENT),
    "cflow.tcpflags": (("tcpControlBits",), _int, IDENT),
    "cflow.tos": (("ipClassOfService",), _int, IDENT),
    "cflow.inputint": (("ingressInterface",), _int, IDENT),
    "cflow.outputint": (("egressInterface",), _int, IDENT),
    "cflow.srcas": (("bgpSourceAsNumber",), _int, IDENT),
    "cflow.dstas": (("bgpDestinationAsNumber",), _int, IDENT),
    "cflow.peer_srcas": (("bgpPrevAdjacentAsNumber",), _int, IDENT),
    "cflow.peer_dstas": (("bgpNextAdjacentAsNumber",), _int, IDENT),
    "cflow.srcmask": (("sourceIPv4PrefixLength",), _int, IDENT),
    "cflow.dstmask": (("destinationIPv4PrefixLength",), _int, IDENT),
    "cflow.srcmaskv6": (("sourceIPv6PrefixLength",), _int, IDENT),
    "cflow.dstmaskv6": (("destinationIPv6PrefixLength",), _int, IDENT),
    "cflow.nexthop": (("ipNextHopIPv4Address",), _addr, IDENT),
    "cflow.nexthopv6": (("ipNextHopIPv6Address",), _addr, IDENT),
    "cflow.bgpnexthop": (("bgpNextHopIPv4Address",), _addr, IDENT),
    "cflow.bgpnexthopv6": (("bgpNextHopIPv6Address",), _addr, IDENT),
    "cflow.direction": (("flowDirection",), _int, IDENT),
    "cflow.ip_version": (("ipVersion",), _int, IDENT),
    "cflow.ipv6flowlabel": (("flowLabelIPv6",), _int, IDENT),
    "cflow.ipv6_exthdr": (("ipv6ExtensionHeaders",), _int, IDENT),
    "cflow.ttl_min": (("minimumTTL",), _int, IDENT),
    "cflow.ttl_max": (("maximumTTL",), _int, IDENT),
    "cflow.vlanid": (("vlanId",), _int, IDENT),
    "cflow.dot1q_vlan_id": (("dot1qVlanId",), _int, IDENT),
    "cflow.dot1q_customer_vlan_id": (("dot1qCustomerVlanId",), _int, IDENT),
    "cflow.dot1q_priority": (("dot1qPriority",), _int, IDENT),
    "cflow.srcmac": (("sourceMacAddress", "postSourceMacAddress"), str.lower, IDENT),
    "cflow.dstmac": (("destinationMacAddress", "postDestinationMacAddress"), str.lower, IDENT),
    "cflow.ethernet_type": (("ethernetType",), _int, IDENT),
    "cflow.forwarding_status": (("forwardingStatus",), _int, lambda v: v >> 6),
    "cflow.flow_end_reason": (("flowEndReason",), _int, IDENT),
    "cflow.frag_ident": (("fragmentIdentification",), _int, IDENT),
    "cflow.icmp_type_code_ipv4": (("icmpTypeCodeIPv4",), _int, IDENT),
    "cflow.icmp_ipv4_type": (("icmpTypeIPv4",), _int, IDENT),
    "cflow.icmp_ipv4_code": (("icmpCodeIPv4",), _int, IDENT),
    "cflow.icmp_ipv6_type": (("icmpTypeIPv6", "icmpTypeCodeIPv6>>8"), _int, IDENT),
    "cflow.icmp_ipv6_code": (("icmpCodeIPv6", "icmpTypeCodeIPv6&255"), _int, IDENT),
    "cflow.ingress_vrfid": (("ingressVRFID",), _int, IDENT),
    "cflow.egress_vrfid": (("egressVRFID",), _int, IDENT),
    "cflow.vrfname": (("VRFname",), IDENT, IDENT),
    "cflow.if_name": (("interfaceName",), IDENT, IDENT),
    "cflow.if_descr": (("interfaceDescription",), IDENT, IDENT),
    "cflow.sampler_id": (("samplerId",), _int, IDENT),
    "cflow.sampler_mode": (("samplerMode",), _int, IDENT),
    "cflow.sampler_random_interval": (("samplerRandomInterval",), _int, IDENT),
    "cflow.sampling_interval": (("samplingInterval",), _int, IDENT),
    "cflow.sampler_name": (("samplerName",), IDENT, IDENT),
    "cflow.selector_id": (("selectorId",), _int, IDENT),
    "cflow.selector_algorithm": (("selectorAlgorithm",), _int, IDENT),
    "cflow.selector_name": (("selectorName",), IDENT, IDENT),
    "cflow.sampling_packet_interval": (("samplingPacketInterval",), _int, IDENT),
    "cflow.sampling_size": (("samplingSize",), _int, IDENT),
    "cflow.sampling_population": (("samplingPopulation",), _int, IDENT),
    "cflow.scope_system": (("scopeSystem",), _hex, IDENT),
    "cflow.flow_id": (("flowId",), _int, IDENT),
    "cflow.firewall_event": (("firewallEvent", "fwEvent"), _int, IDENT),
    "cflow.fw_ext_event": (("fwExtEvent",), _int, IDENT),
    "cflow.ingress_acl_id": (("ingressAclId",), _hex, IDENT),
    "cflow.egress_acl_id": (("egressAclId",), _hex, IDENT),
    "cflow.aaa_username": (("aaaUsername",), IDENT, IDENT),
    "cflow.post_natsource_ipv4_address": (
        ("postNATSourceIPv4Address", "xlateSourceIPv4Address"),
        _addr,
        IDENT,
    ),
    "cflow.post_natdestination_ipv4_address": (
        ("postNATDestinationIPv4Address", "xlateDestinationIPv4Address"),
        _addr,
        IDENT,
    ),
    "cflow.post_naptsource_transport_port": (
        ("postNAPTSourceTransportPort", "xlateSourceTransportPort"),
        _int,
        IDENT,
    ),
    "cflow.post_naptdestination_transport_port": (
        ("postNAPTDestinationTransportPort", "xlateDestinationTransportPort"),
        _int,
        IDENT,
    ),
    "cflow.observation_time_milliseconds": (("observationTimeMilliseconds",), _abs_ms, IDENT),
    "cflow.abstimestart": (("flowStartMilliseconds",), _abs_ms, IDENT),
    "cflow.abstimeend": (("flowEndMilliseconds",), _abs_ms, IDENT),
    "cflow.sys_init_time": (("systemInitTimeMilliseconds",), _abs_ms, IDENT),
    "cflow.timestart": (("flowStartSysUpTime",), _rel_ms, IDENT),
    "cflow.timeend": (("flowEndSysUpTime",), _rel_ms, IDENT),
    "cflow.delta_octets_squared": (("octetDeltaSumOfSquares",), _int, IDENT),
    "cflow.mpls_top_label_prefix_length": (("mplsTopLabelPrefixLength",), _int, IDENT),
    "cflow.mpls_vpn_rd": (("mplsVpnRouteDistinguisher",), _hex, IDENT),
    "cflow.toplabeladdr": (("mplsTopLabelIPv4Address",), _addr, IDENT),
    "cflow.toplabeladdr_v6": (("mplsTopLabelIPv6Address",), _addr, IDENT),
    "cflow.toplabeltype": (("mplsTopLabelType",), _int, IDENT),
    "cflow.mpls_label": (_MPLS, _int, _mpls("label")),
    "cflow.mpls_exp": (_MPLS, _int, _mpls("exp")),
    "cflow.mpls_bos": (_MPLS, _int, _mpls("bos")),
    "cflow.observation_point_id": (("observationPointId",), _int, IDENT),
    "cflow.private_enterprise_number": (("privateEnterpriseNumber",), _int, IDENT),
    "cflow.od_id": (("observationDomainId",), _int, IDENT),
    "cflow.flow_exporter": (("exportingProcessId",), _int, IDENT),
    "cflow.unknown_field_type": (("v9Field56701", "v9Field56702"), _hex, IDENT),
}
# tshark fields with no element of their own: derived values, padding, length prefixes, and the
# NetScaler enterprise elements (PEN 5951), which we name e5951f<id> and only check by count.
NOT_COMPARED = {
    "cflow.timedelta",
    "cflow.padding",
    "cflow.string_len_short",
    "cflow.string_len_long",
    "cflow.forwarding_status_consume_code",
    "cflow.forwarding_status_forward_code",
    "cflow.forwarding_status_unknown_code",
    "cflow.enterprise_private_entry",
}


def _values(rec: dict[str, Any], names: tuple[str, ...]) -> list[Any]:
    out: list[Any] = []
    for n in names:
        if ">>" in n or "&" in n:  # tshark splits icmpTypeCodeIPv6 into type and code
            base = n.split(">>")[0].split("&")[0]
            if base in rec:
                out.append(rec[base] >> 8 if ">>" in n else rec[base] & 255)
            continue
        # tshark shows RFC 5103 reverse elements (PEN 29305) under the forward element's name
        for key in (n, "reverse" + n[0].upper() + n[1:]):
            v = rec.get(key)
            if v is not None:
                out.extend(v if isinstance(v, list) else [v])
    return out


@pytest.fixture(scope="module")
def captures(shared_dir: Path) -> Path:
    return h.captures_dir(shared_dir)


@pytest.fixture(scope="module")
def decoded(captures: Path) -> dict[str, tuple[DecodeBatch, list[dict[str, Any]]]]:
    d = captures
    out = {}
    for name in CAPTURES:
        batch = NetflowDecoder().decode_batch(h.udp_payloads(d / f"{name}.pcap"), want_records=True, now=0.0)
        ref = [json.loads(line) for line in (d / f"{name}.tshark.jsonl").read_text().splitlines()]
        out[name] = (batch, ref)
    return out


@pytest.mark.parametrize("name", CAPTURES)
def test_same_records_as_tshark(name: str, decoded: dict[str, Any]) -> None:
    batch, ref = decoded[name]
    assert batch.records is not None
    assert [r["recordType"] for r in batch.records] == [r["kind"] for r in ref]
    assert sum(r.flow_records for r in batch.reports) == sum(r["kind"] == "flow" for r in ref)
    assert sum(r.options_records for r in batch.reports) == sum(r["kind"] == "options" for r in ref)
    assert len(batch.flows) == sum(r["kind"] == "flow" for r in ref)


@pytest.mark.parametrize("name", CAPTURES)
def test_field_values_match_tshark(name: str, decoded: dict[str, Any]) -> None:
    batch, ref = decoded[name]
    compared = 0
    unmapped: set[str] = set()
    for ours, theirs in zip(batch.records, ref, strict=True):
        assert ours["templateId"] == theirs["set_id"] or theirs["set_id"] is None
        for key, text in theirs["fields"].items():
            if key in NOT_COMPARED or key.startswith("cflow.pie."):
                continue
            if key not in MAPPING:
                unmapped.add(key)
                continue
            names, conv_theirs, conv_ours = MAPPING[key]
            expect = {conv_theirs(t) for t in (text if isinstance(text, list) else [text])}
            got = {conv_ours(v) for v in _values(ours, names)}
            assert got == expect, f"{name} record {ours.get('templateId')}: {key} {text!r} vs {names} {got}"
            compared += 1
    assert not unmapped, f"tshark fields without a mapping: {sorted(unmapped)}"
    assert compared > 0


def _expected_sampling(ref: list[dict[str, Any]]) -> list[int]:
    """Effective interval per flow record, computed from tshark's own fields in wire order."""
    tables: dict[str, dict[int, int]] = {}
    defaults: dict[str, int] = {}
    out = []
    for r in ref:
        f, exp = r["fields"], r["exporter"]
        s = {k: int(v, 0) for k, v in f.items() if isinstance(v, str) and v.isdigit()}
        rate = s.get("cflow.sampling_interval") or s.get("cflow.sampler_random_interval")
        if not rate and s.get("cflow.sampling_size") and s.get("cflow.sampling_population"):
            rate = s["cflow.sampling_population"] // s["cflow.sampling_size"]
        sid = s.get("cflow.sampler_id", s.get("cflow.selector_id"))
        if r["kind"] == "options":
            if rate and sid is not None:
                tables.setdefault(exp, {})[sid] = rate
            elif rate:
                defaults[exp] = rate
            continue
        if r["version"] == 5:
            out.append(int((r["sampling"] or {}).get("cflow.samplerate", "0")) or 1)
            continue
        table = tables.get(exp, {})
        default = defaults.get(exp) or (next(iter(table.values())) if len(table) == 1 else None)
        out.append((table.get(sid) if sid is not None else None) or rate or default or 1)
    return out


@pytest.mark.parametrize("name", CAPTURES)
def test_flow_columns_match_tshark(name: str, decoded: dict[str, Any]) -> None:
    batch, ref = decoded[name]
    flows_ref = [r for r in ref if r["kind"] == "flow"]
    flows = batch.flows
    for row, t in zip(flows, flows_ref, strict=True):
        f = t["fields"]
        # an address that is 0.0.0.0 / :: in one family while the other is set is the unused one
        for side, col in (("src", "src"), ("dst", "dst")):
            v6 = f.get(f"cflow.{side}addrv6")
            v4 = f.get(f"cflow.{side}addr") or t[f"{side}_addr"]
            want = v6 if v6 and (not v4 or ipaddress.ip_address(v6) != ipaddress.ip_address("::")) else v4
            if want:
                assert halves_to_addr(row[f"{col}_hi"], row[f"{col}_lo"]) == _addr(want)
        for key, col in (("src_port", "src_port"), ("dst_port", "dst_port"), ("protocol", "proto")):
            if t[key] is not None:
                assert int(row[col]) == t[key], (name, key)
        if t["packets"] is not None:
            assert int(row["packets"]) == t["packets"]
        if t["octets"] is not None:
            assert int(row["bytes"]) == t["octets"]
        if t["tcp_flags"] is not None:
            assert int(row["tcp_flags"]) == int(t["tcp_flags"], 16) & 0xFF
    assert [int(x) for x in flows["sampling"]] == _expected_sampling(ref)
    assert set(np.unique(flows["ip_version"])) <= {0, 4, 6}


def test_sampling_is_learned_from_options(decoded: dict[str, Any]) -> None:
    """The captures with sampling info yield the rates their options/headers announce."""
    rates = {name: sorted({int(x) for x in decoded[name][0].flows["sampling"]}) for name in decoded}
    assert rates["nf5_juniper_mx80"] == [1000]
    assert rates["nf9_akvorado_multiplesamplingrates"] == [2000, 4000]
    assert rates["ipfix_cisco_pmacct_104_ipv6_sampling"] == [256]


def test_enterprise_fields_are_named_not_dropped(decoded: dict[str, Any]) -> None:
    batch, ref = decoded["ipfix_citrix_netscaler"]
    for ours, theirs in zip(batch.records, ref, strict=True):
        pie = [k for k in theirs["fields"] if k.startswith("cflow.pie.netscaler.")]
        assert len([k for k in ours if k.startswith("e5951f")]) >= len(pie)
    biflow = decoded["ipfix_ipfixprobe_biflow"][0]
    assert any(k.startswith("reverse") for r in biflow.records for k in r)


def test_time_columns(decoded: dict[str, Any]) -> None:
    """Absolute times where the export gives them (IPFIX ms/sysUpTime+init, v9/v5 uptime)."""
    for name in (
        "nf5_juniper_mx80",
        "nf9_cisco_asa_nsel",
        "ipfix_cisco_pmacct_401_mpls_bulk",
        "ipfix_cisco_pmacct_100",
    ):
        flows = decoded[name][0].flows
        assert (flows["start_ms"] > 1_300_000_000_000).all(), name
        assert (flows["end_ms"] >= flows["start_ms"]).all(), name


def _tshark(tshark: Path, path: Path, *fields: str) -> list[list[str]]:
    cmd = [str(tshark), "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|"]
    for f in fields:
        cmd += ["-e", f]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120)
    return [line.split("\t") for line in res.stdout.splitlines()]


@pytest.mark.parametrize("name", ["nf9_akvorado_multiplesamplingrates", "nf5_juniper_mx80"])
def test_live_tshark_oracle(name: str, captures: Path, need_tool: Callable[[str], Path]) -> None:
    """Run tshark now (not the stored jsonl): headers, sequence, addresses and absolute start times."""
    tshark = need_tool("tshark")
    path = captures / f"{name}.pcap"
    rows = _tshark(
        tshark,
        path, "cflow.sysuptime", "cflow.unix_secs", "cflow.sequence", "cflow.timestart", "cflow.srcaddr",
        "cflow.srcaddrv6", "cflow.dstport",
    )  # fmt: skip
    batch = NetflowDecoder().decode_batch(h.udp_payloads(path), want_records=True, now=0.0)
    assert [r.sequence for r in batch.reports] == [int(r[2]) for r in rows]
    starts, srcs, dports = [], [], []
    for uptime, secs, _, tstart, src4, src6, dport in rows:
        for k, ts in enumerate(x for x in tstart.split("|") if x):
            starts.append(int(secs) * 1000 - (_rel_ms(uptime) - _rel_ms(ts)))
            srcs.append(([s for s in src4.split("|") if s] or src6.split("|"))[k])
            dports.append(int(dport.split("|")[k]))
    flows = batch.flows
    assert len(flows) == len(starts) > 0
    assert [int(x) for x in flows["start_ms"]] == starts
    assert [halves_to_addr(r["src_hi"], r["src_lo"]) for r in flows] == [_addr(s) for s in srcs]
    assert [int(x) for x in flows["dst_port"]] == dports
