"""Known-answer tests: hand-built datagrams with values worked out by hand."""

from __future__ import annotations

import struct

import numpy as np

from voxguard.ingest.decode.flows import addr_to_halves, halves_to_addr
from voxguard.ingest.decode.netflow import NetflowDecoder
from voxguard.ingest.decode.templates import TemplateCache

try:
    from . import test_netflow_helpers as h
except ImportError:
    import test_netflow_helpers as h  # type: ignore[no-redef]

EXP = "192.0.2.1"
T0 = 1_700_000_000


def rec(src: str = "10.0.0.1", dst: str = "10.0.0.2", sport: int = 5060, dport: int = 5060) -> bytes:
    return h.v4_record(src, dst, sport, dport, 17, 1000, 10)


def v9_tmpl(tid: int = 256) -> bytes:
    return h.v9_template_set((tid, h.V4_FIELDS))


def ipfix_tmpl(tid: int = 256) -> bytes:
    return h.ipfix_template_set((tid, h.V4_FIELDS))


def addr(flows: np.ndarray, side: str, i: int = 0) -> str:
    return halves_to_addr(flows[f"{side}_hi"][i], flows[f"{side}_lo"][i])


# -- basics ------------------------------------------------------------------------------------------
def test_v9_template_then_data_in_one_datagram() -> None:
    pkt = h.v9_packet([v9_tmpl(), h.flowset(256, rec() + rec("10.0.0.3", "10.0.0.4", 1234, 80))], source_id=7)
    out = NetflowDecoder().decode_batch([(pkt, EXP)], want_records=True, now=0.0)
    r = out.reports[0]
    assert (r.format, r.domain, r.templates, r.flow_records, r.error) == ("netflow9", 7, 1, 2, None)
    f = out.flows
    assert addr(f, "src", 1) == "10.0.0.3" and addr(f, "dst", 1) == "10.0.0.4"
    assert list(f["src_port"]) == [5060, 1234] and list(f["dst_port"]) == [5060, 80]
    assert list(f["bytes"]) == [1000, 1000] and list(f["packets"]) == [10, 10]
    assert list(f["proto"]) == [17, 17] and list(f["ip_version"]) == [4, 4] and list(f["sampling"]) == [1, 1]
    assert out.records is not None
    assert out.records[0] == {
        "sourceIPv4Address": "10.0.0.1",
        "destinationIPv4Address": "10.0.0.2",
        "sourceTransportPort": 5060,
        "destinationTransportPort": 5060,
        "protocolIdentifier": 17,
        "octetDeltaCount": 1000,
        "packetDeltaCount": 10,
        "exporter": EXP,
        "observationDomainId": 7,
        "format": "netflow9",
        "templateId": 256,
        "recordType": "flow",
        "samplingInterval": 1,
    }


def test_padding_after_records_is_ignored() -> None:
    body = rec() + b"\0" * 3  # 21-byte record + 3 bytes padding: still one record
    pkt = h.ipfix_message([ipfix_tmpl(), h.flowset(256, body, pad=False)])
    out = NetflowDecoder().decode_batch([(pkt, EXP)], now=0.0)
    assert out.reports[0].flow_records == 1 and out.reports[0].error is None


def test_v5_header_sampling_and_times() -> None:
    uptime, secs = 500_000, T0
    first, last = uptime - 3000, uptime - 1000
    record = struct.pack(
        "!4s4s4sHHIIIIHHBBBBHHBBH", h.ip4("10.1.1.1"), h.ip4("10.2.2.2"), h.ip4("0.0.0.0"), 1, 2, 5, 700,
        first, last, 40000, 443, 0, 0x12, 6, 0, 0, 0, 24, 24, 0,
    )  # fmt: skip
    hdr = struct.pack("!HHIIIIBBH", 5, 1, uptime, secs, 0, 42, 1, 2, (1 << 14) | 512)
    out = NetflowDecoder().decode_batch([(hdr + record, EXP)], want_records=True, now=0.0)
    f, r = out.flows, out.reports[0]
    assert (r.format, r.domain, r.sequence, r.sampling_interval) == ("netflow5", 0x0102, 42, 512)
    assert int(f["sampling"][0]) == 512 and int(f["tcp_flags"][0]) == 0x12
    assert int(f["start_ms"][0]) == secs * 1000 - 3000 and int(f["end_ms"][0]) == secs * 1000 - 1000
    assert out.records is not None
    assert out.records[0]["flowStartSysUpTime"] == first
    assert out.records[0]["flowStartMilliseconds"] == secs * 1000 - 3000
    assert out.records[0]["samplingInterval"] == 512


def test_v9_first_switched_across_uptime_wrap() -> None:
    fields = [(8, 4), (12, 4), (22, 4), (21, 4)]
    uptime = 1000  # the 32-bit ms counter wrapped 1 s ago; the flow started 3 s ago
    data = h.ip4("1.1.1.1") + h.ip4("2.2.2.2") + struct.pack("!II", (uptime - 3000) % (1 << 32), uptime - 500)
    pkt = h.v9_packet([h.v9_template_set((300, fields)), h.flowset(300, data)], uptime=uptime, secs=T0)
    f = NetflowDecoder().decode_batch([(pkt, EXP)], now=0.0).flows
    assert int(f["start_ms"][0]) == T0 * 1000 - 3000 and int(f["end_ms"][0]) == T0 * 1000 - 500


def test_ipv6_v9_and_ipfix() -> None:
    fields = [(27, 16), (28, 16), (7, 2), (11, 2), (4, 1), (1, 8), (2, 8)]
    data = h.ip6("2001:db8::1") + h.ip6("2001:db8::2") + struct.pack("!HHBQQ", 5061, 443, 6, 2**40, 3)
    v9 = h.v9_packet([h.v9_template_set((260, fields)), h.flowset(260, data)])
    ipfix = h.ipfix_message([h.ipfix_template_set((260, fields)), h.flowset(260, data, pad=False)])
    out = NetflowDecoder().decode_batch([(v9, EXP), (ipfix, "192.0.2.2")], now=0.0)
    f = out.flows
    assert len(f) == 2 and list(f["ip_version"]) == [6, 6]
    for i in range(2):
        assert (int(f["src_hi"][i]), int(f["src_lo"][i])) == addr_to_halves("2001:db8::1")
        assert addr(f, "dst", i) == "2001:db8::2"
    assert list(f["bytes"]) == [2**40, 2**40] and list(f["datagram_ix"]) == [0, 1]


def test_reduced_size_and_odd_length_counters() -> None:
    fields = [(8, 4), (12, 4), (1, 3), (2, 1)]  # 3-byte octetDeltaCount (RFC 7011 6.2)
    data = h.ip4("1.1.1.1") + h.ip4("2.2.2.2") + (70000).to_bytes(3, "big") + b"\x05"
    pkt = h.ipfix_message([h.ipfix_template_set((256, fields)), h.flowset(256, data, pad=False)])
    f = NetflowDecoder().decode_batch([(pkt, EXP)], now=0.0).flows
    assert int(f["bytes"][0]) == 70000 and int(f["packets"][0]) == 5


def test_ipfix_sysuptime_needs_system_init_time_from_options() -> None:
    init = 1_600_000_000_000
    opt = h.ipfix_options_template_set(400, [(149, 4)], [(160, 8)])
    opt_data = h.flowset(400, struct.pack("!IQ", 0, init), pad=False)
    fields = [(8, 4), (12, 4), (22, 4), (21, 4)]
    data = h.ip4("1.1.1.1") + h.ip4("2.2.2.2") + struct.pack("!II", 5000, 9000)
    pkt = h.ipfix_message([opt, opt_data, h.ipfix_template_set((300, fields)), h.flowset(300, data, pad=False)])
    out = NetflowDecoder().decode_batch([(pkt, EXP)], now=0.0)
    assert out.reports[0].options_records == 1
    assert int(out.flows["start_ms"][0]) == init + 5000 and int(out.flows["end_ms"][0]) == init + 9000


def test_ipfix_variable_length_and_enterprise_fields() -> None:
    fields: list[h.Field] = [(8, 4), (82, 65535), (12, 4), (100, 65535, 9), (1, 4)]
    long_name = b"x" * 300  # needs the 3-byte length prefix
    r1 = h.ip4("1.1.1.1") + b"\x04eth0" + h.ip4("2.2.2.2") + b"\x02\xab\xcd" + struct.pack("!I", 11)
    r2 = h.ip4("3.3.3.3") + b"\xff" + struct.pack("!H", 300) + long_name + h.ip4("4.4.4.4") + b"\x00"
    r2 += struct.pack("!I", 22)
    pkt = h.ipfix_message([h.ipfix_template_set((256, fields)), h.flowset(256, r1 + r2, pad=False)])
    out = NetflowDecoder().decode_batch([(pkt, EXP)], want_records=True, now=0.0)
    assert out.reports[0].flow_records == 2 and out.reports[0].error is None
    assert [addr(out.flows, "dst", i) for i in range(2)] == ["2.2.2.2", "4.4.4.4"]
    assert list(out.flows["bytes"]) == [11, 22]
    assert out.records is not None
    assert out.records[0]["interfaceName"] == "eth0" and out.records[0]["e9f100"] == "abcd"
    assert out.records[1]["interfaceName"] == "x" * 300 and out.records[1]["e9f100"] == ""


# -- templates ------------------------------------------------------------------------------------------
def test_ipfix_template_withdrawal_single_and_all() -> None:
    dec = NetflowDecoder()
    opt = h.ipfix_options_template_set(500, [(149, 4)], [(34, 4)])
    learn = h.ipfix_message([h.ipfix_template_set((256, h.V4_FIELDS), (257, h.V4_FIELDS)), opt])
    out = dec.decode_batch([(learn, EXP)], now=0.0)
    assert out.reports[0].templates == 3
    assert {t["id"] for t in dec.templates.templates_view(EXP, 0)} == {256, 257, 500}
    # withdraw 256 only: its data is now unknown (held), 257 still decodes
    w = h.ipfix_message([h.ipfix_withdrawal_set(2, 256)], seq=0)
    data = h.ipfix_message([h.flowset(256, rec(), pad=False), h.flowset(257, rec(), pad=False)], seq=0)
    out = dec.decode_batch([(w, EXP), (data, EXP)], now=1.0)
    assert out.reports[0].template_withdrawals == 1
    assert (out.reports[1].flow_records, out.reports[1].pending) == (1, 1)
    # withdraw all data templates (id 2): the options template survives; then all options (id 3)
    dec.decode_batch([(h.ipfix_message([h.ipfix_withdrawal_set(2, 2)]), EXP)], now=2.0)
    assert [t["id"] for t in dec.templates.templates_view(EXP, 0)] == [500]
    dec.decode_batch([(h.ipfix_message([h.ipfix_withdrawal_set(3, 3)]), EXP)], now=3.0)
    assert dec.templates.templates_view(EXP, 0) == [] and dec.templates.template_count == 0


def test_template_with_zero_length_field_is_rejected() -> None:
    bad = h.ipfix_template_set((256, [(8, 4), (12, 0)]))
    pkt = h.ipfix_message([bad, h.flowset(256, rec(), pad=False)])
    dec = NetflowDecoder()
    r = dec.decode_batch([(pkt, EXP)], now=0.0).reports[0]
    assert r.error == "ipfix: flow template 256 rejected: field 1 (type 12) has length 0"
    assert r.flow_records == 0 and r.pending == 1 and dec.templates.template_count == 0


def test_template_redefinition_replaces() -> None:
    dec = NetflowDecoder()
    dec.decode_batch([(h.v9_packet([v9_tmpl(256)]), EXP)], now=0.0)
    other = [(12, 4), (8, 4)]  # swapped src/dst
    data = h.ip4("9.9.9.9") + h.ip4("8.8.8.8")
    out = dec.decode_batch([(h.v9_packet([h.v9_template_set((256, other)), h.flowset(256, data)], seq=1), EXP)])
    assert addr(out.flows, "src") == "8.8.8.8" and dec.templates.template_count == 1


def test_views_for_the_exporter_registry() -> None:
    dec = NetflowDecoder()
    opt = h.v9_options_template_set(300, [(1, 4)], [(48, 1), (50, 4)])
    opt_data = h.flowset(300, b"\0\0\0\0" + struct.pack("!BI", 3, 100))
    dec.decode_batch([(h.v9_packet([v9_tmpl(), opt, opt_data], source_id=9), EXP)], now=0.0)
    views = dec.templates.templates_view(EXP, 9)
    assert views[0] == {
        "id": 256,
        "kind": "flow",
        "field_count": 7,
        "scope_field_count": 0,
        "record_length": 21,
        "variable_length": False,
        "fields": [
            "sourceIPv4Address",
            "destinationIPv4Address",
            "sourceTransportPort",
            "destinationTransportPort",
            "protocolIdentifier",
            "octetDeltaCount",
            "packetDeltaCount",
        ],
    }
    assert views[1]["kind"] == "options" and views[1]["fields"] == [
        "scopeSystem",
        "samplerId",
        "samplerRandomInterval",
    ]
    assert dec.templates.sampling_view(EXP, 9) == {"default": 100, "samplers": {3: 100}}
    assert (EXP, "netflow9", 9) in dec.templates.domains()


# -- data before template -----------------------------------------------------------------------------
def test_data_before_template_same_batch_is_held_then_decoded() -> None:
    dec = NetflowDecoder()
    d1 = h.v9_packet([h.flowset(256, rec("10.9.9.9"))], seq=0)
    d2 = h.v9_packet([v9_tmpl()], seq=1)
    out = dec.decode_batch([(d1, EXP), (d2, EXP)], want_records=True, now=0.0)
    assert len(out.flows) == 1 and addr(out.flows, "src") == "10.9.9.9"
    assert int(out.flows["datagram_ix"][0]) == 0  # attributed to the datagram that carried it
    assert [r.pending for r in out.reports] == [0, 0]
    assert [r.flow_records for r in out.reports] == [1, 0]
    assert out.records is not None and out.records[0]["sourceIPv4Address"] == "10.9.9.9"


def test_data_before_template_across_batches() -> None:
    dec = NetflowDecoder()
    out1 = dec.decode_batch([(h.ipfix_message([h.flowset(256, rec(), pad=False)]), EXP)], now=10.0)
    assert len(out1.flows) == 0 and out1.reports[0].pending == 1
    assert dec.templates.held_sets == 1
    out2 = dec.decode_batch([(h.ipfix_message([ipfix_tmpl()], seq=1), EXP)], now=12.0)
    assert len(out2.flows) == 1 and out2.reports[0].flow_records == 1
    assert dec.templates.held_sets == 0 and dec.templates.held_bytes == 0


def test_held_data_expires_and_is_counted_dropped() -> None:
    dec = NetflowDecoder(TemplateCache(hold_seconds=3.0))
    dec.decode_batch([(h.v9_packet([h.flowset(256, rec())]), EXP)], now=100.0)
    out = dec.decode_batch([(h.v9_packet([v9_tmpl()], seq=1), EXP)], now=104.0)
    assert len(out.flows) == 0 and out.reports[0].dropped == 1
    assert dec.templates.held_sets == 0 and dec.templates.dropped_held_total == 1


def test_hold_is_capped_per_exporter() -> None:
    cache = TemplateCache(max_held_sets_per_exporter=5, max_held_bytes_per_exporter=10_000)
    dec = NetflowDecoder(cache)
    pkts = [(h.v9_packet([h.flowset(256 + i, rec())], seq=i), EXP) for i in range(50)]
    out = dec.decode_batch(pkts, now=0.0)
    assert cache.held_sets == 5 and sum(r.dropped for r in out.reports) == 45


# -- sampling -------------------------------------------------------------------------------------------
def test_v9_options_sampling_interval_is_the_exporter_default() -> None:
    opt = h.v9_options_template_set(300, [(1, 4)], [(34, 4), (35, 1)])
    opt_data = h.flowset(300, b"\0\0\0\0" + struct.pack("!IB", 1000, 2))
    pkt = h.v9_packet([opt, opt_data, v9_tmpl(), h.flowset(256, rec() + rec())])
    out = NetflowDecoder().decode_batch([(pkt, EXP)], want_records=True, now=0.0)
    assert list(out.flows["sampling"]) == [1000, 1000]
    r = out.reports[0]
    assert (r.options_records, r.flow_records, r.sampling_interval) == (1, 2, 1000)
    assert out.records is not None and out.records[0]["recordType"] == "options"
    assert out.records[0]["samplingInterval"] == 1000 and out.records[0]["samplingAlgorithm"] == 2


def test_v9_sampler_random_interval_per_sampler_id() -> None:
    opt = h.v9_options_template_set(300, [(1, 4)], [(48, 1), (49, 1), (50, 4)])
    opt_data = h.flowset(300, b"\0" * 4 + struct.pack("!BBI", 1, 2, 2000) + b"\0" * 4 + struct.pack("!BBI", 2, 2, 4000))
    fields = [*h.V4_FIELDS, (48, 1)]
    data = b"".join(rec() + bytes([sid]) for sid in (2, 1, 2, 7))
    pkt = h.v9_packet([opt, opt_data, h.v9_template_set((256, fields)), h.flowset(256, data)])
    dec = NetflowDecoder()
    out = dec.decode_batch([(pkt, EXP)], now=0.0)
    assert out.reports[0].options_records == 2
    # sampler 7 is unknown and two samplers exist, so there is no default: 1
    assert list(out.flows["sampling"]) == [4000, 2000, 4000, 1]
    assert dec.templates.sampling_view(EXP, 0) == {"default": None, "samplers": {1: 2000, 2: 4000}}


def test_ipfix_sampling_packet_interval_and_space_per_selector() -> None:
    opt = h.ipfix_options_template_set(400, [(302, 8)], [(305, 4), (306, 4)])
    opt_data = h.flowset(400, struct.pack("!QII", 5, 1, 99) + struct.pack("!QII", 6, 1, 9), pad=False)
    fields = [*h.V4_FIELDS, (302, 8)]
    data = rec() + struct.pack("!Q", 5) + rec() + struct.pack("!Q", 6)
    pkt = h.ipfix_message([opt, opt_data, h.ipfix_template_set((256, fields)), h.flowset(256, data, pad=False)])
    out = NetflowDecoder().decode_batch([(pkt, EXP)], now=0.0)
    assert list(out.flows["sampling"]) == [100, 10]


def test_ipfix_sampling_population_and_record_interval() -> None:
    opt = h.ipfix_options_template_set(400, [(149, 4)], [(309, 4), (310, 4)])
    opt_data = h.flowset(400, struct.pack("!III", 0, 1, 256), pad=False)
    fields = [*h.V4_FIELDS, (34, 4)]
    data = rec() + struct.pack("!I", 0) + rec() + struct.pack("!I", 50)
    pkt = h.ipfix_message([opt, opt_data, h.ipfix_template_set((256, fields)), h.flowset(256, data, pad=False)])
    out = NetflowDecoder().decode_batch([(pkt, EXP)], now=0.0)
    assert list(out.flows["sampling"]) == [256, 50]  # domain default, then the record's own interval


def test_sampling_tables_are_per_exporter_in_one_group() -> None:
    def pkt(interval: int) -> bytes:
        opt = h.v9_options_template_set(300, [(1, 4)], [(34, 4)])
        opt_data = h.flowset(300, b"\0\0\0\0" + struct.pack("!I", interval))
        return h.v9_packet([opt, opt_data, v9_tmpl(), h.flowset(256, rec())])

    out = NetflowDecoder().decode_batch([(pkt(10), "192.0.2.1"), (pkt(20), "192.0.2.2")], now=0.0)
    assert sorted(zip(out.flows["datagram_ix"], out.flows["sampling"], strict=True)) == [(0, 10), (1, 20)]


# -- sequence numbers ---------------------------------------------------------------------------------
def _v9_seqs(*seqs: int) -> list[int]:
    dec = NetflowDecoder()
    out = dec.decode_batch([(h.v9_packet([v9_tmpl()], seq=s), EXP) for s in seqs], now=0.0)
    return [r.lost for r in out.reports]


def test_v9_sequence_counts_datagrams() -> None:
    assert _v9_seqs(10, 11, 14, 15) == [0, 0, 2, 0]
    assert _v9_seqs(0xFFFFFFFE, 0xFFFFFFFF, 0, 2) == [0, 0, 0, 1]  # wrap
    assert _v9_seqs(5000, 3, 4) == [0, 0, 0]  # restart: a big backwards jump is not loss
    assert _v9_seqs(10, 12, 11, 13) == [0, 1, 0, 0]  # late datagram: no loss, no rewind


def test_ipfix_and_v5_sequence_count_records() -> None:
    dec = NetflowDecoder()
    two = h.flowset(256, rec() + rec(), pad=False)
    msgs = [
        h.ipfix_message([ipfix_tmpl(), two], seq=100),  # 2 records: next expected 102
        h.ipfix_message([two], seq=102),
        h.ipfix_message([two], seq=110),  # 6 records lost
    ]
    out = dec.decode_batch([(m, EXP) for m in msgs], now=0.0)
    assert [r.lost for r in out.reports] == [0, 0, 6]
    hdr = struct.Struct("!HHIIIIBBH")
    v5 = [hdr.pack(5, 1, 1, T0, 0, s, 0, 0, 0) + b"\0" * 48 for s in (7, 8, 20)]
    out = dec.decode_batch([(p, "192.0.2.5") for p in v5], now=0.0)
    assert [r.lost for r in out.reports] == [0, 0, 11]


# -- errors ---------------------------------------------------------------------------------------------
def test_error_messages_are_specific() -> None:
    body = struct.pack("!HH", 256, 9000) + b"\0" * (1200 - 20)
    msg = struct.pack("!HHIII", 10, 1200, T0, 0, 0) + body
    dec = NetflowDecoder()
    r = dec.decode_batch([(msg, EXP)], now=0.0).reports[0]
    assert r.error == "ipfix: set length 9000 exceeds datagram (1200 bytes) at offset 16"
    cases = {
        b"\x00\x07" + b"\0" * 30: "unsupported flow export version 7",
        b"\x00\x09\x00": "netflow9: datagram of 3 bytes is shorter than the 20-byte header",
        h.v9_packet([struct.pack("!HH", 0, 2)]): "netflow9: flowset length 2 < 4 at offset 20",
        h.v9_packet([h.flowset(0, struct.pack("!HH", 256, 500))]): (
            "netflow9: template 256 field count 500 overflows its flowset (0 left)"
        ),
        h.v9_packet([h.v9_template_set((256, [(8, 65535)]))]): (
            "netflow9: flow template 256 rejected: field 0 (type 8) has variable length 65535, not allowed in v9"
        ),
        struct.pack("!HHIIIIBBH", 5, 30, 0, 0, 0, 0, 0, 0, 0) + b"\0" * 96: (
            "netflow5: header count 30 needs 1464 bytes, datagram has 120"
        ),
    }
    for payload, expected in cases.items():
        assert dec.decode_batch([(payload, EXP)], now=0.0).reports[0].error == expected


def test_good_datagram_survives_bad_neighbours() -> None:
    good = h.v9_packet([v9_tmpl(), h.flowset(256, rec())], source_id=1)
    bad = [b"", b"\x00", b"\x00\x0a" + b"\xff" * 40, h.v9_packet([struct.pack("!HH", 256, 60000)])]
    out = NetflowDecoder().decode_batch([(b, EXP) for b in bad] + [(good, "192.0.2.9")], now=0.0)
    assert len(out.reports) == 5 and all(r.error for r in out.reports[:4])
    assert out.reports[4].error is None and len(out.flows) == 1 and int(out.flows["datagram_ix"][0]) == 4


def test_delta_counters_win_over_totals() -> None:
    fields = [(8, 4), (12, 4), (85, 8), (1, 8), (86, 8), (2, 8)]  # totals first on the wire
    data = h.ip4("1.1.1.1") + h.ip4("2.2.2.2") + struct.pack("!QQQQ", 999_999, 1500, 888, 3)
    pkt = h.ipfix_message([h.ipfix_template_set((256, fields)), h.flowset(256, data, pad=False)])
    f = NetflowDecoder().decode_batch([(pkt, EXP)], now=0.0).flows
    assert (int(f["bytes"][0]), int(f["packets"][0])) == (1500, 3)


def test_ipfix_time_encodings() -> None:
    ntp = lambda unix_ms: ((unix_ms // 1000 + 2208988800) << 32) | ((unix_ms % 1000) << 32) // 1000  # noqa: E731
    base = T0 * 1000
    cases: list[tuple[list[h.Field], bytes, int, int]] = [
        ([(150, 4), (151, 4)], struct.pack("!II", T0 - 5, T0 - 1), base - 5000, base - 1000),
        ([(154, 8), (155, 8)], struct.pack("!QQ", ntp(base - 2500), ntp(base - 250)), base - 2500, base - 250),
        ([(156, 8), (157, 8)], struct.pack("!QQ", ntp(base - 70), ntp(base - 7)), base - 70, base - 7),
        ([(158, 4), (159, 4)], struct.pack("!II", 3_000_000, 1_000_000), base - 3000, base - 1000),
        ([(152, 8), (161, 4)], struct.pack("!QI", base - 9000, 4000), base - 9000, base - 5000),
    ]
    for fields, data, start, end in cases:
        pkt = h.ipfix_message([h.ipfix_template_set((256, fields)), h.flowset(256, data, pad=False)], export=T0)
        f = NetflowDecoder().decode_batch([(pkt, EXP)], now=0.0).flows
        assert (int(f["start_ms"][0]), int(f["end_ms"][0])) == (start, end), fields


def test_template_of_only_variable_length_fields() -> None:
    fields: list[h.Field] = [(82, 65535), (83, 65535)]
    data = b"\x02ab\x03cde" + b"\x00\x00"
    pkt = h.ipfix_message([h.ipfix_template_set((256, fields)), h.flowset(256, data, pad=False)])
    dec = NetflowDecoder()
    out = dec.decode_batch([(pkt, EXP)], now=0.0)
    assert out.reports[0].error is None and out.reports[0].flow_records == 2
    assert list(out.flows["ip_version"]) == [0, 0] and list(out.flows["sampling"]) == [1, 1]
    recs = dec.decode_batch([(pkt, EXP)], want_records=True, now=0.0).records
    assert recs is not None
    assert [(r["interfaceName"], r["interfaceDescription"]) for r in recs] == [("ab", "cde"), ("", "")]
