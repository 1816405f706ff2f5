"""Capture files in and out: UDP datagrams from pcap/pcapng, and pcap files of sFlow headers.

Reading backs ``voxguard decode``, ``replay`` and ``backfill`` (flow exports recorded with tcpdump
or Wireshark); writing backs the evidence download (sFlow raw packet headers as a real pcap that
Wireshark opens). Container formats come from dpkt; the link, IP and UDP headers are parsed here
with ``struct``, tolerant of whatever a capture holds: non-UDP frames and IP fragments are skipped.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, Any, Protocol

import dpkt

__all__ = [
    "LINKTYPE_ETHERNET",
    "LINKTYPE_RAW",
    "CaptureFormatError",
    "SampledHeader",
    "UdpDatagram",
    "iter_udp_payloads",
    "linktype_for_header_protocol",
    "write_pcap",
    "write_sflow_evidence",
]

LINKTYPE_NULL = 0  # BSD loopback, host byte order address family
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108  # OpenBSD loopback, network byte order
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
_RAW_ALIASES = (12, 14, LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6)  # DLT_RAW differs per OS

_PCAP_MAGICS = {
    b"\xa1\xb2\xc3\xd4",
    b"\xd4\xc3\xb2\xa1",
    b"\xa1\xb2\x3c\x4d",
    b"\x4d\x3c\xb2\xa1",
    b"\xa1\xb2\xcd\x34",
    b"\x34\xcd\xb2\xa1",
}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100, 0x9200)
_V6_EXT = (0, 43, 60)  # hop-by-hop, routing, destination options
_AF_INET6_VALUES = (10, 24, 28, 30)  # Linux, BSDs, macOS/FreeBSD

_U16 = struct.Struct(">H")
_UDP = struct.Struct(">HHH")
_PCAP_HEADER = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")


class CaptureFormatError(ValueError):
    """The file is not a capture this module can read; the message names the file and the reason."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(slots=True, frozen=True)
class UdpDatagram:
    """One UDP datagram from a capture (addresses as text)."""

    timestamp: float
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes
    truncated: bool = False  # the capture's snap length cut the payload


def iter_udp_payloads(path: str | os.PathLike[str]) -> Iterator[UdpDatagram]:
    """Yield the UDP datagrams of a pcap or pcapng file, in file order.

    Link types: Ethernet (with 802.1Q/QinQ tags), Linux cooked (SLL, SLL2), raw IP, BSD/OpenBSD
    loopback. IPv4 and IPv6; non-UDP packets and IP fragments are skipped. A datagram cut by the
    snap length or by the end of the file comes with ``truncated`` set; a record header cut by the
    end of the file ends the iteration. Raises ``CaptureFormatError`` (at once, not on the first
    ``next``) for a file that is not a capture.
    """
    name = os.fspath(path)
    f = open(name, "rb")  # noqa: SIM115 - closed by _datagrams() or on error here
    try:
        magic = f.read(4)
        f.seek(0)
        reader: Any
        if magic in _PCAP_MAGICS:
            reader = dpkt.pcap.Reader(f)
        elif magic == _PCAPNG_MAGIC:
            reader = dpkt.pcapng.Reader(f)
        elif not magic:
            raise CaptureFormatError(name, "empty file, not a pcap or pcapng capture")
        else:
            raise CaptureFormatError(name, f"not a pcap or pcapng capture (starts with 0x{magic.hex()})")
    except CaptureFormatError:
        f.close()
        raise
    except (ValueError, dpkt.dpkt.Error, struct.error) as exc:
        f.close()
        raise CaptureFormatError(name, f"unreadable capture header: {exc}") from exc
    return _datagrams(f, reader)


def _datagrams(f: IO[bytes], reader: Any) -> Iterator[UdpDatagram]:
    with f:
        linktype = reader.datalink()
        for ts, frame in _frames(reader):
            dg = _udp_from_frame(linktype, frame, ts)
            if dg is not None:
                yield dg


def _frames(reader: Any) -> Iterator[tuple[float, bytes]]:
    """(timestamp, frame) pairs; a truncated last record ends the capture quietly."""
    it = iter(reader)
    while True:
        try:
            ts, frame = next(it)
        except StopIteration:
            return
        except (dpkt.dpkt.Error, struct.error, ValueError):
            return
        yield (float(ts) if isinstance(ts, Decimal) else ts), bytes(frame)


def _udp_from_frame(linktype: int, b: bytes, ts: float) -> UdpDatagram | None:
    """Strip the link layer and hand the IP packet on; None when it is not a UDP datagram."""
    n = len(b)
    if linktype == LINKTYPE_ETHERNET:
        if n < 14:
            return None
        off, et = 14, _U16.unpack_from(b, 12)[0]
        while et in _VLAN_TPIDS and off + 4 <= n:
            et = _U16.unpack_from(b, off + 2)[0]
            off += 4
    elif linktype == LINKTYPE_LINUX_SLL:
        if n < 16:
            return None
        off, et = 16, _U16.unpack_from(b, 14)[0]
    elif linktype == LINKTYPE_LINUX_SLL2:
        if n < 20:
            return None
        off, et = 20, _U16.unpack_from(b, 0)[0]
    elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if n < 4:
            return None
        le, be = struct.unpack_from("<I", b)[0], struct.unpack_from(">I", b)[0]
        fam = min(le, be)
        off = 4
        et = 0x0800 if fam == 2 else 0x86DD if fam in _AF_INET6_VALUES else 0
    elif linktype in _RAW_ALIASES:
        off = 0
        et = 0x0800 if n and b[0] >> 4 == 4 else 0x86DD if n and b[0] >> 4 == 6 else 0
    else:
        return None
    if et == 0x0800:
        return _udp_v4(b, off, ts)
    if et == 0x86DD:
        return _udp_v6(b, off, ts)
    return None


def _udp_v4(b: bytes, off: int, ts: float) -> UdpDatagram | None:
    n = len(b)
    if off + 20 > n or b[off] >> 4 != 4:
        return None
    ihl = (b[off] & 15) * 4
    total, frag = _U16.unpack_from(b, off + 2)[0], _U16.unpack_from(b, off + 6)[0]
    if ihl < 20 or b[off + 9] != 17 or frag & 0x3FFF:  # not UDP, or a fragment (MF or offset)
        return None
    src = socket.inet_ntop(socket.AF_INET, b[off + 12 : off + 16])
    dst = socket.inet_ntop(socket.AF_INET, b[off + 16 : off + 20])
    end = off + total if total >= ihl + 8 else n
    return _udp(b, off + ihl, end, src, dst, ts)


def _udp_v6(b: bytes, off: int, ts: float) -> UdpDatagram | None:
    n = len(b)
    if off + 40 > n or b[off] >> 4 != 6:
        return None
    plen = _U16.unpack_from(b, off + 4)[0]
    nh = b[off + 6]
    src = socket.inet_ntop(socket.AF_INET6, b[off + 8 : off + 24])
    dst = socket.inet_ntop(socket.AF_INET6, b[off + 24 : off + 40])
    end = off + 40 + plen if plen else n
    l4 = off + 40
    for _ in range(8):
        if nh not in _V6_EXT:
            break
        if l4 + 2 > n:
            return None
        nh, l4 = b[l4], l4 + (b[l4 + 1] + 1) * 8
    if nh != 17:  # includes 44 (fragment): fragments are skipped
        return None
    return _udp(b, l4, end, src, dst, ts)


def _udp(b: bytes, l4: int, ip_end: int, src: str, dst: str, ts: float) -> UdpDatagram | None:
    if l4 + 8 > len(b):
        return None
    sport, dport, ulen = _UDP.unpack_from(b, l4)
    want = l4 + ulen if ulen >= 8 else ip_end
    end = min(want, len(b))
    return UdpDatagram(ts, src, sport, dst, dport, b[l4 + 8 : end], truncated=end < want)


# -- writing ------------------------------------------------------------------------------------


def linktype_for_header_protocol(header_protocol: int) -> int | None:
    """pcap link type for an sFlow ``header_protocol``: Ethernet, or raw IP; None if unsupported."""
    if header_protocol == 1:
        return LINKTYPE_ETHERNET
    if header_protocol in (11, 12):
        return LINKTYPE_RAW
    return None


def write_pcap(
    dest: str | os.PathLike[str] | IO[bytes],
    samples: Iterable[tuple[float, bytes] | tuple[float, bytes, int]],
    linktype: int = LINKTYPE_ETHERNET,
    *,
    snaplen: int = 65535,
) -> int:
    """Write a classic (microsecond, little-endian) pcap; returns the number of packets written.

    ``samples`` are ``(timestamp, frame)`` or ``(timestamp, frame, original_length)``: sFlow keeps
    only the first bytes of a packet, and the original length lets Wireshark show the cut.
    """
    if isinstance(dest, (str, os.PathLike)):
        with open(dest, "wb") as f:
            return _write(f, samples, linktype, snaplen)
    return _write(dest, samples, linktype, snaplen)


def _write(
    f: IO[bytes],
    samples: Iterable[tuple[float, bytes] | tuple[float, bytes, int]],
    linktype: int,
    snaplen: int,
) -> int:
    f.write(_PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype))
    count = 0
    for item in samples:
        ts, data, *rest = item
        frame = data[:snaplen]
        orig = min(max(rest[0], len(data)) if rest else len(data), 0xFFFF_FFFF)
        sec = int(ts)
        usec = min(round((ts - sec) * 1_000_000), 999_999)
        f.write(_PCAP_RECORD.pack(sec, usec, len(frame), orig))
        f.write(frame)
        count += 1
    return count


class SampledHeader(Protocol):
    """What evidence writing needs of a sample: ``RawSample`` and the ring's samples both fit."""

    @property
    def header_protocol(self) -> int: ...
    @property
    def frame_length(self) -> int: ...
    @property
    def header(self) -> bytes: ...


def write_sflow_evidence(
    dest: str | os.PathLike[str] | IO[bytes], samples: Iterable[tuple[float, SampledHeader]]
) -> int:
    """Write sFlow raw headers (with their receive times) as one pcap; returns the packet count.

    All-Ethernet or all-IP sample sets keep their link type (1 or 101); a mix is written as
    Ethernet, raw IP headers getting a zero-MAC Ethernet header. Unsupported header protocols
    (Token Ring, FDDI, ...) are left out.
    """
    items = [(ts, s) for ts, s in samples if linktype_for_header_protocol(s.header_protocol) is not None]
    kinds = {linktype_for_header_protocol(s.header_protocol) for _, s in items}
    linktype = LINKTYPE_RAW if kinds == {LINKTYPE_RAW} else LINKTYPE_ETHERNET
    frames: list[tuple[float, bytes, int]] = []
    for ts, s in items:
        frame, orig = s.header, s.frame_length
        if linktype == LINKTYPE_ETHERNET and s.header_protocol != 1:
            et = b"\x86\xdd" if frame[:1] and frame[0] >> 4 == 6 else b"\x08\x00"
            frame = bytes(12) + et + frame
            orig += 14
        frames.append((ts, frame, orig))
    return write_pcap(dest, frames, linktype)
