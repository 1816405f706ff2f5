"""The top sources (or prefixes) of many targets as batch text, ``"<source> <packets> <bytes>;..."``.

At 100,000 active targets a tick holds several hundred thousand top rows; formatting each with
Python (address, two integers, joins) takes seconds. Here every row becomes a fixed-width row
of ASCII bytes built with array operations (IPv4 octets from a table, digits by repeated
division), unused cells NUL; the rows of one target end in ``;`` but the last in a newline, so
dropping the NULs and splitting on newlines gives one text per target. Only IPv6 addresses,
rare in VoIP edge traffic, are formatted one by one.
"""

from __future__ import annotations

import numpy as np

from voxguard.ingest.decode.flows import halves_to_addr, is_v4

_OCTETS = np.zeros((256, 3), dtype=np.uint8)  # "0".."255", left-aligned, NUL-padded
for _i in range(256):
    _OCTETS[_i, : len(str(_i))] = np.frombuffer(str(_i).encode(), dtype=np.uint8)
_V4_WIDTH = 15  # "255.255.255.255"


def top_texts(rows: np.ndarray, *, prefixes: bool = False) -> tuple[np.ndarray, list[str]]:
    """(targets, text per target) of ``rows`` (fields t, h, l, p, b; grouped by target, in the
    order the text lists them). ``prefixes``: the addresses are /24 (IPv4) or /64 (IPv6) prefixes."""
    n = len(rows)
    if n == 0:
        return np.empty(0, dtype=np.int64), []
    t = rows["t"]
    last = np.r_[t[1:] != t[:-1], True]  # the last row of each target
    hi, lo = rows["h"], rows["l"]
    v4 = is_v4(hi, lo)
    suffix = b"/24" if prefixes else b""
    v6 = np.flatnonzero(~v4)
    v6_text = [
        (halves_to_addr(h, lw) + ("/64" if prefixes else "")).encode()
        for h, lw in zip(hi[v6].tolist(), lo[v6].tolist(), strict=True)
    ]
    aw = max([_V4_WIDTH + len(suffix), *map(len, v6_text)])
    pk = rows["p"].astype(np.int64)  # whole counts: truncated as int() does
    by = rows["b"].astype(np.int64)
    wp, wb = _width(pk), _width(by)
    out = np.zeros((n, aw + 1 + wp + 1 + wb + 1), dtype=np.uint8)
    addr = (lo & np.uint64(0xFFFF_FFFF)).astype(np.int64)
    for k, shift in enumerate((24, 16, 8, 0)):
        out[:, 4 * k : 4 * k + 3] = _OCTETS[(addr >> shift) & 0xFF]
        if k < 3:
            out[:, 4 * k + 3] = ord(".")
    out[:, _V4_WIDTH : _V4_WIDTH + len(suffix)] = np.frombuffer(suffix, dtype=np.uint8)
    if len(v6):
        padded = b"".join(s.ljust(aw, b"\0") for s in v6_text)
        out[v6, :aw] = np.frombuffer(padded, dtype=np.uint8).reshape(len(v6), aw)
    out[:, aw] = ord(" ")
    _digits(out[:, aw + 1 : aw + 1 + wp], pk)
    out[:, aw + 1 + wp] = ord(" ")
    _digits(out[:, aw + 2 + wp : aw + 2 + wp + wb], by)
    out[:, -1] = np.where(last, ord("\n"), ord(";"))
    cells = out.ravel()
    texts = np.compress(cells != 0, cells).tobytes().decode("ascii").split("\n")
    texts.pop()  # after the final newline
    return t[last], texts


def _width(x: np.ndarray) -> int:
    """Decimal digits of the largest value."""
    return len(str(int(x.max())))


def _digits(out: np.ndarray, x: np.ndarray) -> None:
    """Non-negative integers as right-aligned ASCII digits into ``out`` (rows x width), NUL-padded."""
    width = out.shape[1]
    for j in range(width):
        more = x > 0
        x, r = np.divmod(x, 10)
        c = (r + ord("0")).astype(np.uint8)
        if j:
            c *= more  # past the leading digit: NUL
        out[:, width - 1 - j] = c
