"""The columnar flow record every decoder produces and every later stage consumes.

Addresses are kept as two unsigned 64-bit halves of an IPv6 address; IPv4 is stored
IPv4-mapped (``::ffff:a.b.c.d``) so one set of vectorised mask operations classifies both
families. Counts are raw (as exported); ``sampling`` holds the interval to scale them by.
"""

from __future__ import annotations

import ipaddress
import socket

import numpy as np

FLOW_DTYPE = np.dtype(
    [
        ("src_hi", "<u8"),
        ("src_lo", "<u8"),
        ("dst_hi", "<u8"),
        ("dst_lo", "<u8"),
        ("bytes", "<u8"),
        ("packets", "<u8"),
        ("start_ms", "<u8"),  # unix epoch milliseconds, 0 when the export does not say
        ("end_ms", "<u8"),
        ("sampling", "<u4"),  # 1 = unsampled or unknown
        ("datagram_ix", "<u4"),  # index of the source datagram inside a decoded batch
        ("src_port", "<u2"),
        ("dst_port", "<u2"),
        ("proto", "u1"),
        ("tcp_flags", "u1"),
        ("ip_version", "u1"),  # 4 or 6 (0 = no IP header, e.g. an options record)
        ("sip_method", "u1"),  # SipMethod code from sFlow-sampled SIP, 0 = unknown
        ("sip_flags", "u1"),  # SipFlag bits
        ("icmp_type", "u1"),
        ("icmp_code", "u1"),
        ("_pad", "u1"),
    ]
)

V4_MAPPED_LO_PREFIX = np.uint64(0x0000_FFFF_0000_0000)


class SipMethod:
    """Codes stored in ``sip_method``; 0 means no SIP was seen in the sampled packet."""

    NONE = 0
    INVITE = 1
    REGISTER = 2
    OPTIONS = 3
    BYE = 4
    ACK = 5
    CANCEL = 6
    OTHER_REQUEST = 7
    RESPONSE = 8

    NAMES = {
        1: "INVITE",
        2: "REGISTER",
        3: "OPTIONS",
        4: "BYE",
        5: "ACK",
        6: "CANCEL",
        7: "OTHER",
        8: "RESPONSE",
    }
    BY_NAME = {v: k for k, v in NAMES.items()}


class SipFlag:
    """Bits stored in ``sip_flags``."""

    SDP = 1
    SCANNER_UA = 2
    MALFORMED = 4
    CALL_ID = 8


def empty_flows(n: int = 0) -> np.ndarray:
    """A zeroed flow array with ``sampling`` 1, the neutral element for every column."""
    arr = np.zeros(n, dtype=FLOW_DTYPE)
    arr["sampling"] = 1
    return arr


def v4_to_lo(v4: np.ndarray) -> np.ndarray:
    """Vectorised IPv4 (uint32, host order) -> low half of the IPv4-mapped IPv6 address."""
    return v4.astype(np.uint64) | V4_MAPPED_LO_PREFIX


def v6_bytes_to_halves(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised 16-byte big-endian addresses (shape (n, 16) uint8 or 'V16') -> (hi, lo)."""
    b = np.ascontiguousarray(raw).view(np.uint8).reshape(-1, 16)
    hi = b[:, :8].copy().view(">u8").reshape(-1).astype(np.uint64)
    lo = b[:, 8:].copy().view(">u8").reshape(-1).astype(np.uint64)
    return hi, lo


def addr_to_halves(addr: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[int, int]:
    """One address (either family) -> (hi, lo) as stored in the flow columns."""
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv4Address):
        return 0, 0x0000_FFFF_0000_0000 | int(ip)
    value = int(ip)
    return value >> 64, value & 0xFFFF_FFFF_FFFF_FFFF


def halves_to_addr(hi: int, lo: int) -> str:
    """(hi, lo) -> text, IPv4 for mapped addresses (socket's formatters: ~10x ipaddress)."""
    hi, lo = int(hi), int(lo)
    if hi == 0 and (lo >> 32) == 0xFFFF:
        return socket.inet_ntoa((lo & 0xFFFF_FFFF).to_bytes(4, "big"))
    return socket.inet_ntop(socket.AF_INET6, hi.to_bytes(8, "big") + lo.to_bytes(8, "big"))


def is_v4(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Vectorised: which (hi, lo) pairs are IPv4-mapped."""
    return (hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))
