"""sFlow version 5 decoder (sflow.org "sFlow Version 5", July 2004).

sFlow is packet *sampling*: every flow sample is one sampled packet, so each flow sample becomes one
``FLOW_DTYPE`` row with ``packets`` = 1, ``bytes`` = the frame length (raw, unscaled) and ``sampling``
= the sample's sampling rate. Sample rates are orders of magnitude below NetFlow record rates, so
the per-sample loop is plain Python, kept lean: precompiled ``struct.Struct`` readers, rows packed
into one preallocated buffer per batch, no per-sample objects except the evidence header copy.

Handled: datagram header (IPv4/IPv6 agent), flow samples (1) and expanded flow samples (3) with
raw packet header records (format 1: Ethernet, 802.1Q/QinQ, MPLS, IPv4, IPv6 with extension headers,
TCP, UDP, SCTP, ICMP, ICMPv6; header_protocol 1, 11, 12), Ethernet frame data (2), sampled IPv4 (3)
and IPv6 (4), extended switch (1001); counter samples (2) and expanded counter samples (4), counted,
with the generic interface counters (1) decoded for records. Other records are skipped by length.
A raw header wins over sampled IPv4/IPv6 records in the same sample (those fill in when it is absent).

SIP: UDP/TCP payloads from or to port 5060 are parsed (``sip_method``, ``sip_flags``), and a payload
that does not parse sets ``SipFlag.MALFORMED`` (the ``malformed_sip`` signal); payloads on other
ports count only when they start like SIP and parse cleanly. The payload ends at the IP/UDP length
(never in Ethernet padding), and a header cut before that end is parsed as truncated, not malformed.

Sequence numbers: datagrams are tracked per (exporter, agent, sub-agent) into ``DatagramReport.lost``
(late and duplicate datagrams count nothing; an uptime going back means a restart), flow and counter
samples per source id into ``DatagramReport.lost_samples``. State is bounded (oldest forgotten).

Decoded records (``want_records``) use IPFIX names; choices where sFlow has no IPFIX twin:
``dataLinkFrameSize`` (IE 312) is the sampled frame's length, and so are ``octetDeltaCount``
(the ``bytes`` column) with ``packetDeltaCount`` = 1; ``ipTotalLength`` (IE 224) is the IP
header's total length; ``dot1qVlanId`` / ``dot1qCustomerVlanId`` are the outer / inner 802.1Q tags
in the sampled header, ``vlanId`` / ``postVlanId`` the extended switch record's in / out VLAN
(the outer header tag when that record is absent). sFlow-only values keep descriptive names
(``sampleType``, ``sourceIdType``, ``sampleSequenceNumber``, ``datagramSequenceNumber``, ...).
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import numpy as np

from voxguard.ingest.decode.base import DatagramReport, DecodeBatch, RawSample
from voxguard.ingest.decode.flows import FLOW_DTYPE, empty_flows
from voxguard.ingest.decode.sip import looks_like_sip, parse_sip

__all__ = ["SAMPLE_TYPES", "SflowDecoder"]

SAMPLE_TYPES = {
    1: "flow_sample",
    2: "counters_sample",
    3: "expanded_flow_sample",
    4: "expanded_counters_sample",
}
SIP_PORT = 5060
MAX_STATE = 65_536  # sequence-tracking entries kept before the oldest are forgotten
REORDER_MS = 60_000  # uptime going back by more than this means the agent restarted
_MIN_FLOW_SAMPLE = 8 + 32  # tag + length + the smallest (compact) flow sample header

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_2U16 = struct.Struct(">HH")
_2U32 = struct.Struct(">II")
_4U32 = struct.Struct(">IIII")
_U64X2 = struct.Struct(">QQ")
_U64X4 = struct.Struct(">QQQQ")
_DGRAM_V4 = struct.Struct(">II4sIIII")  # version, addr type, addr, sub-agent, seq, uptime, n
_DGRAM_V6 = struct.Struct(">II16sIIII")
_DGRAM_HEADS = {1: _DGRAM_V4, 2: _DGRAM_V6}  # by agent address type (0 = unknown: no address)
_FLOW = struct.Struct(">IIIIIIII")  # seq, source id, rate, pool, drops, input, output, n records
_FLOW_X = struct.Struct(">IIIIIIIIIII")  # seq, id type/index, rate, pool, drops, in f/v, out f/v, n
_COUNTERS = struct.Struct(">III")  # seq, source id, n records
_COUNTERS_X = struct.Struct(">IIII")  # seq, id type, id index, n records
_RAW_HEADER = _4U32  # header protocol, frame length, stripped, header length
_SAMPLED_V4 = struct.Struct(">II4s4sIIII")  # length, proto, src, dst, sport, dport, flags, tos
_SAMPLED_V6 = struct.Struct(">II16s16sIIII")
_ETH_FRAME = struct.Struct(">I6s2x6s2xI")  # length, src mac, dst mac, type
_SWITCH = _4U32  # src vlan, src prio, dst vlan, dst prio
_IFCOUNTERS = struct.Struct(">IIQIIQIIIIIIQIIIIII")
# fmt: off
_IFCOUNTER_NAMES = (
    "ifIndex", "ifType", "ifSpeed", "ifDirection", "ifStatus", "ifInOctets", "ifInUcastPkts",
    "ifInMulticastPkts", "ifInBroadcastPkts", "ifInDiscards", "ifInErrors", "ifInUnknownProtos",
    "ifOutOctets", "ifOutUcastPkts", "ifOutMulticastPkts", "ifOutBroadcastPkts", "ifOutDiscards",
    "ifOutErrors", "ifPromiscuousMode",
)

# One output row, packed little-endian without padding into one buffer per batch, then copied
# column by column into FLOW_DTYPE (columns added to FLOW_DTYPE later keep their neutral value).
# The order puts the _packet() tuple's first 11 items last, so a row packs as (..., *p[:11]).
_ROW_FIELDS = (
    "bytes", "sampling", "datagram_ix", "sip_method", "sip_flags",
    "src_hi", "src_lo", "dst_hi", "dst_lo", "src_port", "dst_port", "proto", "tcp_flags", "ip_version",
    "icmp_type", "icmp_code",
)
# fmt: on
_ROW_DTYPE = np.dtype([(n, FLOW_DTYPE[n].newbyteorder("<")) for n in _ROW_FIELDS])
_ROW = struct.Struct("<" + "".join({8: "Q", 4: "I", 2: "H", 1: "B"}[FLOW_DTYPE[n].itemsize] for n in _ROW_FIELDS))

_V4_MAPPED = 0x0000_FFFF_0000_0000
_VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100, 0x9200, 0x9300))
_V6_EXT = frozenset((0, 43, 60, 135, 139, 140))  # hop-by-hop, routing, dst opts, mobility, HIP, shim6
_PORT_PROTOS = frozenset((6, 17, 132))  # TCP, UDP, SCTP
_MPLS_PAYLOAD = {4: 0x0800, 6: 0x86DD}  # first nibble after the bottom label -> ethertype

# The _packet() tuple: its first 11 items are row columns (see _ROW_FIELDS), then offsets.
P_SHI, P_SLO, P_DHI, P_DLO, P_SPORT, P_DPORT, P_PROTO, P_FLAGS, P_IPV, P_ITYPE, P_ICODE = range(11)
P_IPLEN, P_PAY, P_PAYEND, P_VLAN1, P_VLAN2, P_L3OFF = range(11, 17)
_NO_PACKET: tuple[int, ...] = (0,) * 12 + (-1,) * 5


def _l2_only(vlan1: int, vlan2: int) -> tuple[int, ...]:
    """A header that ends (or leaves IP) before the IP header: only the VLAN tags are known."""
    return (0,) * 12 + (-1, -1, vlan1, vlan2, -1)


def _packet(hproto: int, h: bytes) -> tuple[int, ...]:
    """Decode a sampled header down to L4 (and find the L4 payload); tolerant of truncation.

    Returns (src hi, src lo, dst hi, dst lo, sport, dport, proto, tcp flags, ip version, icmp type,
    icmp code, ip total length, payload offset, payload end, outer vlan, inner vlan, L3 offset);
    offsets and vlans are -1 when absent.
    """
    n = len(h)
    vlan1 = vlan2 = -1
    if hproto == 1:
        if n < 14:
            return _NO_PACKET
        off = 14
        et = _U16.unpack_from(h, 12)[0]
        while et in _VLAN_TPIDS:  # 802.1Q, QinQ and deeper stacks, bounded by the header length
            if off + 4 > n:
                return _l2_only(vlan1, vlan2)
            tci, et = _2U16.unpack_from(h, off)
            if vlan1 < 0:
                vlan1 = tci & 0xFFF
            elif vlan2 < 0:
                vlan2 = tci & 0xFFF
            off += 4
        if et == 0x8847 or et == 0x8848:  # MPLS: skip the label stack, guess the payload by version
            bottom = False
            while not bottom and off + 4 <= n:
                bottom = bool(h[off + 2] & 1)  # the S bit of the label entry
                off += 4
            if not bottom or off >= n:
                return _l2_only(vlan1, vlan2)
            et = _MPLS_PAYLOAD.get(h[off] >> 4, 0)
        if et == 0x0800:
            ipv = 4
        elif et == 0x86DD:
            ipv = 6
        else:
            return _l2_only(vlan1, vlan2)
    elif hproto == 11:
        off, ipv = 0, 4
    elif hproto == 12:
        off, ipv = 0, 6
    else:
        return _NO_PACKET
    l3 = off
    frag = False
    if ipv == 4:
        if off + 20 > n or h[off] >> 4 != 4:
            return _l2_only(vlan1, vlan2)
        ihl = (h[off] & 15) * 4
        iplen = _U16.unpack_from(h, off + 2)[0]
        frag = (_U16.unpack_from(h, off + 6)[0] & 0x1FFF) != 0
        proto = h[off + 9]
        src, dst = _2U32.unpack_from(h, off + 12)
        shi, slo, dhi, dlo = 0, _V4_MAPPED | src, 0, _V4_MAPPED | dst
        l4 = off + ihl if ihl >= 20 else n  # a bad IHL: no transport header to trust
    else:
        if off + 40 > n or h[off] >> 4 != 6:
            return _l2_only(vlan1, vlan2)
        iplen = _U16.unpack_from(h, off + 4)[0] + 40
        proto = h[off + 6]
        shi, slo, dhi, dlo = _U64X4.unpack_from(h, off + 8)
        l4 = off + 40
        for _ in range(8):  # extension header chain, bounded
            if proto in _V6_EXT:
                if l4 + 2 > n:
                    break
                proto, elen = h[l4], (h[l4 + 1] + 1) * 8
            elif proto == 44:  # fragment
                if l4 + 8 > n:
                    break
                proto, elen = h[l4], 8
                frag = frag or (_U16.unpack_from(h, l4 + 2)[0] & 0xFFF8) != 0
            elif proto == 51:  # AH
                if l4 + 2 > n:
                    break
                proto, elen = h[l4], (h[l4 + 1] + 2) * 4
            else:
                break
            l4 += elen
    sport = dport = flags = itype = icode = 0
    pay = payend = -1
    if not frag and l4 < n:
        if proto in _PORT_PROTOS and l4 + 4 <= n:
            sport, dport = _2U16.unpack_from(h, l4)
            if proto == 6:
                if l4 + 14 <= n:
                    flags = h[l4 + 13]
                    pay = l4 + (h[l4 + 12] >> 4) * 4
            elif proto == 17:
                pay = l4 + 8
        elif (proto == 1 or proto == 58) and l4 + 2 <= n:
            itype, icode = h[l4], h[l4 + 1]
        if pay >= 0:
            payend = min(n, l3 + iplen) if iplen else n  # not into Ethernet padding
            if proto == 17 and l4 + 6 <= n:
                ulen = _U16.unpack_from(h, l4 + 4)[0]
                if ulen >= 8:
                    payend = min(payend, l4 + ulen)
    p = (shi, slo, dhi, dlo, sport, dport, proto, flags, ipv, itype, icode)
    return (*p, iplen, pay, payend, vlan1, vlan2, l3)


def _sampled_ip(ipv: int, d: bytes, off: int) -> tuple[int, ...]:
    """A sampled IPv4 (format 3) or IPv6 (format 4) record as a _packet() tuple."""
    if ipv == 4:
        length, proto, src, dst, sport, dport, flags, _ = _SAMPLED_V4.unpack_from(d, off)
        shi, slo, dhi, dlo = 0, _V4_MAPPED | _U32.unpack(src)[0], 0, _V4_MAPPED | _U32.unpack(dst)[0]
    else:
        length, proto, src, dst, sport, dport, flags, _ = _SAMPLED_V6.unpack_from(d, off)
        (shi, slo), (dhi, dlo) = _U64X2.unpack(src), _U64X2.unpack(dst)
    p = (shi, slo, dhi, dlo, sport & 0xFFFF, dport & 0xFFFF, proto & 0xFF, flags & 0xFF, ipv, 0, 0)
    return (*p, length, -1, -1, -1, -1, -1)


def _sip(p: tuple[int, ...], h: bytes) -> tuple[int, int, Any]:
    """SIP in the sampled payload: (SipMethod code, SipFlag bits, SipInfo or None)."""
    pay, payend = p[P_PAY], p[P_PAYEND]
    if pay < 0 or payend <= pay:
        return 0, 0, None
    proto = p[P_PROTO]
    if proto != 17 and proto != 6:
        return 0, 0, None
    data = h[pay:payend]
    on_port = p[P_SPORT] == SIP_PORT or p[P_DPORT] == SIP_PORT
    if not on_port and not looks_like_sip(data):
        return 0, 0, None
    iplen = p[P_IPLEN]
    truncated = iplen == 0 or p[P_L3OFF] + iplen > len(h)
    info = parse_sip(data, truncated=truncated, stream=proto == 6)
    if not on_port and not info.is_sip:
        return 0, 0, None  # something else that happens to start with a method name
    return info.method, info.flags, info


def _ntop(hi: int, lo: int) -> str:
    """(hi, lo) as stored in the flow columns -> text, IPv4 for mapped addresses."""
    if hi == 0 and lo >> 32 == 0xFFFF:
        return socket.inet_ntop(socket.AF_INET, _U32.pack(lo & 0xFFFF_FFFF))
    return socket.inet_ntop(socket.AF_INET6, _U64X2.pack(hi, lo))


class SflowDecoder:
    """sFlow v5 ``Decoder``: stateful only for sequence tracking (lost datagrams and samples)."""

    def __init__(self) -> None:
        # (exporter, agent address bytes, sub-agent id) -> (last datagram sequence, last uptime ms)
        self._dgram_seq: dict[tuple[str, bytes, int], tuple[int, int]] = {}
        # (exporter, agent address bytes, sub-agent id) -> {(kind, source id): last sample sequence}
        self._sample_seq: dict[tuple[str, bytes, int], dict[tuple[int, int], int]] = {}
        # The datagram being decoded (set per datagram, so the per-sample calls stay short).
        self._report = DatagramReport(exporter="", format="sflow5")
        self._seqs: dict[tuple[int, int], int] = {}
        self._ctx: tuple[Any, ...] = ()
        self._sample_ix = 0
        self._nrows = 0  # rows packed so far in this batch (kept if a datagram fails half-way)
        self._now_ms: int | None = None  # the batch's receive time: start_ms/end_ms of its rows

    def decode_batch(
        self,
        datagrams: list[tuple[bytes, str]],
        *,
        want_records: bool = False,
        now: float | None = None,
    ) -> DecodeBatch:
        """Decode ``(payload, exporter address)`` pairs; never raises on bad input."""
        cap = sum(len(d) for d, _ in datagrams) // _MIN_FLOW_SAMPLE + 1
        buf = bytearray(cap * _ROW.size)
        batch = DecodeBatch(records=[] if want_records else None)
        self._nrows = 0
        self._now_ms = None if now is None else int(now * 1000)
        for ix, (data, exporter) in enumerate(datagrams):
            report = DatagramReport(exporter=exporter, format="sflow5")
            batch.reports.append(report)
            try:
                self._datagram(bytes(data), ix, report, buf, batch)
            except Exception as exc:  # a decoder bug must not lose the rest of the batch
                report.error = f"internal decoder error: {type(exc).__name__}: {exc}"
        nrows = self._nrows
        rows = np.frombuffer(buf, dtype=_ROW_DTYPE, count=nrows)
        flows = empty_flows(nrows)
        for name in _ROW_FIELDS:
            flows[name] = rows[name]
        flows["packets"] = 1
        if now is not None:
            flows["start_ms"] = flows["end_ms"] = self._now_ms
        batch.flows = flows
        return batch

    # -- datagram -------------------------------------------------------------------------------

    def _datagram(self, d: bytes, ix: int, report: DatagramReport, buf: bytearray, batch: DecodeBatch) -> None:
        """Decode one datagram: rows into ``buf``, the rest into ``batch``, problems into ``report``."""
        n = len(d)
        version, atype = _2U32.unpack_from(d, 0) if n >= 8 else (-1, -1)
        if version != 5:
            report.format = "unknown"
            report.error = (
                f"not sFlow v5: version field is {version}"
                if n >= 8
                else f"datagram of {n} bytes is too short for an sFlow header"
            )
            return
        head = _DGRAM_HEADS.get(atype)
        if head is None and atype != 0:
            report.error = f"bad agent address type {atype}"
            return
        size = head.size if head is not None else 24  # type 0 ("unknown"): no address bytes
        if n < size:
            report.error = f"datagram of {n} bytes is too short for an sFlow v5 header"
            return
        if head is not None:
            _, _, araw, sub, seq, uptime, nsamples = head.unpack_from(d, 0)
            agent = socket.inet_ntop(socket.AF_INET if atype == 1 else socket.AF_INET6, araw)
        else:
            araw, agent = b"", ""
            sub, seq, uptime, nsamples = _4U32.unpack_from(d, 8)
        report.agent, report.domain, report.sequence = agent, sub, seq
        key = (report.exporter, araw, sub)  # the exporter too: agents misconfigured alike stay apart
        report.lost = self._track_datagram(key, seq, uptime)
        seqs = self._sample_seq.get(key)
        if seqs is None:
            _bounded_put(self._sample_seq, key, seqs := {})
        self._report, self._seqs = report, seqs
        self._ctx = (ix, report.exporter, agent, sub, seq, uptime, self._now_ms)
        records = batch.records
        off = size
        for i in range(nsamples):
            if off + 8 > n:
                report.error = (
                    f"datagram declares {nsamples} samples but holds {i}"
                    if off == n
                    else f"sample {i}: truncated sample header at byte {off}"
                )
                break
            tag, slen = _2U32.unpack_from(d, off)
            self._sample_ix = i
            start, end = off + 8, off + 8 + slen
            if end > n:
                report.error = f"sample {i}: length {slen} overruns the datagram ({n - start} bytes left)"
                break
            off = (end + 3) & ~3
            if tag == 1 or tag == 3:
                self._flow_sample(d, start, end, tag == 3, buf, batch)
            elif tag == 2 or tag == 4:
                rec = self._counter_sample(d, start, end, tag == 4, records is not None)
                if rec is not None and records is not None:
                    records.append(rec)
        else:
            if off < n and report.error is None:
                report.error = f"{n - off} trailing bytes after {nsamples} samples"

    def _track_datagram(self, key: tuple[str, bytes, int], seq: int, uptime: int) -> int:
        """Datagrams lost since the last one of this (agent, sub-agent); 0 on restart or reorder."""
        prev = self._dgram_seq.get(key)
        if prev is None:
            _bounded_put(self._dgram_seq, key, (seq, uptime))
            return 0
        diff = (seq - prev[0]) & 0xFFFF_FFFF
        if uptime + REORDER_MS < prev[1]:  # the agent restarted (or its uptime wrapped)
            self._dgram_seq[key] = (seq, uptime)
            self._sample_seq.pop(key, None)
            return 0
        if 0 < diff < 0x8000_0000:
            self._dgram_seq[key] = (seq, uptime)
            return diff - 1
        return 0  # a duplicate or a late datagram: counted as lost before, nothing to add

    def _track_sample(self, skey: tuple[int, int], seq: int) -> None:
        """Count samples lost since the last one from this source; late ones count nothing."""
        seqs = self._seqs
        prev = seqs.get(skey)
        if prev is None:
            _bounded_put(seqs, skey, seq, 4096)
            return
        diff = (seq - prev) & 0xFFFF_FFFF
        if 0 < diff < 0x8000_0000:
            seqs[skey] = seq
            self._report.lost_samples += diff - 1

    def _bad(self, why: str) -> bool:
        """Drop the current sample: count it, keep the first reason; returns False for the caller."""
        report = self._report
        report.dropped += 1
        if report.error is None:
            report.error = f"sample {self._sample_ix}: {why}"
        return False

    # -- samples --------------------------------------------------------------------------------

    def _flow_sample(self, d: bytes, off: int, end: int, expanded: bool, buf: bytearray, batch: DecodeBatch) -> bool:
        """One flow sample -> the next row of ``buf`` (and a RawSample, a record); False if invalid."""
        if expanded:
            if off + _FLOW_X.size > end:
                return self._bad("expanded flow sample shorter than its header")
            head = _FLOW_X.unpack_from(d, off)
            off += _FLOW_X.size
        else:
            if off + _FLOW.size > end:
                return self._bad("flow sample shorter than its header")
            seq, src, rate, pool, drops, inp, out, nrec = _FLOW.unpack_from(d, off)
            off += _FLOW.size
            head = (seq, src >> 24, src & 0xFF_FFFF, rate, pool, drops, inp >> 30, inp & 0x3FFF_FFFF,
                    out >> 30, out & 0x3FFF_FFFF, nrec)  # fmt: skip
        nrec = head[10]
        hdr = b""
        hproto = frame_len = stripped = -1
        p = _NO_PACKET
        eth: tuple[Any, ...] | None = None
        switch: tuple[int, ...] | None = None
        for i in range(nrec):
            if off + 8 > end:
                return self._bad(f"flow sample declares {nrec} records, only {i} fit")
            fmt, rlen = _2U32.unpack_from(d, off)
            roff = off + 8
            off = roff + rlen
            if off > end:
                return self._bad(f"flow record {fmt} of {rlen} bytes overruns its sample")
            off = (off + 3) & ~3
            if fmt == 1:
                if hproto >= 0:
                    continue  # a second raw header: keep the first
                if rlen < 16:
                    return self._bad("raw packet header record too short")
                hproto, frame_len, stripped, hlen = _RAW_HEADER.unpack_from(d, roff)
                if hlen > rlen - 16:
                    return self._bad(f"sampled header of {hlen} bytes overruns its record")
                hdr = d[roff + 16 : roff + 16 + hlen]
                p = _packet(hproto, hdr)
            elif (fmt == 3 or fmt == 4) and hproto < 0 and p[P_IPV] == 0:
                if rlen < (_SAMPLED_V4 if fmt == 3 else _SAMPLED_V6).size:
                    return self._bad(f"sampled IP record of {rlen} bytes")
                p = _sampled_ip(4 if fmt == 3 else 6, d, roff)
                if frame_len < 0:
                    frame_len = p[P_IPLEN]
            elif fmt == 2 and rlen >= _ETH_FRAME.size:
                eth = _ETH_FRAME.unpack_from(d, roff)
                if hproto < 0:
                    frame_len = eth[0]
            elif fmt == 1001 and rlen >= _SWITCH.size:
                switch = _SWITCH.unpack_from(d, roff)
            # anything else (extended router, gateway, user, url, mpls, enterprise...): skipped
        sip_method, sip_flags, sip_info = _sip(p, hdr) if p[P_PAY] >= 0 else (0, 0, None)
        rate, ix, row = head[3], self._ctx[0], self._nrows
        if frame_len < 0:
            frame_len = 0
        _ROW.pack_into(buf, row * _ROW.size, frame_len, rate or 1, ix, sip_method, sip_flags, *p[:11])
        self._nrows = row + 1
        report = self._report
        report.flow_records += 1
        if report.sampling_interval is None:
            report.sampling_interval = rate
        self._track_sample((0, (head[1] << 24) | head[2]), head[0])
        if hproto >= 0:
            batch.samples.append(RawSample(ix, row, hproto, frame_len, hdr))
        if batch.records is not None:
            raw = (hproto, frame_len, stripped, hdr)
            batch.records.append(_flow_record(self._ctx, expanded, head, raw, p, eth, switch, sip_info))
        return True

    def _counter_sample(self, d: bytes, off: int, end: int, expanded: bool, want: bool) -> dict[str, Any] | None:
        """Count a counter sample; with ``want``, decode it (generic interface counters) as a record."""
        if expanded:
            if off + _COUNTERS_X.size > end:
                self._bad("expanded counters sample shorter than its header")
                return None
            seq, id_type, id_index, nrec = _COUNTERS_X.unpack_from(d, off)
            off += _COUNTERS_X.size
        else:
            if off + _COUNTERS.size > end:
                self._bad("counters sample shorter than its header")
                return None
            seq, source, nrec = _COUNTERS.unpack_from(d, off)
            off += _COUNTERS.size
            id_type, id_index = source >> 24, source & 0xFF_FFFF
        formats: list[int] = []
        counters: dict[str, int] | None = None
        for i in range(nrec):
            if off + 8 > end:
                self._bad(f"counters sample declares {nrec} records, only {i} fit")
                return None
            fmt, rlen = _2U32.unpack_from(d, off)
            roff = off + 8
            if roff + rlen > end:
                self._bad(f"counters record {fmt} of {rlen} bytes overruns its sample")
                return None
            off = (roff + rlen + 3) & ~3
            if want:
                formats.append(fmt)
                if fmt == 1 and rlen >= _IFCOUNTERS.size and counters is None:
                    counters = dict(zip(_IFCOUNTER_NAMES, _IFCOUNTERS.unpack_from(d, roff), strict=True))
        self._report.counter_records += 1
        self._track_sample((1, (id_type << 24) | id_index), seq)
        if not want:
            return None
        rec = _common(self._ctx, "expanded_counters_sample" if expanded else "counters_sample", seq)
        rec.update(sourceIdType=id_type, sourceIdIndex=id_index, counterRecordFormats=formats)
        if counters is not None:
            rec["interfaceCounters"] = counters
        return rec


def _bounded_put(d: dict[Any, Any], key: Any, value: Any, limit: int = MAX_STATE) -> None:
    """Insert, forgetting the oldest entry first when full (spoofed agents cannot grow it)."""
    if len(d) >= limit:
        del d[next(iter(d))]
    d[key] = value


def _common(ctx: tuple[Any, ...], sample_type: str, seq: int) -> dict[str, Any]:
    """The keys every record (flow or counter sample) has."""
    ix, exporter, agent, sub, dseq, uptime, now_ms = ctx
    rec = {
        "format": "sflow5",
        "exporter": exporter,
        "agent": agent,
        "observationDomainId": sub,
        "datagramSequenceNumber": dseq,
        "agentUptimeMilliseconds": uptime,
        "datagramIndex": ix,
        "sampleType": sample_type,
        "sampleSequenceNumber": seq,
    }
    if now_ms is not None:  # sFlow has no flow times: the receive time stands for both
        rec["flowStartMilliseconds"] = rec["flowEndMilliseconds"] = now_ms
    return rec


def _flow_record(
    ctx: tuple[Any, ...],
    expanded: bool,
    head: tuple[int, ...],
    raw: tuple[int, int, int, bytes],
    p: tuple[int, ...],
    eth: tuple[Any, ...] | None,
    switch: tuple[int, ...] | None,
    sip_info: Any,
) -> dict[str, Any]:
    """The full decoded view of one flow sample (only built when records are asked for)."""
    seq, id_type, id_index, rate, pool, drops, in_f, in_v, out_f, out_v, _ = head
    hproto, frame_len, stripped, hdr = raw
    rec = _common(ctx, "expanded_flow_sample" if expanded else "flow_sample", seq)
    rec.update(
        sourceIdType=id_type,
        sourceIdIndex=id_index,
        samplingInterval=rate,
        samplePool=pool,
        droppedPacketCount=drops,
        ingressInterface=in_v,
        ingressInterfaceFormat=in_f,
        egressInterface=out_v,
        egressInterfaceFormat=out_f,
        packetDeltaCount=1,
        octetDeltaCount=frame_len,
        dataLinkFrameSize=frame_len,
    )
    if hproto >= 0:
        rec.update(headerProtocol=hproto, sampledHeaderLength=len(hdr), strippedOctets=stripped)
    if hproto == 1 and len(hdr) >= 14:
        rec["destinationMacAddress"], rec["sourceMacAddress"] = hdr[0:6].hex(":"), hdr[6:12].hex(":")
    elif eth is not None:
        rec["sourceMacAddress"], rec["destinationMacAddress"] = eth[1].hex(":"), eth[2].hex(":")
    if p[P_VLAN1] >= 0:
        rec["dot1qVlanId"] = rec["vlanId"] = p[P_VLAN1]
    if p[P_VLAN2] >= 0:
        rec["dot1qCustomerVlanId"] = p[P_VLAN2]
    if switch is not None:  # values above 4095 mean "unknown" in practice (0xffffffff)
        if switch[0] < 4096:
            rec["vlanId"] = switch[0]
        if switch[2] < 4096:
            rec["postVlanId"] = switch[2]
    ipv, proto = p[P_IPV], p[P_PROTO]
    if ipv:
        fam = "IPv4" if ipv == 4 else "IPv6"
        rec[f"source{fam}Address"] = _ntop(p[P_SHI], p[P_SLO])
        rec[f"destination{fam}Address"] = _ntop(p[P_DHI], p[P_DLO])
        rec.update(ipVersion=ipv, protocolIdentifier=proto, ipTotalLength=p[P_IPLEN])
        if proto in _PORT_PROTOS:
            rec["sourceTransportPort"], rec["destinationTransportPort"] = p[P_SPORT], p[P_DPORT]
        if proto == 6:
            rec["tcpControlBits"] = p[P_FLAGS]
        elif proto == 1 or proto == 58:
            v = "IPv4" if proto == 1 else "IPv6"
            rec[f"icmpType{v}"], rec[f"icmpCode{v}"] = p[P_ITYPE], p[P_ICODE]
    if sip_info is not None:
        rec["sip"] = sip_info.as_dict()
    return rec
