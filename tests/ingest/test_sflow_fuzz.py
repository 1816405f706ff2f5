"""Hostile input: the sFlow decoder never raises, reports every datagram, keeps the good ones."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vghelpers import require
from voxguard.ingest.decode.base import DecodeBatch
from voxguard.ingest.decode.flows import empty_flows
from voxguard.ingest.decode.sflow import SflowDecoder
from voxguard.ingest.encode.sflow import SflowEncoder, sip_request
from voxguard.ingest.pcapio import iter_udp_payloads


def _repo_root() -> Path:
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    raise RuntimeError("pyproject.toml not found above the tests")


def _real_datagrams() -> list[bytes]:
    shared = Path(os.environ.get("VOXGUARD_SHARED_DIR") or _repo_root().parent / "shared")
    d = shared / "data" / "captures"
    if not d.is_dir():
        return []
    return [
        dg.payload
        for name in ("sflow_akvorado_mixed.pcap", "sflow_ipv6_agent_tcpdump.pcap")
        if (d / name).is_file()
        for dg in iter_udp_payloads(d / name)
    ]


REAL = _real_datagrams()


def _synthetic() -> bytes:
    f = empty_flows(3)
    f["src_lo"] = 0xFFFF_C633_6407
    f["dst_lo"] = 0xFFFF_CB00_710A
    f["proto"] = 17
    f["src_port"] = f["dst_port"] = 5060
    f["bytes"] = 900
    f["sampling"] = 256
    return SflowEncoder("192.0.2.1", vlans=(5,)).flow_datagrams(f, [sip_request(), None, b"\x00\xff"])[0]


GOOD = _synthetic()


def _corpus() -> list[bytes]:
    return [*REAL, GOOD]


def _check(batch: DecodeBatch, n: int) -> None:
    """Invariants of every decode: a report per datagram, rows pointing at real datagrams."""
    assert len(batch.reports) == n
    assert len(batch.flows) == sum(r.flow_records for r in batch.reports)
    assert np.all(batch.flows["datagram_ix"] < n)
    for s in batch.samples:
        assert 0 <= s.flow_ix < len(batch.flows)
        assert batch.flows["datagram_ix"][s.flow_ix] == s.datagram_ix
    for r in batch.reports:
        assert r.error is None or (isinstance(r.error, str) and r.error)
        assert not (r.error or "").startswith("internal decoder error"), r.error  # a bug, not bad input


def _alone(d: bytes) -> np.ndarray:
    return SflowDecoder().decode_batch([(d, "a")]).flows


def _sandwich(bad: bytes) -> DecodeBatch:
    """Decode [GOOD, bad, GOOD] and check that both good datagrams kept all their rows."""
    batch = SflowDecoder().decode_batch([(GOOD, "a"), (bad, "b"), (GOOD, "c")], want_records=True)
    _check(batch, 3)
    assert batch.records is not None and len(batch.records) >= 2 * len(_alone_cache(GOOD))
    ref = _alone(GOOD)
    for ix in (0, 2):
        mine = batch.flows[batch.flows["datagram_ix"] == ix].copy()
        mine["datagram_ix"] = 0
        assert np.array_equal(mine, ref)
        assert batch.reports[ix].error is None
    return batch


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes(data: bytes) -> None:
    batch = _sandwich(data)
    assert batch.reports[1].error is not None or data[:4] == b"\0\0\0\x05"


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=1500))
def test_random_bytes_after_a_valid_header(tail: bytes) -> None:
    head = struct.pack(">II4sIIII", 5, 1, b"\xc0\0\x02\x01", 0, 1, 0, 3)
    _sandwich(head + tail)


def test_truncation_at_every_offset() -> None:
    corpus = _corpus()
    require(REAL, "shared captures not found (set VOXGUARD_SHARED_DIR): only the synthetic datagram")
    dec = SflowDecoder()
    for d in corpus:
        full = dec.decode_batch([(d, "x")])
        assert full.reports[0].error is None
        for k in range(len(d)):
            batch = dec.decode_batch([(GOOD, "a"), (d[:k], "b"), (GOOD, "c")])
            _check(batch, 3)
            assert batch.reports[1].error is not None, (k, len(d))
            assert batch.reports[0].error is None and batch.reports[2].error is None
            assert np.count_nonzero(batch.flows["datagram_ix"] != 1) == 2 * len(_alone_cache(GOOD))
            # samples that fit entirely before the cut are kept: a prefix of the full decode
            part = batch.flows[batch.flows["datagram_ix"] == 1]
            cols = ["src_lo", "dst_lo", "bytes", "sampling", "proto"]
            assert all(np.array_equal(part[c], full.flows[c][: len(part)]) for c in cols)


_CACHE: dict[bytes, np.ndarray] = {}


def _alone_cache(d: bytes) -> np.ndarray:
    if d not in _CACHE:
        _CACHE[d] = _alone(d)
    return _CACHE[d]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_bit_flips(data: st.DataObject) -> None:
    corpus = _corpus()
    d = bytearray(data.draw(st.sampled_from(corpus)))
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(d) - 1))
        d[pos] ^= 1 << data.draw(st.integers(0, 7))
    _sandwich(bytes(d))


def _set_u32(d: bytes, off: int, value: int) -> bytes:
    return d[:off] + struct.pack(">I", value) + d[off + 4 :]


# Offsets in GOOD (IPv4 agent): 24 = number of samples; 28 = first sample tag, 32 its length,
# 36.. the flow sample header (record count at 36 + 28); 68 first record tag, 72 its length,
# 76 header protocol, 80 frame length, 84 stripped, 88 header length.
@pytest.mark.parametrize(
    ("offset", "value"),
    [
        (24, 2**31),
        (24, 2**32 - 1),
        (32, 2**31),
        (32, 2**32 - 8),
        (64, 2**31),
        (64, 2**32 - 1),
        (72, 2**31),
        (88, 2**31),
        (88, 2**32 - 1),
        (4, 7),
        (0, 4),
    ],
)
def test_absurd_counts_and_lengths(offset: int, value: int) -> None:
    assert struct.unpack_from(">I", GOOD, 28)[0] == 1  # the layout the offsets assume
    assert struct.unpack_from(">I", GOOD, 68)[0] == 1
    batch = _sandwich(_set_u32(GOOD, offset, value))
    assert batch.reports[1].error is not None
    assert len(batch.reports[1].error) < 200


def test_absurd_sample_count_is_fast_with_many_empty_samples() -> None:
    """2^31 declared samples, and the datagram full of 8-byte empty unknown samples: bounded work."""
    head = struct.pack(">II4sIIII", 5, 1, b"\xc0\0\x02\x01", 0, 1, 0, 2**31)
    body = struct.pack(">II", 0xFFF, 0) * 8000
    batch = _sandwich(head + body)
    assert "declares" in (batch.reports[1].error or "")


def _raw_header_datagram(header: bytes, frame_length: int) -> bytes:
    rec = struct.pack(">IIII", 1, frame_length, 4, len(header)) + header + b"\0" * (-len(header) % 4)
    rec = struct.pack(">II", 1, len(rec)) + rec
    sample = struct.pack(">IIIIIIII", 1, 1, 10, 10, 0, 1, 2, 1) + rec
    sample = struct.pack(">II", 1, len(sample)) + sample
    return struct.pack(">II4sIIII", 5, 1, b"\xc0\0\x02\x01", 0, 1, 0, 1) + sample


@pytest.mark.parametrize("depth", [1, 2, 3, 50, 1000, 16000])
def test_deep_vlan_stacks(depth: int) -> None:
    eth = b"\x02" * 12 + b"\x81\x00\x00\x07" * depth
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, b"\x0a\0\0\x01", b"\x0a\0\0\x02")
    udp = struct.pack(">HHHH", 1111, 5060, 8, 0)
    d = _raw_header_datagram(eth + b"\x08\x00" + ip + udp, 14 + 4 * depth + 28)
    batch = SflowDecoder().decode_batch([(d, "x")], want_records=True)
    assert batch.reports[0].error is None
    row = batch.flows[0]
    assert (int(row["ip_version"]), int(row["proto"]), int(row["dst_port"])) == (4, 17, 5060)
    assert batch.records is not None and batch.records[0]["dot1qVlanId"] == 7
    assert int(row["sip_method"]) == 0 and int(row["sip_flags"]) == 0  # empty UDP/5060: no SIP to judge


def test_vlan_stack_cut_by_the_sampler() -> None:
    d = _raw_header_datagram(b"\x02" * 12 + b"\x81\x00\x00\x07" * 40, 1500)
    batch = SflowDecoder().decode_batch([(d, "x")], want_records=True)
    assert batch.reports[0].error is None
    assert int(batch.flows[0]["ip_version"]) == 0
    assert int(batch.flows[0]["bytes"]) == 1500
