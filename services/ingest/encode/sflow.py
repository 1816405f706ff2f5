"""sFlow v5 encoder: FLOW_DTYPE rows in, agent-like datagrams out (for the simulator and tests).

Each row becomes one flow sample whose raw packet header record holds a real Ethernet (optionally
802.1Q-tagged) or bare IP header, then TCP / UDP / ICMP / ICMPv6, then the row's payload if one is
given (e.g. a SIP INVITE from :func:`sip_request`), cut to ``header_bytes`` like a real agent.

Rules worth knowing:

* ``frame_length`` (what the decoder puts in ``bytes``) is the row's ``bytes``, raised to the
  smallest frame that holds the headers and payload (plus the 4-byte FCS an agent counts).
* Without a payload the sampled header ends after the transport header, so UDP/5060 rows without a
  payload carry no SIP (and are not flagged malformed); give a payload to sample SIP.
* Ports are written for TCP, UDP and SCTP only; ``icmp_type``/``icmp_code`` for ICMP(v6);
  ``tcp_flags`` for TCP only: those are the columns a decoder can give back.
* The sampling rate is the row's ``sampling``; ``sample_pool`` grows by it per sample, per source.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from voxguard.ingest.decode.flows import halves_to_addr

__all__ = [
    "InterfaceCounters",
    "SflowEncoder",
    "build_frame",
    "sip_request",
    "sip_response",
]

_HEADER_PROTOCOL_ETHERNET = 1
_HEADER_PROTOCOL_IPV4 = 11
_HEADER_PROTOCOL_IPV6 = 12
_FCS = 4


@dataclass(slots=True)
class InterfaceCounters:
    """Generic interface counters (sFlow counter record 0:1, the IF-MIB values)."""

    if_index: int
    if_type: int = 6  # ethernetCsmacd
    if_speed: int = 10_000_000_000
    if_direction: int = 1  # full duplex
    if_status: int = 3  # admin up + oper up
    in_octets: int = 0
    in_ucast_pkts: int = 0
    in_multicast_pkts: int = 0
    in_broadcast_pkts: int = 0
    in_discards: int = 0
    in_errors: int = 0
    in_unknown_protos: int = 0
    out_octets: int = 0
    out_ucast_pkts: int = 0
    out_multicast_pkts: int = 0
    out_broadcast_pkts: int = 0
    out_discards: int = 0
    out_errors: int = 0
    promiscuous: int = 0

    def pack(self) -> bytes:
        """The 88-byte XDR body of the record."""
        return struct.pack(
            ">IIQIIQIIIIIIQIIIIII",
            self.if_index,
            self.if_type,
            self.if_speed,
            self.if_direction,
            self.if_status,
            self.in_octets,
            self.in_ucast_pkts,
            self.in_multicast_pkts,
            self.in_broadcast_pkts,
            self.in_discards,
            self.in_errors,
            self.in_unknown_protos,
            self.out_octets,
            self.out_ucast_pkts,
            self.out_multicast_pkts,
            self.out_broadcast_pkts,
            self.out_discards,
            self.out_errors,
            self.promiscuous,
        )


def sip_request(
    method: str = "INVITE",
    *,
    user_agent: str | None = "VoxGuard-sim/1.0",
    request_uri: str = "sip:+15551230000@sbc.example.net",
    from_uri: str = "sip:+15559870000@carrier.example.com",
    to_uri: str | None = None,
    call_id: str = "a84b4c76e66710@198.51.100.7",
    cseq: int = 1,
    via_host: str = "198.51.100.7:5060",
    branch: str = "z9hG4bK776asdhds",
    sdp: bool | None = None,
    compact: bool = False,
) -> bytes:
    """A well-formed SIP request (RFC 3261 mandatory headers; an SDP offer for INVITE by default)."""
    if sdp is None:
        sdp = method == "INVITE"
    body = (
        b"v=0\r\no=- 2890844526 2890844526 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\n"
        b"t=0 0\r\nm=audio 49170 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n"
        if sdp
        else b""
    )
    n = (
        {"via": "v", "from": "f", "to": "t", "call-id": "i", "ctype": "c", "clen": "l"}
        if compact
        else {
            "via": "Via",
            "from": "From",
            "to": "To",
            "call-id": "Call-ID",
            "ctype": "Content-Type",
            "clen": "Content-Length",
        }
    )
    lines = [
        f"{method} {request_uri} SIP/2.0",
        f"{n['via']}: SIP/2.0/UDP {via_host};branch={branch}",
        "Max-Forwards: 70",
        f"{n['from']}: <{from_uri}>;tag=1928301774",
        f"{n['to']}: <{to_uri or request_uri}>",
        f"{n['call-id']}: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:{from_uri.split(':', 1)[-1].split('@')[0]}@{via_host}>",
    ]
    if user_agent is not None:
        lines.append(f"User-Agent: {user_agent}")
    if sdp:
        lines.append(f"{n['ctype']}: application/sdp")
    lines.append(f"{n['clen']}: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def sip_response(
    status: int = 200,
    reason: str = "OK",
    *,
    method: str = "INVITE",
    server: str | None = None,
    call_id: str = "a84b4c76e66710@198.51.100.7",
    cseq: int = 1,
) -> bytes:
    """A well-formed SIP response without body."""
    lines = [
        f"SIP/2.0 {status} {reason}",
        "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asdhds",
        "From: <sip:+15559870000@carrier.example.com>;tag=1928301774",
        "To: <sip:+15551230000@sbc.example.net>;tag=a6c85cf",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
    ]
    if server:
        lines.append(f"Server: {server}")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _csum(data: bytes) -> int:
    """The Internet checksum (RFC 1071), so tshark sees a valid IPv4 header."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f">{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _mac_for(addr: bytes) -> bytes:
    """A stable locally administered unicast MAC derived from an address."""
    return b"\x02" + addr[-5:].rjust(5, b"\0")


def build_frame(
    row: np.void,
    payload: bytes = b"",
    *,
    vlans: Sequence[int] = (),
    ethernet: bool = True,
) -> tuple[bytes, int]:
    """The full packet for one FLOW_DTYPE row and its frame length (FCS included when Ethernet).

    Returns ``(frame, frame_length)``: ``frame`` holds the link, IP and transport headers plus
    ``payload``; ``frame_length`` is the row's ``bytes`` raised to fit them.
    """
    src = ipaddress.ip_address(halves_to_addr(row["src_hi"], row["src_lo"]))
    dst = ipaddress.ip_address(halves_to_addr(row["dst_hi"], row["dst_lo"]))
    v6 = src.version == 6 or dst.version == 6 or int(row["ip_version"]) == 6
    if v6:
        src, dst = ipaddress.IPv6Address(_v6int(src)), ipaddress.IPv6Address(_v6int(dst))
    proto = int(row["proto"])
    l4 = _transport(row, proto)
    ip_hlen = 40 if v6 else 20
    l2 = b""
    if ethernet:
        l2 = _mac_for(dst.packed) + _mac_for(src.packed)
        for vid in vlans:
            l2 += struct.pack(">HH", 0x8100, vid & 0xFFF)
        l2 += b"\x86\xdd" if v6 else b"\x08\x00"
    extra = _FCS if ethernet else 0
    natural = len(l2) + ip_hlen + len(l4) + len(payload) + extra
    frame_length = max(int(row["bytes"]), natural)
    ip_total = frame_length - len(l2) - extra
    if proto == 17:  # UDP length covers the rest of the IP packet
        l4 = l4[:4] + struct.pack(">H", min(ip_total - ip_hlen, 0xFFFF)) + l4[6:]
    if v6:
        ip = struct.pack(">IHBB", 6 << 28, min(ip_total - 40, 0xFFFF), proto, 64) + src.packed + dst.packed
    else:
        ip = struct.pack(
            ">BBHHHBBH4s4s", 0x45, 0, min(ip_total, 0xFFFF), 0, 0x4000, 64, proto, 0, src.packed, dst.packed
        )
        ip = ip[:10] + struct.pack(">H", _csum(ip)) + ip[12:]
    return l2 + ip + l4 + payload, frame_length


def _v6int(a: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    """IPv4 as IPv4-mapped IPv6 (the flow columns' own convention) when the row is IPv6."""
    return int(a) if a.version == 6 else 0xFFFF_0000_0000 | int(a)


def _transport(row: np.void, proto: int) -> bytes:
    """The transport header a decoder can give the row's columns back from."""
    sport, dport = int(row["src_port"]), int(row["dst_port"])
    if proto == 6:
        return struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 5 << 4, int(row["tcp_flags"]), 65535, 0, 0)
    if proto == 17:
        return struct.pack(">HHHH", sport, dport, 8, 0)
    if proto == 132:
        return struct.pack(">HHII", sport, dport, 0, 0)
    if proto == 1 or proto == 58:
        return struct.pack(">BBHI", int(row["icmp_type"]), int(row["icmp_code"]), 0, 0)
    return b""


def _xdr_opaque(data: bytes) -> bytes:
    """XDR pads variable-length opaque data to 4 bytes."""
    return data + b"\0" * (-len(data) % 4)


def _record(fmt: int, body: bytes) -> bytes:
    """A sample or record: data format, length, padded body."""
    body = _xdr_opaque(body)
    return struct.pack(">II", fmt, len(body)) + body


class SflowEncoder:
    """One sFlow agent (address, sub-agent) that turns rows into datagrams, keeping sequences.

    ``expanded`` writes expanded flow/counter samples (formats 3/4); ``ethernet=False`` writes
    bare IP headers (header_protocol 11/12); ``vlans`` tags every Ethernet frame (QinQ when two).
    """

    def __init__(
        self,
        agent: str = "192.0.2.1",
        *,
        sub_agent_id: int = 0,
        header_bytes: int = 128,
        max_datagram: int = 1400,
        expanded: bool = False,
        ethernet: bool = True,
        vlans: Sequence[int] = (),
        if_index: int = 1,
        output_if_index: int = 2,
        sequence: int = 1,
        uptime_ms: int = 0,
    ) -> None:
        addr = ipaddress.ip_address(agent)
        self.agent = agent
        self._agent_xdr = struct.pack(">I", 1 if addr.version == 4 else 2) + addr.packed
        self.sub_agent_id = sub_agent_id
        self.header_bytes = header_bytes
        self.max_datagram = max_datagram
        self.expanded = expanded
        self.ethernet = ethernet
        self.vlans = tuple(vlans)
        self.if_index = if_index
        self.output_if_index = output_if_index
        self.sequence = sequence  # the next datagram's sequence number
        self.uptime_ms = uptime_ms
        self._sample_seq: dict[tuple[int, int], int] = {}  # (kind, source) -> last sample sequence
        self._pool: dict[int, int] = {}

    # -- public -------------------------------------------------------------------------------

    def flow_datagrams(
        self,
        flows: np.ndarray,
        payloads: Sequence[bytes | None] | None = None,
        *,
        counters: Sequence[InterfaceCounters] = (),
        uptime_ms: int | None = None,
    ) -> list[bytes]:
        """Datagrams carrying one flow sample per row (then any counter samples), in row order."""
        samples = [self.flow_sample(row, payloads[i] if payloads is not None else None) for i, row in enumerate(flows)]
        samples += [self.counter_sample(c) for c in counters]
        return self.pack(samples, uptime_ms=uptime_ms)

    def counter_datagrams(self, counters: Sequence[InterfaceCounters], *, uptime_ms: int | None = None) -> list[bytes]:
        """Datagrams carrying one counter sample (generic interface counters) per entry."""
        return self.pack([self.counter_sample(c) for c in counters], uptime_ms=uptime_ms)

    def flow_sample(self, row: np.void, payload: bytes | None = None) -> bytes:
        """One encoded flow sample (tag, length and body) for a FLOW_DTYPE row."""
        frame, frame_length = build_frame(row, payload or b"", vlans=self.vlans, ethernet=self.ethernet)
        header = frame[: self.header_bytes]
        if self.ethernet:
            hproto, stripped = _HEADER_PROTOCOL_ETHERNET, _FCS
        else:
            hproto, stripped = (_HEADER_PROTOCOL_IPV6 if frame[0] >> 4 == 6 else _HEADER_PROTOCOL_IPV4), 0
        frame_length = min(frame_length, 0xFFFF_FFFF)
        raw = _record(1, struct.pack(">IIII", hproto, frame_length, stripped, len(header)) + header)
        rate = min(max(int(row["sampling"]), 1), 0xFFFF_FFFF)
        source = self.if_index
        seq = self._next_sample_seq(0, source)
        pool = self._pool[source] = (self._pool.get(source, 0) + rate) & 0xFFFF_FFFF
        if self.expanded:
            body = struct.pack(
                ">IIIIIIIIIII", seq, 0, source, rate, pool, 0, 0, self.if_index, 0, self.output_if_index, 1
            )
            return _record(3, body + raw)
        body = struct.pack(
            ">IIIIIIII",
            seq,
            source & 0xFF_FFFF,
            rate,
            pool,
            0,
            self.if_index & 0x3FFF_FFFF,
            self.output_if_index & 0x3FFF_FFFF,
            1,
        )
        return _record(1, body + raw)

    def counter_sample(self, counters: InterfaceCounters) -> bytes:
        """One encoded counter sample with a generic interface counters record."""
        seq = self._next_sample_seq(1, counters.if_index)
        rec = _record(1, counters.pack())
        if self.expanded:
            return _record(4, struct.pack(">IIII", seq, 0, counters.if_index, 1) + rec)
        return _record(2, struct.pack(">III", seq, counters.if_index & 0xFF_FFFF, 1) + rec)

    def pack(self, samples: Sequence[bytes], *, uptime_ms: int | None = None) -> list[bytes]:
        """Group encoded samples into datagrams of at most ``max_datagram`` bytes (one at least)."""
        if uptime_ms is not None:
            self.uptime_ms = uptime_ms
        out: list[bytes] = []
        group: list[bytes] = []
        size = head = 4 + len(self._agent_xdr) + 16
        for s in samples:
            if group and size + len(s) > self.max_datagram:
                out.append(self._datagram(group))
                group, size = [], head
            group.append(s)
            size += len(s)
        if group:
            out.append(self._datagram(group))
        return out

    # -- internals ----------------------------------------------------------------------------

    def _datagram(self, samples: list[bytes]) -> bytes:
        head = (
            struct.pack(">I", 5)
            + self._agent_xdr
            + struct.pack(">IIII", self.sub_agent_id, self.sequence, self.uptime_ms & 0xFFFF_FFFF, len(samples))
        )
        self.sequence = (self.sequence + 1) & 0xFFFF_FFFF
        return head + b"".join(samples)

    def _next_sample_seq(self, kind: int, source: int) -> int:
        seq = (self._sample_seq.get((kind, source), 0) + 1) & 0xFFFF_FFFF
        self._sample_seq[(kind, source)] = seq
        return seq
