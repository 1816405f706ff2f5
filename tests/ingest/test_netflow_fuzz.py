"""Hostile input: decode_batch never raises, reports every datagram, keeps its caps, and still
decodes the good datagrams of the same batch."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voxguard.ingest.decode.netflow import NetflowDecoder
from voxguard.ingest.decode.templates import TemplateCache

try:
    from . import test_netflow_helpers as h
except ImportError:
    import test_netflow_helpers as h  # type: ignore[no-redef]

GOOD_EXPORTER = "198.51.100.1"
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# A known-good datagram from its own exporter: whatever else is in the batch, it decodes fully.
GOOD = h.v9_packet(
    [
        h.v9_template_set((256, h.V4_FIELDS)),
        h.flowset(256, h.v4_record("1.2.3.4", "5.6.7.8", 1, 2, 17, 3, 4) * 5),
    ]
)


def _check(dec: NetflowDecoder, payloads: list[bytes], exporter: str = "203.0.113.1") -> None:
    batch = [(p, exporter) for p in payloads] + [(GOOD, GOOD_EXPORTER)]
    out = dec.decode_batch(batch, now=0.0)
    assert len(out.reports) == len(batch)
    good = out.reports[-1]
    assert good.error is None and good.flow_records == 5
    rows = out.flows[out.flows["datagram_ix"] == len(payloads)]
    assert len(rows) == 5 and set(rows["bytes"]) == {3}
    assert len(out.flows) == sum(r.flow_records for r in out.reports)
    caps = dec.templates
    assert caps.template_count <= caps.max_templates
    assert caps.held_bytes <= caps.max_held_bytes


@pytest.fixture(scope="module")
def captured(shared_dir: Path) -> dict[str, list[bytes]]:
    """The NetFlow/IPFIX payloads of every shared capture, by capture name."""
    d = h.captures_dir(shared_dir)
    return {
        p.stem: [payload for payload, _ in h.udp_payloads(p)]
        for p in sorted(Path(d).glob("*.pcap"))
        if not p.stem.startswith("sflow")
    }


def _warm(datagrams: list[bytes], exporter: str) -> NetflowDecoder:
    dec = NetflowDecoder()
    dec.decode_batch([(p, exporter) for p in datagrams], now=0.0)
    return dec


@SETTINGS
@given(payloads=st.lists(st.binary(max_size=600), max_size=8))
def test_random_bytes(payloads: list[bytes]) -> None:
    _check(NetflowDecoder(), payloads)


@SETTINGS
@given(
    version=st.sampled_from([5, 9, 10]),
    body=st.binary(min_size=0, max_size=400),
    count=st.integers(0, 65535),
)
def test_random_bodies_behind_valid_versions(version: int, body: bytes, count: int) -> None:
    head = struct.pack("!HH", version, count if version != 10 else 16 + len(body) + count % 3)
    _check(NetflowDecoder(), [head + body, head + body[: len(body) // 2]])


def _set_ids(payload: bytes) -> tuple[int, ...]:
    """Set/flowset ids of a v9/IPFIX datagram (to pick one datagram per distinct layout)."""
    off = 20 if payload[:2] == b"\x00\x09" else 16
    ids = []
    while off + 4 <= len(payload):
        sid, length = struct.unpack_from("!HH", payload, off)
        ids.append(sid)
        off += max(length, 4)
    return tuple(ids)


def test_every_truncation_of_real_datagrams(captured: dict[str, list[bytes]]) -> None:
    """Every datagram cut at every offset; for the 596-datagram bulk capture, one datagram per
    distinct set layout plus the largest. The good datagram of the batch always decodes."""
    cuts = 0
    for name, datagrams in captured.items():
        dec = _warm(datagrams, "203.0.113.1")
        picks = list(range(len(datagrams)))
        if len(datagrams) > 50:
            first_of: dict[tuple[int, ...], int] = {}
            for i, p in enumerate(datagrams):
                first_of.setdefault(_set_ids(p), i)
            picks = sorted({*first_of.values(), max(picks, key=lambda i: len(datagrams[i]))})
        for i in picks:
            full = datagrams[i]
            for start in range(0, len(full), 64):  # 64 cuts per batch, the good datagram last
                batch = [(full[:cut], "203.0.113.1") for cut in range(start, min(start + 64, len(full)))]
                out = dec.decode_batch([*batch, (GOOD, GOOD_EXPORTER)], now=0.0)
                assert len(out.reports) == len(batch) + 1, name
                assert out.reports[-1].flow_records == 5 and out.reports[-1].error is None, name
                assert int(np.count_nonzero(out.flows["datagram_ix"] == len(batch))) == 5, name
                cuts += len(batch)
    assert cuts > 30_000


@SETTINGS
@given(data=st.data())
def test_bit_flips_in_real_datagrams(captured: dict[str, list[bytes]], data: st.DataObject) -> None:
    captures = captured
    name = data.draw(st.sampled_from(sorted(captures)))
    datagrams = captures[name]
    dec = _warm(datagrams, "203.0.113.1")
    picked = bytearray(data.draw(st.sampled_from(datagrams)))
    for bit in data.draw(st.lists(st.integers(0, len(picked) * 8 - 1), min_size=1, max_size=8)):
        picked[bit // 8] ^= 1 << (bit % 8)
    _check(dec, [bytes(picked)])


@pytest.mark.parametrize("version", [9, 10])
def test_hostile_templates(version: int) -> None:
    def pkt(*sets: bytes) -> bytes:
        return h.v9_packet(sets) if version == 9 else h.ipfix_message(sets)

    tset = h.v9_template_set if version == 9 else h.ipfix_template_set
    hostile = [
        pkt(h.flowset(0 if version == 9 else 2, struct.pack("!HH", 256, 0xFFFF))),  # field count overflows
        pkt(tset((257, [(8, 4), (12, 0)]))),  # zero-length field
        pkt(tset((258, [(8, 0xFFFF)] * 3))),  # variable length (invalid in v9)
        pkt(tset((259, [(1, 60000), (2, 60000)]))),  # record longer than any message
        pkt(tset((260, [(1, 1)] * 2000))),  # absurd field count
        pkt(tset((100, [(8, 4)]))),  # reserved template id
        pkt(tset((261, [(8, 0xFFFF)] * 4)), h.flowset(261, b"\xff\x00\x01" + b"\xff" * 40)),  # var-len overflow
        pkt(h.flowset(262, b"\0" * 64)),  # data without a template
    ]
    dec = NetflowDecoder()
    _check(dec, hostile)
    out = dec.decode_batch([(p, "203.0.113.1") for p in hostile], now=0.0)
    flagged = [i for i, r in enumerate(out.reports) if r.error]
    # variable-length fields are fine in IPFIX (258), only its data set 261 overflows
    assert flagged == ([0, 1, 3, 4, 5, 6] if version == 10 else [0, 1, 2, 3, 4, 5, 6])
    learned = [t["id"] for t in dec.templates.templates_view("203.0.113.1", 0)]
    assert learned == ([258, 261] if version == 10 else [])
    assert out.reports[7].pending == 1


def test_template_flood_stays_bounded() -> None:
    """100k template ids over many domains: LRU eviction keeps every table under its cap."""
    cache = TemplateCache(max_templates_per_domain=500, max_templates=3000, max_layouts=256, max_domains=64)
    dec = NetflowDecoder(cache)
    per_packet, total = 2000, 100_000
    payloads = []
    for start in range(0, total, per_packet):
        recs = [(256 + (i % 65000), [(8, 4), (12, 4), (1, 1 + i % 8)]) for i in range(start, start + per_packet)]
        payloads.append(h.v9_packet([h.v9_template_set(*recs)], source_id=start // 7000))
    for p in payloads:
        _check(dec, [p])
    assert cache.template_count <= 3000 - 0 and cache.evicted_templates > 0
    assert all(len(v["templates"]) <= 500 for v in cache.snapshot())
    assert len(cache.domains()) <= 64 and len(cache._layouts) <= 256


def test_unknown_data_flood_from_many_exporters_stays_bounded() -> None:
    cache = TemplateCache(max_held_bytes=200_000, max_held_bytes_per_exporter=20_000)
    dec = NetflowDecoder(cache)
    for k in range(50):
        batch = [(h.v9_packet([h.flowset(256 + i, b"\x01" * 1000)]), f"10.0.{k}.{i}") for i in range(40)]
        dec.decode_batch(batch, now=float(k))
        assert cache.held_bytes <= 200_000
    assert cache.dropped_held_total > 0


def test_records_mode_survives_hostile_input_too() -> None:
    dec = NetflowDecoder()
    rng = np.random.default_rng(7)
    junk = [bytes(rng.integers(0, 256, 300, dtype=np.uint8)) for _ in range(200)]
    junk = [b"\x00\x0a" + j[2:] if k % 2 else b"\x00\x09" + j[2:] for k, j in enumerate(junk)]
    out = dec.decode_batch([(j, "203.0.113.1") for j in junk] + [(GOOD, GOOD_EXPORTER)], want_records=True, now=0.0)
    assert len(out.reports) == 201 and out.records is not None
    assert sum(1 for r in out.records if r["exporter"] == GOOD_EXPORTER) == 5


def test_domain_eviction_inside_a_batch_keeps_counts_exact() -> None:
    cache = TemplateCache(max_domains=2)
    dec = NetflowDecoder(cache)
    tmpl = h.v9_template_set((256, h.V4_FIELDS))
    data = h.flowset(256, h.v4_record("1.1.1.1", "2.2.2.2", 1, 2, 17, 3, 4))
    batch = [(h.v9_packet([tmpl, data], source_id=d), "192.0.2.1") for d in (1, 2, 3)]
    batch.append((h.v9_packet([data], source_id=1, seq=1), "192.0.2.1"))  # domain 1 was evicted
    out = dec.decode_batch(batch, now=0.0)
    assert [r.flow_records for r in out.reports] == [1, 1, 1, 0] and out.reports[3].pending == 1
    # re-creating domain 1 evicted domain 2 in turn: only domain 3 keeps its template
    assert cache.template_count == sum(len(v["templates"]) for v in cache.snapshot()) == 1
