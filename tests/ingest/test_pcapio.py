"""pcap/pcapng reading (link types, IP versions, fragments, bad files) and pcap writing (tshark-checked)."""

from __future__ import annotations

import io
import ipaddress
import os
import struct
import subprocess
from pathlib import Path

import dpkt
import pytest

from vghelpers import need_tool, require
from voxguard.ingest.decode.base import RawSample
from voxguard.ingest.pcapio import (
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    CaptureFormatError,
    iter_udp_payloads,
    write_pcap,
    write_sflow_evidence,
)


def _ip4(src: str, dst: str, proto: int, payload: bytes, frag: int = 0) -> bytes:
    hdr = struct.pack(
        ">BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        7,
        frag,
        64,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return hdr + payload


def _ip6(src: str, dst: str, nh: int, payload: bytes) -> bytes:
    return (
        struct.pack(">IHBB", 6 << 28, len(payload), nh, 64)
        + ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + payload
    )


def _udp(sport: int, dport: int, data: bytes) -> bytes:
    return struct.pack(">HHHH", sport, dport, 8 + len(data), 0) + data


def _eth(ethertype: int, payload: bytes, vlans: tuple[int, ...] = ()) -> bytes:
    tags = b"".join(struct.pack(">HH", 0x8100, v) for v in vlans)
    return b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02" + tags + struct.pack(">H", ethertype) + payload


U4 = _ip4("192.0.2.1", "192.0.2.2", 17, _udp(1000, 2055, b"v4-payload"))
U6 = _ip6("2001:db8::1", "2001:db8::2", 17, _udp(1001, 6343, b"v6-payload"))


def _write(path: Path, linktype: int, frames: list[bytes], *, nano: bool = False, ng: bool = False) -> Path:
    with open(path, "wb") as f:
        w = dpkt.pcapng.Writer(f, linktype=linktype) if ng else dpkt.pcap.Writer(f, linktype=linktype, nano=nano)
        for i, fr in enumerate(frames):
            w.writepkt(fr, ts=1_700_000_000.25 + i)
    return path


def _summary(path: Path) -> list[tuple[str, int, str, int, bytes]]:
    return [(d.src, d.sport, d.dst, d.dport, d.payload) for d in iter_udp_payloads(path)]


EXPECTED = [
    ("192.0.2.1", 1000, "192.0.2.2", 2055, b"v4-payload"),
    ("2001:db8::1", 1001, "2001:db8::2", 6343, b"v6-payload"),
]


@pytest.mark.parametrize(
    ("linktype", "wrap"),
    [
        (1, lambda ip: _eth(0x0800 if ip[0] >> 4 == 4 else 0x86DD, ip)),
        (1, lambda ip: _eth(0x0800 if ip[0] >> 4 == 4 else 0x86DD, ip, vlans=(10,))),
        (1, lambda ip: _eth(0x0800 if ip[0] >> 4 == 4 else 0x86DD, ip, vlans=(10, 20))),
        (113, lambda ip: struct.pack(">HHH8sH", 0, 772, 6, b"", 0x0800 if ip[0] >> 4 == 4 else 0x86DD) + ip),
        (
            276,
            lambda ip: struct.pack(">HHIHBB8s", 0x0800 if ip[0] >> 4 == 4 else 0x86DD, 0, 1, 772, 0, 6, b"") + ip,
        ),
        (101, lambda ip: ip),
        (12, lambda ip: ip),
        (228 + 0, lambda ip: ip),
        (0, lambda ip: struct.pack("<I", 2 if ip[0] >> 4 == 4 else 30) + ip),
        (108, lambda ip: struct.pack(">I", 2 if ip[0] >> 4 == 4 else 24) + ip),
    ],
    ids=["eth", "vlan", "qinq", "sll", "sll2", "raw", "raw12", "ipv4-lt", "null", "loop"],
)
@pytest.mark.parametrize("ng", [False, True], ids=["pcap", "pcapng"])
def test_link_types(tmp_path: Path, linktype: int, wrap: object, ng: bool) -> None:
    frames = [wrap(U4), wrap(U6)]  # type: ignore[operator]
    path = _write(tmp_path / "c.cap", linktype, frames, ng=ng)
    assert _summary(path) == EXPECTED
    first = next(iter_udp_payloads(path))
    assert first.timestamp == pytest.approx(1_700_000_000.25, abs=1e-6)
    assert not first.truncated


def test_nanosecond_pcap(tmp_path: Path) -> None:
    path = _write(tmp_path / "n.pcap", 1, [_eth(0x0800, U4)], nano=True)
    (d,) = list(iter_udp_payloads(path))
    assert isinstance(d.timestamp, float) and d.timestamp == pytest.approx(1_700_000_000.25)


def test_skips_non_udp_fragments_and_junk(tmp_path: Path) -> None:
    frames = [
        _eth(0x0806, b"\0" * 28),  # ARP
        _eth(0x0800, _ip4("192.0.2.1", "192.0.2.2", 6, b"\0" * 20)),  # TCP
        _eth(0x0800, _ip4("192.0.2.1", "192.0.2.2", 17, _udp(1, 2, b"first"), frag=0x2000)),  # MF set
        _eth(0x0800, _ip4("192.0.2.1", "192.0.2.2", 17, b"later fragment", frag=0x0010)),  # offset 128
        _eth(0x86DD, _ip6("2001:db8::1", "2001:db8::2", 44, b"\x11\0\0\x01\0\0\0\x01" + _udp(1, 2, b"x"))),
        _eth(0x86DD, _ip6("2001:db8::1", "2001:db8::2", 0, b"\x11\0\0\0\0\0\0\0" + _udp(5, 6, b"hbh"))),
        _eth(0x0800, b"\x45\0"),  # cut IPv4 header
        b"\x02\0\0",  # cut Ethernet header
        _eth(0x0800, U4),
    ]
    got = _summary(_write(tmp_path / "j.pcap", 1, frames))
    assert got == [("2001:db8::1", 5, "2001:db8::2", 6, b"hbh"), EXPECTED[0]]


def test_ethernet_padding_and_snaplen(tmp_path: Path) -> None:
    padded = _eth(0x0800, _ip4("192.0.2.1", "192.0.2.2", 17, _udp(1, 2, b"ab"))) + b"\0" * 20
    cut = _eth(0x0800, U4)[:-4]
    got = list(iter_udp_payloads(_write(tmp_path / "p.pcap", 1, [padded, cut])))
    assert got[0].payload == b"ab" and not got[0].truncated
    assert got[1].payload == b"v4-pay" and got[1].truncated


def test_capture_cut_mid_record_ends_quietly(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.pcap", 1, [_eth(0x0800, U4), _eth(0x0800, U4)])
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # the last record's data is cut: kept, marked truncated
    got = list(iter_udp_payloads(path))
    assert [g.truncated for g in got] == [False, True] and got[1].payload == b""
    path.write_bytes(data[: len(data) - len(_eth(0x0800, U4)) - 8])  # cut inside a record header
    assert len(list(iter_udp_payloads(path))) == 1


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"# not a capture\n", "not a pcap or pcapng capture"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "unreadable capture header"),
        (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x00\x00", "unreadable capture header"),
    ],
)
def test_not_a_capture(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    with pytest.raises(CaptureFormatError) as err:
        iter_udp_payloads(path)
    assert isinstance(err.value, ValueError)
    assert str(path) in str(err.value) and reason in str(err.value)
    assert err.value.path == str(path) and reason in err.value.reason


def test_real_captures_are_read(tmp_path: Path) -> None:
    repo = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
    shared = Path(os.environ.get("VOXGUARD_SHARED_DIR") or repo.parent / "shared")
    d = shared / "data" / "captures"
    require(d.is_dir(), f"shared captures not found at {d} (set VOXGUARD_SHARED_DIR)")
    got = list(iter_udp_payloads(d / "sflow_ipv6_agent_tcpdump.pcap"))
    assert len(got) == 25 and {g.src for g in got} == {"30::1:1:1"} and {g.dport for g in got} == {6343}
    got = list(iter_udp_payloads(d / "ipfix_cisco_pmacct_401_mpls_bulk.pcap"))
    assert len(got) == 596 and all(":" in g.src for g in got)


# -- writing --------------------------------------------------------------------------------------


def test_write_pcap_round_trip_with_original_length() -> None:
    buf = io.BytesIO()
    n = write_pcap(buf, [(1.5, _eth(0x0800, U4), 1518), (2.000001, _eth(0x86DD, U6))], LINKTYPE_ETHERNET)
    assert n == 2
    buf.seek(0)
    r = dpkt.pcap.Reader(buf)
    assert r.datalink() == 1
    pkts = list(r)
    assert [bytes(p) for _, p in pkts] == [_eth(0x0800, U4), _eth(0x86DD, U6)]
    assert [ts for ts, _ in pkts] == [pytest.approx(1.5), pytest.approx(2.000001)]
    raw = buf.getvalue()
    assert struct.unpack_from("<IIII", raw, 24)[2:] == (len(_eth(0x0800, U4)), 1518)  # caplen, origlen


def _tshark_read(path: Path) -> list[list[str]]:
    exe = str(need_tool("tshark"))
    out = subprocess.run(
        [
            exe,
            "-n",
            "-r",
            str(path),
            "-T",
            "fields",
            "-e",
            "frame.len",
            "-e",
            "frame.cap_len",
            "-e",
            "ip.src",
            "-e",
            "ipv6.src",
            "-e",
            "ip.dst",
            "-e",
            "ipv6.dst",
            "-e",
            "udp.dstport",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [line.split("\t") for line in out.stdout.splitlines()]


def test_tshark_reads_written_ethernet_pcap(tmp_path: Path) -> None:
    path = tmp_path / "e.pcap"
    write_pcap(path, [(10.0, _eth(0x0800, U4, vlans=(5,)), 1500), (11.0, _eth(0x86DD, U6))])
    rows = _tshark_read(path)
    assert rows == [
        ["1500", str(len(_eth(0x0800, U4, vlans=(5,)))), "192.0.2.1", "", "192.0.2.2", "", "2055"],
        [str(len(_eth(0x86DD, U6)))] * 2 + ["", "2001:db8::1", "", "2001:db8::2", "6343"],
    ]


def test_tshark_reads_sflow_evidence(tmp_path: Path) -> None:
    raw4 = RawSample(0, 0, 11, 300, U4)
    raw6 = RawSample(0, 1, 12, 300, U6)
    eth = RawSample(0, 2, 1, 1518, _eth(0x0800, U4))
    path = tmp_path / "raw.pcap"
    assert write_sflow_evidence(path, [(1.0, raw4), (2.0, raw6)]) == 2
    assert struct.unpack_from("<I", path.read_bytes(), 20)[0] == LINKTYPE_RAW
    rows = _tshark_read(path)
    assert [(r[2] or r[3], r[4] or r[5], r[6]) for r in rows] == [
        ("192.0.2.1", "192.0.2.2", "2055"),
        ("2001:db8::1", "2001:db8::2", "6343"),
    ]
    mixed = tmp_path / "mixed.pcap"
    other = RawSample(0, 3, 2, 100, b"\0" * 40)  # IEEE 802.3 header protocol: left out
    assert write_sflow_evidence(mixed, [(1.0, eth), (2.0, raw6), (3.0, other)]) == 2
    assert struct.unpack_from("<I", mixed.read_bytes(), 20)[0] == LINKTYPE_ETHERNET
    rows = _tshark_read(mixed)
    assert [(r[0], r[2] or r[3], r[4] or r[5]) for r in rows] == [
        ("1518", "192.0.2.1", "192.0.2.2"),
        ("314", "2001:db8::1", "2001:db8::2"),
    ]
