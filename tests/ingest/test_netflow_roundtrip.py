"""Round trips: random FLOW arrays -> encoder -> decoder -> the same columns."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from voxguard.ingest.decode.flows import FLOW_DTYPE, V4_MAPPED_LO_PREFIX, empty_flows
from voxguard.ingest.decode.netflow import NetflowDecoder
from voxguard.ingest.encode import IpfixEncoder, NetflowV5Encoder, NetflowV9Encoder

EXPORT_S = 1_700_000_000
EXPORT_MS = EXPORT_S * 1000
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
COLUMNS = [n for n in FLOW_DTYPE.names or () if n not in ("datagram_ix", "sip_method", "sip_flags", "_pad")]


def _u(n: int, bits: int, min_value: int = 0) -> st.SearchStrategy[np.ndarray]:
    dtype = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}[bits]
    return hnp.arrays(dtype, n, elements=st.integers(min_value, 2**bits - 1))


@st.composite
def flows(
    draw: st.DrawFn,
    *,
    v6: str = "mixed",
    counter_bits: int = 64,
    max_age_ms: int = 2**31 - 1,
    max_n: int = 150,
) -> np.ndarray:
    """FLOW rows; times within what the format can express around the export time."""
    n = draw(st.integers(0, max_n))
    f = empty_flows(n)
    fam6 = {"none": np.zeros(n, bool), "all": np.ones(n, bool)}.get(v6)
    if fam6 is None:
        fam6 = draw(hnp.arrays(np.bool_, n))
    for side in ("src", "dst"):
        v4 = draw(_u(n, 32)).astype(np.uint64) | V4_MAPPED_LO_PREFIX
        hi = draw(_u(n, 64, 1))  # a non-zero high half is never IPv4-mapped
        lo = draw(_u(n, 64))
        f[f"{side}_hi"] = np.where(fam6, hi, 0)
        f[f"{side}_lo"] = np.where(fam6, lo, v4)
    f["ip_version"] = np.where(fam6, 6, 4)
    f["bytes"] = draw(_u(n, counter_bits))
    f["packets"] = draw(_u(n, counter_bits))
    f["src_port"] = draw(_u(n, 16))
    f["dst_port"] = draw(_u(n, 16))
    f["proto"] = draw(hnp.arrays(np.uint8, n, elements=st.sampled_from([1, 6, 17, 47, 58])))
    f["tcp_flags"] = draw(_u(n, 8))
    f["icmp_type"] = draw(_u(n, 8))
    f["icmp_code"] = draw(_u(n, 8))
    age = draw(hnp.arrays(np.int64, n, elements=st.integers(-1000, max_age_ms)))
    dur = draw(hnp.arrays(np.int64, n, elements=st.integers(0, 600_000)))
    f["start_ms"] = EXPORT_MS - age
    f["end_ms"] = np.minimum(EXPORT_MS - age + dur, EXPORT_MS + max_age_ms)
    return f


def _decode(datagrams: list[bytes], exporter: str = "192.0.2.7") -> np.ndarray:
    out = NetflowDecoder().decode_batch([(d, exporter) for d in datagrams], now=0.0)
    assert all(r.error is None and r.lost == 0 for r in out.reports), [r.error for r in out.reports]
    return out.flows


def _family_order(f: np.ndarray) -> np.ndarray:
    """Encoders with both templates send the IPv4 rows first, then the IPv6 ones."""
    v6 = f["ip_version"] == 6
    return np.concatenate([f[~v6], f[v6]])


def _assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert len(got) == len(want)
    for col in COLUMNS:
        assert np.array_equal(got[col], want[col]), (col, got[col][:5], want[col][:5])


@SETTINGS
@given(f=flows(), interval=st.integers(1, 1_000_000), mtu=st.sampled_from([576, 1400, 9000]))
def test_v9_roundtrip(f: np.ndarray, interval: int, mtu: int) -> None:
    enc = NetflowV9Encoder(3, 300, ipv6=None, sampling_interval=interval, mtu=mtu, template_refresh=7)
    datagrams = enc.encode(f, EXPORT_S, uptime_ms=123_456_789)
    assert all(len(d) <= mtu for d in datagrams)
    want = _family_order(f)
    want["sampling"] = interval
    _assert_same(_decode(datagrams), want)


@SETTINGS
@given(f=flows(max_age_ms=10**10), sampling=st.data())
def test_ipfix_roundtrip_with_per_record_sampling(f: np.ndarray, sampling: st.DataObject) -> None:
    f["sampling"] = sampling.draw(_u(len(f), 32, 1))
    enc = IpfixEncoder(11, 400, ipv6=None, record_sampling=True, template_refresh=3)
    _assert_same(_decode(enc.encode(f, EXPORT_S)), _family_order(f))


@SETTINGS
@given(f=flows(v6="all"), interval=st.integers(1, 2**20))
def test_ipfix_ipv6_only_roundtrip(f: np.ndarray, interval: int) -> None:
    enc = IpfixEncoder(0, 256, ipv6=True, sampling_interval=interval)
    f["sampling"] = interval
    _assert_same(_decode(enc.encode(f, EXPORT_S)), f)


@SETTINGS
@given(f=flows(v6="none", counter_bits=32, max_age_ms=100_000_000), interval=st.integers(0, 0x3FFF))
def test_v5_roundtrip(f: np.ndarray, interval: int) -> None:
    datagrams = NetflowV5Encoder(1, 2, sampling_interval=interval).encode(f, EXPORT_S, uptime_ms=2**31)
    assert all(len(d) <= 24 + 30 * 48 for d in datagrams)
    want = f.copy()
    want["sampling"] = interval or 1
    # v5 has no ICMP field: type/code come from the destination port (Cisco convention)
    icmp = (want["proto"] == 1) | (want["proto"] == 58)
    want["icmp_type"] = np.where(icmp, want["dst_port"] >> 8, 0)
    want["icmp_code"] = np.where(icmp, want["dst_port"] & 0xFF, 0)
    _assert_same(_decode(datagrams), want)


@SETTINGS
@given(f=flows(v6="none", max_n=400), batch=st.integers(1, 64))
def test_any_batching_gives_the_same_rows(f: np.ndarray, batch: int) -> None:
    """Splitting the datagrams into batches (state carried by the decoder) changes nothing."""
    datagrams = NetflowV9Encoder(1, 256, template_refresh=1000).encode(f, EXPORT_S, 5_000_000)
    dec = NetflowDecoder()
    parts = [
        dec.decode_batch([(d, "192.0.2.1") for d in datagrams[i : i + batch]], now=0.0).flows
        for i in range(0, len(datagrams), batch)
    ]
    got = np.concatenate(parts) if parts else empty_flows()
    f["sampling"] = 1
    _assert_same(got, f)


def test_encoder_sequence_numbers_follow_each_format() -> None:
    f = empty_flows(100)
    f["src_lo"] = f["dst_lo"] = V4_MAPPED_LO_PREFIX
    f["ip_version"] = 4
    v9 = NetflowV9Encoder(mtu=600)
    ipfix = IpfixEncoder(mtu=600, sampling_interval=10)
    v5 = NetflowV5Encoder()
    v9_out = v9.encode(f, EXPORT_S, 1000) + v9.encode(f, EXPORT_S, 1000)
    ipfix_out = ipfix.encode(f, EXPORT_S) + ipfix.encode(f, EXPORT_S)
    v5_out = v5.encode(f, EXPORT_S, 1000) + v5.encode(f, EXPORT_S, 1000)
    assert [int.from_bytes(d[12:16], "big") for d in v9_out] == list(range(len(v9_out)))
    assert int.from_bytes(v5_out[-1][16:20], "big") == 100 + 90  # v5 counts flows (30 per datagram)
    assert v9.sequence == len(v9_out) and v5.sequence == 200 and ipfix.sequence == 200 + 1
    out = NetflowDecoder().decode_batch([(d, "x") for d in ipfix_out + v9_out + v5_out], now=0.0)
    assert sum(r.lost for r in out.reports) == 0 and len(out.flows) == 600


def test_encoder_rejects_what_it_cannot_express() -> None:
    f = empty_flows(1)
    f["src_hi"] = 1
    f["ip_version"] = 6
    with pytest.raises(ValueError, match="IPv6 rows"):
        NetflowV9Encoder(ipv6=False).encode(f, EXPORT_S, 0)
    with pytest.raises(ValueError, match="IPv4 flows only"):
        NetflowV5Encoder().encode(f, EXPORT_S, 0)
    with pytest.raises(ValueError, match="template_id"):
        IpfixEncoder(template_id=10)
