"""Helpers for the NetFlow/IPFIX tests: capture access and a hand-written datagram builder.

The builder is deliberately independent of ``voxguard.ingest.encode`` (plain ``struct``), so the
known-answer tests do not check the decoder against the same author's encoder only.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

from vghelpers import require

REPO = Path(__file__).resolve().parents[2]


def captures_dir(shared: Path | None = None) -> Path:
    """``<shared>/data/captures`` (shared: the ``shared_dir`` fixture, else VOXGUARD_SHARED_DIR or
    ``<repo>/../shared``), or skip/fail with the reason."""
    if shared is None:
        shared = Path(os.environ.get("VOXGUARD_SHARED_DIR") or REPO.parent / "shared")
    d = shared / "data" / "captures"
    require((d / "manifest.json").is_file(), f"shared captures not found at {d} (set VOXGUARD_SHARED_DIR)")
    return d


def udp_payloads(path: Path) -> list[tuple[bytes, str]]:
    """(payload, exporter address) of every UDP datagram in a pcap/pcapng file.

    Uses the project's reader (``voxguard.ingest.pcapio``) when present, dpkt otherwise.
    """
    try:
        from voxguard.ingest.pcapio import iter_udp_payloads
    except ImportError:
        return _dpkt_payloads(path)
    out: list[tuple[bytes, str]] = []
    for d in iter_udp_payloads(path):
        if isinstance(d, tuple):  # the brief's (timestamp, src, sport, dport, payload) shape
            out.append((bytes(d[4]), str(d[1])))
        else:
            out.append((bytes(d.payload), str(d.src)))
    return out


def _dpkt_payloads(path: Path) -> list[tuple[bytes, str]]:
    import dpkt

    out: list[tuple[bytes, str]] = []
    with open(path, "rb") as fh:
        magic = fh.read(4)
        fh.seek(0)
        reader = dpkt.pcapng.Reader(fh) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(fh)
        for _, buf in reader:
            ip = dpkt.ethernet.Ethernet(buf).data
            if isinstance(ip, dpkt.ip.IP):
                src = socket.inet_ntop(socket.AF_INET, ip.src)
            elif isinstance(ip, dpkt.ip6.IP6):
                src = socket.inet_ntop(socket.AF_INET6, ip.src)
            else:
                continue
            if isinstance(ip.data, dpkt.udp.UDP):
                out.append((bytes(ip.data.data), src))
    return out


# -- datagram builder ------------------------------------------------------------------------------
Field = tuple[int, int] | tuple[int, int, int]  # (type, length[, enterprise number])


def pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def flowset(set_id: int, body: bytes, *, pad: bool = True) -> bytes:
    body = pad4(body) if pad else body
    return struct.pack("!HH", set_id, 4 + len(body)) + body


def v9_packet(
    sets: Iterable[bytes],
    *,
    source_id: int = 0,
    seq: int = 0,
    uptime: int = 100_000,
    secs: int = 1_700_000_000,
) -> bytes:
    body = b"".join(sets)
    return struct.pack("!HHIIII", 9, 1, uptime, secs, seq, source_id) + body


def ipfix_message(sets: Iterable[bytes], *, odid: int = 0, seq: int = 0, export: int = 1_700_000_000) -> bytes:
    body = b"".join(sets)
    return struct.pack("!HHIII", 10, 16 + len(body), export, seq, odid) + body


def _fields(fields: Sequence[Field]) -> bytes:
    out = b""
    for f in fields:
        if len(f) == 3:
            out += struct.pack("!HHI", f[0] | 0x8000, f[1], f[2])
        else:
            out += struct.pack("!HH", f[0], f[1])
    return out


def template_record(tid: int, fields: Sequence[Field]) -> bytes:
    return struct.pack("!HH", tid, len(fields)) + _fields(fields)


def v9_template_set(*templates: tuple[int, Sequence[Field]]) -> bytes:
    return flowset(0, b"".join(template_record(t, f) for t, f in templates))


def v9_options_template_set(tid: int, scope: Sequence[Field], fields: Sequence[Field]) -> bytes:
    body = struct.pack("!HHH", tid, 4 * len(scope), 4 * len(fields)) + _fields(scope) + _fields(fields)
    return flowset(1, body)


def ipfix_template_set(*templates: tuple[int, Sequence[Field]]) -> bytes:
    return flowset(2, b"".join(template_record(t, f) for t, f in templates), pad=False)


def ipfix_options_template_set(tid: int, scope: Sequence[Field], fields: Sequence[Field]) -> bytes:
    body = struct.pack("!HHH", tid, len(scope) + len(fields), len(scope)) + _fields(scope) + _fields(fields)
    return flowset(3, body, pad=False)


def ipfix_withdrawal_set(set_id: int, *tids: int) -> bytes:
    return flowset(set_id, b"".join(struct.pack("!HH", t, 0) for t in tids), pad=False)


def ip4(addr: str) -> bytes:
    return socket.inet_pton(socket.AF_INET, addr)


def ip6(addr: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, addr)


# A small IPv4 flow template used by many tests: src, dst, sport, dport, proto, bytes, packets.
V4_FIELDS: list[Field] = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 4), (2, 4)]


def v4_record(src: str, dst: str, sport: int, dport: int, proto: int, octets: int, packets: int) -> bytes:
    return ip4(src) + ip4(dst) + struct.pack("!HHBII", sport, dport, proto, octets, packets)
