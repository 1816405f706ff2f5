"""A small, hostile-input-safe SIP parser for sampled packet payloads.

sFlow agents copy only the first bytes of a packet (128 by default), so the parser must tell a
*truncated* but well-started message from a *malformed* one: the first is normal, the second is the
``malformed_sip`` signal (fuzzers, scanners and broken flooders send it). It works on bytes, keeps
the raw header values as bytes (decoded only when a dict is asked for), and never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from voxguard.ingest.decode.flows import SipFlag, SipMethod

__all__ = ["SCANNER_FINGERPRINTS", "SipInfo", "looks_like_sip", "parse_sip"]

# User-Agent substrings of SIP scanners and attack tools (matched case-insensitively).
SCANNER_FINGERPRINTS: tuple[str, ...] = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sundayddr",
    "iwar",
    "vaxsipuseragent",
    "pplsip",
    "sivus",
    "gulp",
    "sipsak",
)
_SCANNER_RE = re.compile("|".join(re.escape(f) for f in SCANNER_FINGERPRINTS).encode(), re.IGNORECASE)

MAX_HEADER_LINE = 4096  # longer single header lines are absurd for SIP (RFC 3261 has no limit)
MAX_HEADER_LINES = 128
MAX_CONTENT_LENGTH = 1 << 20  # SIP over UDP fits in 64 KiB; a megabyte is already generous

_METHODS = {
    b"INVITE": SipMethod.INVITE,
    b"REGISTER": SipMethod.REGISTER,
    b"OPTIONS": SipMethod.OPTIONS,
    b"BYE": SipMethod.BYE,
    b"ACK": SipMethod.ACK,
    b"CANCEL": SipMethod.CANCEL,
}
# Known methods (RFC 3261 and extensions): used to recognise SIP on ports other than 5060.
_KNOWN_METHODS = (
    *_METHODS,
    b"SUBSCRIBE",
    b"NOTIFY",
    b"PUBLISH",
    b"INFO",
    b"PRACK",
    b"REFER",
    b"MESSAGE",
    b"UPDATE",
)
_SIP_STARTS = (b"SIP/2.0 ", *(m + b" " for m in _KNOWN_METHODS))

# RFC 3261 compact header forms -> full lower-case names.
_COMPACT = {
    b"i": b"call-id",
    b"f": b"from",
    b"t": b"to",
    b"v": b"via",
    b"m": b"contact",
    b"c": b"content-type",
    b"l": b"content-length",
    b"s": b"subject",
    b"k": b"supported",
    b"e": b"content-encoding",
    b"o": b"event",
    b"r": b"refer-to",
    b"u": b"allow-events",
    b"b": b"referred-by",
    b"x": b"session-expires",
}
_MANDATORY = (b"via", b"from", b"to", b"call-id", b"cseq")

# Byte classes for bytes.translate(None, delete=...): what is left after deleting the allowed
# bytes is the offending part.
_TEXT_OK = bytes([9, 10, 13, *range(0x20, 0x7F), *range(0x80, 0x100)])  # UTF-8 allowed, no controls
_TOKEN_OK = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
_DIGITS = b"0123456789"
_STUN_COOKIE = b"\x21\x12\xa4\x42"

_TOKEN = rb"[-.!%*_+`'~A-Za-z0-9]+"
_URI = rb"[A-Za-z][-+.A-Za-z0-9]*:[^ \t]*"  # an absolute URI: scheme ":" ...
_REQUEST_RE = re.compile(rb"(" + _TOKEN + rb") (" + _URI + rb") [Ss][Ii][Pp]/2\.0")
_RESPONSE_RE = re.compile(rb"[Ss][Ii][Pp]/2\.0 ([1-6][0-9][0-9])(?: (.*))?", re.DOTALL)
# A start line cut by the sampler: a method token and the beginning of the URI, or "SIP/2.0 2..".
_PARTIAL_REQUEST_RE = re.compile(
    rb"("
    + _TOKEN
    + rb") (?:[A-Za-z][-+.A-Za-z0-9]*(?::[^ \t]*)?|"
    + _URI
    + rb" (?:[Ss](?:[Ii](?:[Pp](?:/(?:2(?:\.0?)?)?)?)?)?)?)?"
)
_PARTIAL_RESPONSE_RE = re.compile(rb"[Ss][Ii][Pp]/2\.0 (?:[1-6](?:[0-9](?:[0-9](?: .*)?)?)?)?", re.DOTALL)
_PARTIAL_PREFIX_RE = re.compile(_TOKEN + rb"|[Ss](?:[Ii](?:[Pp](?:/(?:2(?:\.0?)?)?)?)?)?")


@dataclass(slots=True)
class SipInfo:
    """What the parser saw; header values stay bytes until :meth:`as_dict` is called."""

    method: int = SipMethod.NONE  # SipMethod code (RESPONSE for a status line)
    flags: int = 0  # SipFlag bits
    method_name: bytes | None = None
    status: int | None = None
    request_uri: bytes | None = None
    user_agent: bytes | None = None
    from_: bytes | None = None
    to: bytes | None = None
    call_id: bytes | None = None
    cseq: bytes | None = None
    via: bytes | None = None  # the first (top-most) Via
    contact: bytes | None = None
    content_type: bytes | None = None
    content_length: int | None = None
    truncated: bool = False  # the sampler cut the message before its end
    error: str | None = None  # why MALFORMED was set

    @property
    def is_sip(self) -> bool:
        """A start line was recognised (request or response) and nothing was malformed."""
        return self.method != SipMethod.NONE and not self.flags & SipFlag.MALFORMED

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view (the ``sip`` object of decoded records)."""

        def txt(b: bytes | None) -> str | None:
            return None if b is None else b.decode("utf-8", "replace")

        return {
            "method": SipMethod.NAMES.get(self.method)
            if self.method != SipMethod.OTHER_REQUEST
            else txt(self.method_name),
            "statusCode": self.status,
            "requestUri": txt(self.request_uri),
            "userAgent": txt(self.user_agent),
            "from": txt(self.from_),
            "to": txt(self.to),
            "callId": txt(self.call_id),
            "cseq": txt(self.cseq),
            "via": txt(self.via),
            "contact": txt(self.contact),
            "contentType": txt(self.content_type),
            "contentLength": self.content_length,
            "sdp": bool(self.flags & SipFlag.SDP),
            "scanner": bool(self.flags & SipFlag.SCANNER_UA),
            "malformed": bool(self.flags & SipFlag.MALFORMED),
            "truncated": self.truncated,
            "error": self.error,
        }


def looks_like_sip(data: bytes) -> bool:
    """Cheap test for payloads on other ports: does it start like a SIP request or response?"""
    return data[:10].startswith(_SIP_STARTS)


def parse_sip(data: bytes, *, truncated: bool = False, stream: bool = False) -> SipInfo:
    """Parse one SIP message (or the sampled beginning of one).

    ``truncated``: the caller knows the payload was cut (sFlow header shorter than the packet), so
    a missing end of headers or a cut start line is not an error. ``stream``: the payload is a TCP
    segment, which may continue an earlier message: a payload that does not start like SIP is then
    only malformed if it is not text. Never raises; problems set ``SipFlag.MALFORMED`` and ``error``.
    """
    info = SipInfo(truncated=truncated)
    try:
        # A TCP segment may end anywhere, like a sampled header: the same leniency applies.
        err = _parse(bytes(data), truncated or stream, stream, info)
    except Exception as exc:  # defensive: hostile input must never take the decoder down
        err = f"parser error: {type(exc).__name__}"
    if err is not None:
        info.flags |= SipFlag.MALFORMED
        info.error = err
    return info


def _parse(data: bytes, truncated: bool, stream: bool, info: SipInfo) -> str | None:
    """Fill ``info``; return the reason the message is malformed, or None."""
    if not data:
        return "empty payload"
    if not data.strip(b"\r\n"):
        return None  # RFC 5626 CRLF keep-alive
    if len(data) >= 20 and data[0] < 2 and data[4:8] == _STUN_COOKIE:
        return None  # RFC 5626 STUN keep-alive on the SIP port
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        head, body, complete = data[:end], data[end + 4 :], True
    else:
        head, body, complete = data, b"", False
    bad = head.translate(None, _TEXT_OK)
    if bad:
        return f"non-printable byte 0x{bad[0]:02x} in the headers"
    lines = head.split(b"\r\n")
    # Without the blank line the last line may have been cut mid-way by the sampler, unless the
    # data ends right after a CRLF.
    partial_last = not complete and truncated
    if not complete and len(lines) > 1 and not lines[-1]:
        lines.pop()
        partial_last = False
    elif partial_last and lines[-1].endswith(b"\r"):
        lines[-1] = lines[-1][:-1]  # cut between CR and LF
    start = lines[0]
    if not complete and not truncated and b"\r\n" not in data:
        return "bare LF line ends (no CRLF)" if b"\n" in data else "no CRLF after the start line"
    if b"\n" in start or b"\r" in start:
        return "bare CR or LF in the start line"
    if len(start) > MAX_HEADER_LINE:
        return f"start line of {len(start)} bytes"
    err = _start_line(start, partial_last and len(lines) == 1, info)
    if err is not None:
        if stream and not looks_like_sip(data):
            return None
        return err
    if len(lines) > MAX_HEADER_LINES:
        return f"{len(lines)} header lines"
    seen: dict[bytes, bytes] = {}
    last = len(lines) - 1
    for n in range(1, len(lines)):
        line = lines[n]
        if n == last and partial_last:
            break  # cut by the sampler: nothing reliable in it
        if len(line) > MAX_HEADER_LINE:
            return f"header line {n} is {len(line)} bytes"
        if b"\n" in line or b"\r" in line:
            return f"bare CR or LF in header line {n}"
        if not line:
            return f"empty header line {n}"
        if line[0] in b" \t":
            continue  # obsolete line folding (still legal in RFC 3261)
        colon = line.find(b":")
        if colon <= 0:
            return f"header line {n} has no name or no colon"
        name = line[:colon].rstrip(b" \t")
        if not name or name.translate(None, _TOKEN_OK):
            return f"bad header name in line {n}"
        lname = name.lower()
        lname = _COMPACT.get(lname, lname)
        if lname not in seen:
            seen[lname] = line[colon + 1 :].strip(b" \t")
    return _headers(seen, body, complete, truncated, stream, info)


def _start_line(start: bytes, partial: bool, info: SipInfo) -> str | None:
    """Recognise the request or status line (or, when cut by the sampler, its beginning)."""
    m = _RESPONSE_RE.fullmatch(start)
    if m is not None:
        info.method = SipMethod.RESPONSE
        info.status = int(m.group(1))
        return None
    m = _REQUEST_RE.fullmatch(start)
    if m is not None:
        _set_method(info, m.group(1))
        info.request_uri = m.group(2)
        return None
    if partial:
        if _PARTIAL_RESPONSE_RE.fullmatch(start) is not None:
            info.method = SipMethod.RESPONSE
            return None
        m = _PARTIAL_REQUEST_RE.fullmatch(start)
        if m is not None:
            _set_method(info, m.group(1))
            return None
        if _PARTIAL_PREFIX_RE.fullmatch(start) is not None:
            return None  # too short to say anything
    return "bad start line"


def _set_method(info: SipInfo, token: bytes) -> None:
    info.method = _METHODS.get(token, SipMethod.OTHER_REQUEST)
    info.method_name = token


def _headers(
    seen: dict[bytes, bytes], body: bytes, complete: bool, truncated: bool, stream: bool, info: SipInfo
) -> str | None:
    """Take the interesting headers and set the flags; return a malformation reason or None."""
    get = seen.get
    info.user_agent = get(b"user-agent")
    info.from_ = get(b"from")
    info.to = get(b"to")
    info.call_id = get(b"call-id")
    info.cseq = get(b"cseq")
    info.via = get(b"via")
    info.contact = get(b"contact")
    ctype = get(b"content-type")
    info.content_type = ctype
    if info.call_id:
        info.flags |= SipFlag.CALL_ID
    if info.user_agent and _SCANNER_RE.search(info.user_agent):
        info.flags |= SipFlag.SCANNER_UA
    if ctype is not None:
        low = ctype.lower()
        if low.startswith(b"application/sdp") or (low.startswith(b"multipart/") and b"application/sdp" in body):
            info.flags |= SipFlag.SDP
    if body.startswith(b"v=0"):
        info.flags |= SipFlag.SDP
    clen = get(b"content-length")
    if clen is not None:
        if not clen or clen.translate(None, _DIGITS) or len(clen) > 10:
            return "Content-Length is not a number"
        info.content_length = int(clen)
        if info.content_length > MAX_CONTENT_LENGTH:
            return f"absurd Content-Length {info.content_length}"
    if complete and not truncated:
        missing = [h.decode() for h in _MANDATORY if h not in seen]
        if missing:
            return "missing mandatory header " + ", ".join(missing)
        if not stream and info.content_length is not None and len(body) < info.content_length:
            return f"body of {len(body)} bytes is shorter than Content-Length {info.content_length}"
    elif not complete and not truncated and not stream:
        return "no blank line after the headers"
    return None
