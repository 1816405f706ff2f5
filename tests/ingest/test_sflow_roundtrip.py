"""Encoder -> decoder round trips, and the decoder's sequence tracking (lost datagrams/samples)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from voxguard.ingest.decode.flows import SipFlag, SipMethod, empty_flows
from voxguard.ingest.decode.sflow import SflowDecoder
from voxguard.ingest.decode.sip import SCANNER_FINGERPRINTS
from voxguard.ingest.encode.sflow import InterfaceCounters, SflowEncoder, sip_request, sip_response

V4 = st.integers(0, 2**32 - 1).map(lambda v: (0, 0xFFFF_0000_0000 | v))
V6 = st.tuples(st.integers(1, 2**64 - 1), st.integers(0, 2**64 - 1))  # hi != 0: never IPv4-mapped
PROTOS = st.sampled_from([6, 17, 1, 58, 132, 47, 50])
UAS = st.sampled_from(["Linphone/5.0", "Asterisk PBX 18", *SCANNER_FINGERPRINTS, "Friendly-Scanner 2.0"])
METHODS = st.sampled_from(["INVITE", "REGISTER", "OPTIONS", "BYE", "ACK", "CANCEL", "SUBSCRIBE"])


@st.composite
def rows(draw: st.DrawFn) -> tuple[tuple[int, ...], bytes | None, tuple[int, int]]:
    """A flow row's columns, its optional SIP payload and the (method, flags) the decoder must find."""
    v6 = draw(st.booleans())
    (shi, slo), (dhi, dlo) = draw(V6 if v6 else V4), draw(V6 if v6 else V4)
    proto = draw(PROTOS)
    sport, dport = draw(st.integers(0, 65535)), draw(st.integers(0, 65535))
    flags = draw(st.integers(0, 255)) if proto == 6 else 0
    itype, icode = (draw(st.integers(0, 255)), draw(st.integers(0, 255))) if proto in (1, 58) else (0, 0)
    if proto not in (6, 17, 132):
        sport = dport = 0
    payload, expect = None, (0, 0)
    if proto in (6, 17) and draw(st.booleans()):
        dport = 5060
        if draw(st.booleans()):
            method = draw(METHODS)
            ua = draw(UAS)
            sdp = draw(st.booleans())
            payload = sip_request(method, user_agent=ua, sdp=sdp, compact=draw(st.booleans()))
            scanner = any(f in ua.lower() for f in SCANNER_FINGERPRINTS)
            code = SipMethod.BY_NAME.get(method, SipMethod.OTHER_REQUEST)
            expect = (
                code,
                SipFlag.CALL_ID | (SipFlag.SDP if sdp else 0) | (SipFlag.SCANNER_UA if scanner else 0),
            )
        else:
            payload = sip_response(draw(st.sampled_from([100, 180, 200, 401, 486, 503])), "Reason")
            expect = (SipMethod.RESPONSE, SipFlag.CALL_ID)
    size = draw(st.integers(1600, 9000))
    rate = draw(st.integers(1, 2**24))
    return (
        (shi, slo, dhi, dlo, size, rate, sport, dport, proto, flags, 6 if v6 else 4, itype, icode),
        payload,
        expect,
    )


COLS = (
    "src_hi",
    "src_lo",
    "dst_hi",
    "dst_lo",
    "bytes",
    "sampling",
    "src_port",
    "dst_port",
    "proto",
    "tcp_flags",
    "ip_version",
    "icmp_type",
    "icmp_code",
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(rows(), min_size=1, max_size=40),
    st.booleans(),
    st.booleans(),
    st.sampled_from([(), (7,), (100, 200)]),
    st.sampled_from(["192.0.2.1", "2001:db8::1"]),
)
def test_round_trip_columns(
    spec: list[tuple[tuple[int, ...], bytes | None, tuple[int, int]]],
    expanded: bool,
    ethernet: bool,
    vlans: tuple[int, ...],
    agent: str,
) -> None:
    flows = empty_flows(len(spec))
    for row, (cols, _, _) in zip(flows, spec, strict=True):
        for name, value in zip(COLS, cols, strict=True):
            row[name] = value
    payloads = [p for _, p, _ in spec]
    enc = SflowEncoder(agent, sub_agent_id=3, header_bytes=1500, expanded=expanded, ethernet=ethernet, vlans=vlans)
    counters = [InterfaceCounters(if_index=9, in_octets=123456789012)]
    datagrams = enc.flow_datagrams(flows, payloads, counters=counters)
    batch = SflowDecoder().decode_batch([(d, "198.51.100.1") for d in datagrams], want_records=True, now=1.5)
    assert [r.error for r in batch.reports] == [None] * len(datagrams)
    assert [r.agent for r in batch.reports] == [agent] * len(datagrams)
    assert [r.sequence for r in batch.reports] == list(range(1, len(datagrams) + 1))
    assert sum(r.lost for r in batch.reports) == 0
    assert sum(r.counter_records for r in batch.reports) == 1
    out = batch.flows
    assert len(out) == len(flows)
    for name in COLS:
        assert np.array_equal(out[name], flows[name]), name
    assert np.all(out["packets"] == 1)
    assert np.all(out["start_ms"] == 1500) and np.all(out["end_ms"] == 1500)
    got = list(zip(out["sip_method"].tolist(), out["sip_flags"].tolist(), strict=True))
    assert got == [e for _, _, e in spec]
    assert batch.records is not None
    kinds = [r["sampleType"] for r in batch.records]
    flow_kind = "expanded_flow_sample" if expanded else "flow_sample"
    assert kinds == [flow_kind] * len(spec) + ["expanded_counters_sample" if expanded else "counters_sample"]
    assert batch.records[-1]["interfaceCounters"]["ifInOctets"] == 123456789012
    assert {(r["flowStartMilliseconds"], r["flowEndMilliseconds"]) for r in batch.records} == {(1500, 1500)}
    assert len(batch.samples) == len(spec)
    assert [s.flow_ix for s in batch.samples] == list(range(len(spec)))
    assert {s.header_protocol for s in batch.samples} <= ({1} if ethernet else {11, 12})
    if vlans and ethernet:
        assert all(r.get("dot1qVlanId") == vlans[0] for r in batch.records[:-1])


def _flows(n: int) -> np.ndarray:
    f = empty_flows(n)
    f["src_lo"] = 0xFFFF_0A00_0001
    f["dst_lo"] = 0xFFFF_0A00_0002
    f["proto"] = 17
    f["dst_port"] = 53
    f["bytes"] = 200
    f["sampling"] = 100
    return f


def test_lost_datagrams_and_samples_are_counted() -> None:
    enc = SflowEncoder("192.0.2.1", max_datagram=400)
    dgs = enc.flow_datagrams(_flows(20))
    per = [d[24:28] for d in dgs]  # the sample counts of the datagrams
    counts = [int.from_bytes(c, "big") for c in per]
    assert len(dgs) >= 5
    kept = [dgs[0], dgs[1], dgs[4], *dgs[5:]]
    dec = SflowDecoder()
    reports = dec.decode_batch([(d, "x") for d in kept]).reports
    assert [r.lost for r in reports] == [0, 0, 2] + [0] * (len(kept) - 3)
    assert sum(r.lost_samples for r in reports) == counts[2] + counts[3]


def test_lost_tracking_across_batches_restart_and_reorder() -> None:
    enc = SflowEncoder("192.0.2.1", sub_agent_id=1, max_datagram=200)
    dgs = enc.flow_datagrams(_flows(10), uptime_ms=1_000_000)
    dec = SflowDecoder()
    assert [r.lost for r in dec.decode_batch([(dgs[0], "x")]).reports] == [0]
    assert [r.lost for r in dec.decode_batch([(dgs[3], "x")]).reports] == [2]
    assert [r.lost for r in dec.decode_batch([(dgs[2], "x")]).reports] == [0]  # late: nothing lost
    assert [r.lost for r in dec.decode_batch([(dgs[4], "x")]).reports] == [0]
    # another sub-agent of the same agent has its own sequence space
    other = SflowEncoder("192.0.2.1", sub_agent_id=2, sequence=500).flow_datagrams(_flows(1))
    assert [r.lost for r in dec.decode_batch([(other[0], "x")]).reports] == [0]
    # restart: sequence and uptime start again
    again = SflowEncoder("192.0.2.1", sub_agent_id=1, sequence=1, uptime_ms=5_000)
    re = again.flow_datagrams(_flows(1))
    report = dec.decode_batch([(re[0], "x")]).reports[0]
    assert (report.lost, report.lost_samples, report.sequence) == (0, 0, 1)
    nxt = again.flow_datagrams(_flows(1))
    assert dec.decode_batch([(nxt[0], "x")]).reports[0].lost == 0


def test_counter_only_datagrams_and_sampling_rate_in_report() -> None:
    enc = SflowEncoder("2001:db8::9", expanded=True)
    dgs = enc.counter_datagrams([InterfaceCounters(if_index=i) for i in range(1, 4)])
    batch = SflowDecoder().decode_batch([(d, "2001:db8::9") for d in dgs], want_records=True)
    assert len(batch.flows) == 0
    assert batch.reports[0].counter_records == 3
    assert batch.reports[0].sampling_interval is None
    assert batch.records is not None
    assert [r["sourceIdIndex"] for r in batch.records] == [1, 2, 3]
    f = _flows(2)
    f["sampling"] = [512, 4096]
    rep = SflowDecoder().decode_batch([(d, "x") for d in SflowEncoder().flow_datagrams(f)]).reports[0]
    assert rep.sampling_interval == 512  # the first flow sample's rate; rows keep their own
