"""NetFlow v5, NetFlow v9 and IPFIX encoders: FLOW_DTYPE arrays -> export datagrams.

Used by the simulator, the benchmarks and the round-trip tests, so they produce what real
exporters send: dense datagrams up to an MTU, templates (and an options template carrying the
sampling interval) in the first datagram and again every ``template_refresh`` datagrams, and
sequence numbers as each format defines them (v5 and IPFIX count records, v9 counts datagrams).
Records are built with one structured numpy array per call, not per-record Python.

Typical use::

    enc = NetflowV9Encoder(source_id=1, template_id=256, sampling_interval=1000)
    for payload in enc.encode(flows, unix_secs=int(time.time()), uptime_ms=3_600_000):
        sock.sendto(payload, collector)
"""

from __future__ import annotations

import struct

import numpy as np

_U32 = np.uint64(0xFFFF_FFFF)

# (IE id, length, FLOW column or computed name) of the data templates
_V4_FIELDS = [
    (8, 4, "src4"), (12, 4, "dst4"), (7, 2, "src_port"), (11, 2, "dst_port"), (4, 1, "proto"),
    (6, 1, "tcp_flags"), (32, 2, "icmp"),
]  # fmt: skip
_V6_FIELDS = [
    (27, 16, "src6"), (28, 16, "dst6"), (7, 2, "src_port"), (11, 2, "dst_port"), (4, 1, "proto"),
    (6, 1, "tcp_flags"), (139, 2, "icmp"),
]  # fmt: skip
_COUNTERS = [(1, 8, "bytes"), (2, 8, "packets")]
_V9_TIMES = [(22, 4, "first"), (21, 4, "last")]
_IPFIX_TIMES = [(152, 8, "start_ms"), (153, 8, "end_ms")]
_RECORD_SAMPLING = [(34, 4, "sampling")]


def _is_v6(flows: np.ndarray) -> np.ndarray:
    mapped = (flows["src_hi"] == 0) & ((flows["src_lo"] >> np.uint64(32)) == np.uint64(0xFFFF))
    return np.asarray((flows["ip_version"] == 6) | ((flows["ip_version"] != 4) & ~mapped))


def _records(
    flows: np.ndarray,
    fields: list[tuple[int, int, str]],
    *,
    uptime_ms: int = 0,
    export_ms: int = 0,
) -> np.ndarray:
    """Vectorised: FLOW rows -> big-endian records laid out as ``fields`` describes."""
    dt = np.dtype([(f"f{k}", (">u8", (2,)) if n == 16 else f">u{n}") for k, (_, n, _) in enumerate(fields)])
    out = np.zeros(len(flows), dtype=dt)
    for k, (_, _, src) in enumerate(fields):
        name = f"f{k}"
        if src in ("src4", "dst4"):
            out[name] = flows[src[:3] + "_lo"] & _U32
        elif src in ("src6", "dst6"):
            out[name][:, 0] = flows[src[:3] + "_hi"]
            out[name][:, 1] = flows[src[:3] + "_lo"]
        elif src == "icmp":
            out[name] = (flows["icmp_type"].astype(np.uint16) << 8) | flows["icmp_code"]
        elif src in ("first", "last"):  # sysUptime of the flow's first/last packet, mod 2^32
            col = flows["start_ms" if src == "first" else "end_ms"].astype(np.int64)
            out[name] = (np.int64(uptime_ms) - (np.int64(export_ms) - col)) & 0xFFFF_FFFF
        elif src in ("bytes", "packets", "sampling") and out.dtype[name].itemsize < 8:
            out[name] = np.minimum(flows[src], 0xFFFF_FFFF)
        else:
            out[name] = flows[src]
    return out


def _template_record(template_id: int, fields: list[tuple[int, int, str]]) -> bytes:
    body = b"".join(struct.pack("!HH", ie, n) for ie, n, _ in fields)
    return struct.pack("!HH", template_id, len(fields)) + body


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


class _TemplateEncoder:
    """Shared logic of the v9 and IPFIX encoders: templates, family split, dense packing."""

    version = 0
    header_len = 0

    def __init__(
        self,
        domain: int,
        template_id: int,
        *,
        ipv6: bool | None,
        sampling_interval: int | None,
        record_sampling: bool,
        mtu: int,
        template_refresh: int,
        time_fields: list[tuple[int, int, str]],
    ) -> None:
        if not 256 <= template_id <= 65533:
            raise ValueError(f"template_id {template_id} must be in 256..65533")
        self.domain = domain
        self.template_id = template_id
        self.ipv6 = ipv6
        self.sampling_interval = sampling_interval
        self.mtu = mtu
        self.template_refresh = max(1, template_refresh)
        self.sequence = 0
        self.datagrams = 0
        extra = _RECORD_SAMPLING if record_sampling else []
        self.fields = {
            4: _V4_FIELDS + _COUNTERS + time_fields + extra,
            6: _V6_FIELDS + _COUNTERS + time_fields + extra,
        }
        self.ids = {4: template_id, 6: template_id + (1 if ipv6 is None else 0)}
        self.options_id = template_id + 2

    def _families(self, flows: np.ndarray) -> list[tuple[int, np.ndarray]]:
        if self.ipv6 is True:
            return [(6, flows)]
        v6 = _is_v6(flows)
        if self.ipv6 is False:
            if v6.any():
                raise ValueError("IPv6 rows given to an IPv4-only encoder (use ipv6=None or True)")
            return [(4, flows)]
        return [(fam, flows[mask]) for fam, mask in ((4, ~v6), (6, v6)) if mask.any()]

    def _template_families(self) -> list[int]:
        return [4, 6] if self.ipv6 is None else [6] if self.ipv6 else [4]

    def _template_sets(self) -> list[tuple[bytes, int, int]]:
        """(set bytes, v9 header record count, IPFIX data records) of the template sets."""
        raise NotImplementedError

    @staticmethod
    def _set(set_id: int, body: bytes) -> bytes:
        return struct.pack("!HH", set_id, 4 + len(body)) + body

    def _header(self, length: int, count: int, data_records: int, times: dict[str, int]) -> bytes:
        raise NotImplementedError

    def _encode(self, flows: np.ndarray, times: dict[str, int]) -> list[bytes]:
        parts = self._families(flows) or [(self._template_families()[0], flows[:0])]
        out: list[bytes] = []
        for fam, rows in parts:
            fields = self.fields[fam]
            reclen = sum(n for _, n, _ in fields)
            recs = _records(rows, fields, **times).tobytes()
            pos, total = 0, len(rows)
            while True:
                extra = self._template_sets() if self.datagrams % self.template_refresh == 0 else []
                used = self.header_len + sum(len(x[0]) for x in extra) + 4
                take = min(max(0, (self.mtu - used) // reclen), total - pos)
                if take == 0 and pos < total and (not extra or self.template_refresh == 1):
                    raise ValueError(f"mtu {self.mtu} cannot hold one {reclen}-byte record")
                sets = [x[0] for x in extra]
                if take:
                    sets.append(self._set(self.ids[fam], _pad4(recs[pos * reclen : (pos + take) * reclen])))
                if sets:
                    body = b"".join(sets)
                    count = take + sum(x[1] for x in extra)
                    data_records = take + sum(x[2] for x in extra)
                    out.append(self._header(self.header_len + len(body), count, data_records, times) + body)
                    self.datagrams += 1
                pos += take
                if pos >= total:
                    break
        return out


class NetflowV9Encoder(_TemplateEncoder):
    """NetFlow v9 (RFC 3954) datagrams from FLOW rows.

    ``ipv6``: False = IPv4 template only (IPv6 rows are an error), True = IPv6 template for every
    row, None = both templates (``template_id`` for IPv4, ``template_id + 1`` for IPv6).
    ``sampling_interval`` announces the exporter's interval in an options template (system scope,
    SAMPLING_INTERVAL / SAMPLING_ALGORITHM, id ``template_id + 2``); ``record_sampling`` puts each
    row's ``sampling`` in the records (SAMPLING_INTERVAL field) instead. Counters are 8 bytes.
    """

    version = 9
    header_len = 20

    def __init__(
        self,
        source_id: int = 0,
        template_id: int = 256,
        *,
        ipv6: bool | None = False,
        sampling_interval: int | None = None,
        record_sampling: bool = False,
        mtu: int = 1400,
        template_refresh: int = 20,
    ) -> None:
        super().__init__(
            source_id,
            template_id,
            ipv6=ipv6,
            sampling_interval=sampling_interval,
            record_sampling=record_sampling,
            mtu=mtu,
            template_refresh=template_refresh,
            time_fields=_V9_TIMES,
        )

    def encode(self, flows: np.ndarray, unix_secs: int, uptime_ms: int) -> list[bytes]:
        """Datagrams for ``flows``; start/end_ms become FIRST/LAST_SWITCHED relative to ``uptime_ms``."""
        return self._encode(flows, {"uptime_ms": uptime_ms, "export_ms": unix_secs * 1000})

    def _template_sets(self) -> list[tuple[bytes, int, int]]:
        fams = self._template_families()
        recs = b"".join(_template_record(self.ids[f], self.fields[f]) for f in fams)
        sets = [(self._set(0, recs), len(fams), 0)]
        if self.sampling_interval:
            opt = struct.pack("!HHHHHHHHH", self.options_id, 4, 8, 1, 4, 34, 4, 35, 1)
            sets.append((self._set(1, _pad4(opt)), 1, 0))
            data = struct.pack("!IIB", 0, self.sampling_interval, 2)
            sets.append((self._set(self.options_id, _pad4(data)), 1, 1))
        return sets

    def _header(self, length: int, count: int, data_records: int, times: dict[str, int]) -> bytes:
        seq = self.sequence
        self.sequence = (self.sequence + 1) & 0xFFFF_FFFF
        uptime = times["uptime_ms"] & 0xFFFF_FFFF
        return struct.pack("!HHIIII", 9, count, uptime, times["export_ms"] // 1000, seq, self.domain)


class IpfixEncoder(_TemplateEncoder):
    """IPFIX (RFC 7011) messages from FLOW rows; same options as :class:`NetflowV9Encoder`.

    Times are flowStart/EndMilliseconds; ``sampling_interval`` is announced in an options record
    scoped to the observation domain (samplingPacketInterval 1, samplingPacketSpace interval - 1).
    """

    version = 10
    header_len = 16

    def __init__(
        self,
        observation_domain_id: int = 0,
        template_id: int = 256,
        *,
        ipv6: bool | None = False,
        sampling_interval: int | None = None,
        record_sampling: bool = False,
        mtu: int = 1400,
        template_refresh: int = 20,
    ) -> None:
        super().__init__(
            observation_domain_id,
            template_id,
            ipv6=ipv6,
            sampling_interval=sampling_interval,
            record_sampling=record_sampling,
            mtu=mtu,
            template_refresh=template_refresh,
            time_fields=_IPFIX_TIMES,
        )

    def encode(self, flows: np.ndarray, export_time: int) -> list[bytes]:
        """Messages for ``flows``; ``export_time`` is the header's unix seconds."""
        return self._encode(flows, {"export_ms": export_time * 1000})

    def _template_sets(self) -> list[tuple[bytes, int, int]]:
        fams = self._template_families()
        recs = b"".join(_template_record(self.ids[f], self.fields[f]) for f in fams)
        sets = [(self._set(2, recs), 0, 0)]
        if self.sampling_interval:
            opt = struct.pack("!HHH", self.options_id, 3, 1) + struct.pack("!HHHHHH", 149, 4, 305, 4, 306, 4)
            sets.append((self._set(3, opt), 0, 0))
            data = struct.pack("!III", self.domain, 1, self.sampling_interval - 1)
            sets.append((self._set(self.options_id, data), 0, 1))
        return sets

    def _header(self, length: int, count: int, data_records: int, times: dict[str, int]) -> bytes:
        seq = self.sequence  # IPFIX: data records sent before this message
        self.sequence = (self.sequence + data_records) & 0xFFFF_FFFF
        return struct.pack("!HHIII", 10, length, times["export_ms"] // 1000, seq, self.domain)


_V5_DTYPE = np.dtype(
    [
        ("src", ">u4"), ("dst", ">u4"), ("nexthop", ">u4"), ("input", ">u2"), ("output", ">u2"),
        ("packets", ">u4"), ("bytes", ">u4"), ("first", ">u4"), ("last", ">u4"), ("sport", ">u2"),
        ("dport", ">u2"), ("pad1", "u1"), ("flags", "u1"), ("proto", "u1"), ("tos", "u1"),
        ("src_as", ">u2"), ("dst_as", ">u2"), ("src_mask", "u1"), ("dst_mask", "u1"), ("pad2", ">u2"),
    ]
)  # fmt: skip


class NetflowV5Encoder:
    """NetFlow v5 datagrams (30 records at most each) from IPv4 FLOW rows.

    Counters are 32-bit on the wire (clipped); ``sampling_interval`` goes in the header's 14-bit
    sampling field with mode ``sampling_mode`` (1 = deterministic).
    """

    MAX_RECORDS = 30

    def __init__(
        self, engine_type: int = 0, engine_id: int = 0, *, sampling_interval: int = 0, sampling_mode: int = 1
    ) -> None:
        self.engine_type = engine_type
        self.engine_id = engine_id
        self.sampling = ((sampling_mode & 3) << 14 | (sampling_interval & 0x3FFF)) if sampling_interval else 0
        self.sequence = 0

    def encode(self, flows: np.ndarray, unix_secs: int, uptime_ms: int, unix_nsecs: int = 0) -> list[bytes]:
        """Datagrams for ``flows`` (IPv4 only); start/end_ms become First/Last relative to uptime."""
        if _is_v6(flows).any():
            raise ValueError("NetFlow v5 carries IPv4 flows only")
        recs = np.zeros(len(flows), dtype=_V5_DTYPE)
        recs["src"] = flows["src_lo"] & _U32
        recs["dst"] = flows["dst_lo"] & _U32
        recs["packets"] = np.minimum(flows["packets"], 0xFFFF_FFFF)
        recs["bytes"] = np.minimum(flows["bytes"], 0xFFFF_FFFF)
        export_ms = np.int64(unix_secs) * 1000
        for col, src in (("first", "start_ms"), ("last", "end_ms")):
            recs[col] = (np.int64(uptime_ms) - (export_ms - flows[src].astype(np.int64))) & 0xFFFF_FFFF
        recs["sport"] = flows["src_port"]
        recs["dport"] = flows["dst_port"]
        recs["flags"] = flows["tcp_flags"]
        recs["proto"] = flows["proto"]
        raw = recs.tobytes()
        out = []
        for start in range(0, len(flows), self.MAX_RECORDS):
            n = min(self.MAX_RECORDS, len(flows) - start)
            header = struct.pack(
                "!HHIIIIBBH",
                5,
                n,
                uptime_ms & 0xFFFF_FFFF,
                unix_secs,
                unix_nsecs,
                self.sequence,
                self.engine_type,
                self.engine_id,
                self.sampling,
            )
            self.sequence = (self.sequence + n) & 0xFFFF_FFFF
            out.append(header + raw[start * 48 : (start + n) * 48])
        return out


__all__ = ["IpfixEncoder", "NetflowV5Encoder", "NetflowV9Encoder"]
