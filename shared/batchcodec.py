"""Packed columns: the compact JSON encoding of a ``TrafficBatch`` (``format: "packed"``).

A batch of 100,000 per-host ticks as JSON lists is ~3 million small JSON values, and building
them as Python objects costs the consumer ~0.5 s of CPU a tick. Packed, each column is one JSON
object holding one string, so the message is still JSON (one schema, readable with any JSON
tool) but decodes in milliseconds:

- ``{"dtype": "u4", "shape": [n] | [n, k], "b64": "..."}``: a number column as the base64 of
  its little-endian array (``u1`` ``u2`` ``u4`` ``u8`` ``f4`` ``f8``); the encoder picks the
  narrowest unsigned type that holds an integer column;
- ``{"lines": "a\\nb\\n..."}``: a text column, one line per record (no value holds a newline);
- ``{"values": [...], "codes": <number column>}``: a dictionary column (few distinct values, or
  values that are null or lists, such as the exporters);
- ``{"sparse": {"<record index>": value}}``: a column that is empty for most records (the SIP
  method mix); the others take the column's default.

``unpack`` checks the shape of each and raises ``PackedColumnError`` (the batch is refused) when
one is malformed; what the values mean is checked by ``messages.decode_batch`` as for lists.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DTYPES = {"u1": np.uint8, "u2": np.uint16, "u4": np.uint32, "u8": np.uint64, "f4": np.float32, "f8": np.float64}
_DTYPE_NAME = {np.dtype(v).newbyteorder("<"): k for k, v in DTYPES.items()}
SEPARATOR = "\n"


class PackedColumnError(ValueError):
    """A packed column whose structure is wrong (bad dtype, shape, base64, line count, codes)."""


# -- encoding ----------------------------------------------------------------------------------


def narrowest(arr: np.ndarray) -> np.ndarray:
    """An integer-valued column in the smallest unsigned type that holds it; floats stay f8."""
    a = np.asarray(arr)
    if a.dtype.kind == "b":
        return a.astype(np.uint8)
    if a.dtype.kind in "iu":
        if a.size and int(a.min()) < 0:
            return a.astype(np.float64)  # negative counts are invalid: kept as they are, refused downstream
        top = int(a.max()) if a.size else 0
        for t in (np.uint8, np.uint16, np.uint32, np.uint64):
            if top <= np.iinfo(t).max:
                return a.astype(t)
    return a.astype(np.float64)


def pack_array(arr: np.ndarray) -> dict[str, Any]:
    """A number column (1-D or 2-D) as ``{"dtype", "shape", "b64"}``."""
    a = np.ascontiguousarray(narrowest(arr))
    le = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return {"dtype": _DTYPE_NAME[le.dtype], "shape": list(a.shape), "b64": base64.b64encode(le.tobytes()).decode()}


def pack_lines(values: Sequence[str]) -> dict[str, Any] | None:
    """A text column as one string of lines, or None when a value is not a newline-free str."""
    if not all(type(v) is str for v in values):
        return None
    text = SEPARATOR.join(values)
    if text.count(SEPARATOR) != max(len(values) - 1, 0):
        return None  # a value holds a newline
    return {"lines": text}


def pack_dictionary(values: Sequence[Any]) -> dict[str, Any]:
    """A column as its distinct values (str, None or lists of str) and a code per record."""
    keys = [tuple(v) if isinstance(v, list | tuple) else v for v in values] if any(
        isinstance(v, list | tuple) for v in values) else values  # fmt: skip
    table = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    codes = np.fromiter(map(table.__getitem__, keys), np.int64, len(keys))
    uniq = [list(k) if isinstance(k, tuple) else k for k in table]
    return {"values": uniq, "codes": pack_array(codes)}


def pack_text(values: Sequence[Any]) -> dict[str, Any]:
    """Dictionary when few values repeat (or some are null/lists), else lines."""
    n = len(values)
    head = values[: min(n, 256)]
    try:
        repeats = len(set(head)) <= max(1, len(head) // 4)
    except TypeError:  # unhashable values (lists): only a dictionary holds them
        return pack_dictionary(values)
    if repeats:
        return pack_dictionary(values)
    return pack_lines(values) or pack_dictionary(values)


def pack_sparse(values: Sequence[Any]) -> dict[str, Any]:
    """Only the non-empty values, keyed by record index."""
    return {"sparse": {str(i): v for i, v in enumerate(values) if v}}


# -- decoding ----------------------------------------------------------------------------------


def unpack_array(obj: Mapping[str, Any], n: int, *, ndim: int | None = 1) -> np.ndarray:
    """A packed number column as a read-only array of ``n`` rows (``ndim`` 1 or 2, None: either)."""
    if not isinstance(obj, Mapping):
        raise PackedColumnError("a number column must be an object with dtype, shape and b64")
    name = obj.get("dtype")
    dtype = DTYPES.get(name) if isinstance(name, str) else None
    if dtype is None:
        raise PackedColumnError(f"dtype must be one of {sorted(DTYPES)}")
    shape = obj.get("shape")
    if not (isinstance(shape, list) and 1 <= len(shape) <= 2 and all(type(s) is int and s >= 0 for s in shape)):
        raise PackedColumnError("shape must be [n] or [n, k]")
    if shape[0] != n or (ndim is not None and len(shape) != ndim) or (len(shape) == 2 and shape[1] > 4096):
        raise PackedColumnError(f"shape {shape} does not fit {n} records")
    raw = obj.get("b64")
    if not isinstance(raw, str):
        raise PackedColumnError("b64 must be a string")
    try:
        buf = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise PackedColumnError("b64 is not valid base64") from None
    want = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if len(buf) != want:
        raise PackedColumnError(f"b64 holds {len(buf)} bytes, shape {shape} of {obj['dtype']} needs {want}")
    return np.frombuffer(buf, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


def unpack_list(obj: Any, n: int, default: Any = None) -> list[Any]:
    """A packed lines, dictionary or sparse column as a list of ``n`` values; a plain JSON list
    is returned as it is (its length is checked by the caller)."""
    if isinstance(obj, list):
        return obj
    if not isinstance(obj, dict):
        raise PackedColumnError("a column must be a list or a packed object")
    if "lines" in obj:
        text = obj["lines"]
        if not isinstance(text, str):
            raise PackedColumnError("lines must be a string")
        out = text.split(SEPARATOR) if n else []
        if len(out) != n:
            raise PackedColumnError(f"lines holds {len(out)} values for {n} records")
        return out
    if "codes" in obj:
        values = obj.get("values")
        if not isinstance(values, list) or (not values and n):
            raise PackedColumnError("values must be a non-empty list")
        codes = unpack_array(obj["codes"], n)
        if codes.dtype.kind != "u" or (n and int(codes.max()) >= len(values)):
            raise PackedColumnError("codes must be unsigned and index values")
        return [values[c] for c in codes.tolist()]
    if "sparse" in obj:
        entries = obj["sparse"]
        if not isinstance(entries, dict) or len(entries) > n:
            raise PackedColumnError("sparse must be an object of at most one entry per record")
        out = [default] * n  # one shared default: consumers read these values, never mutate them
        for k, v in entries.items():
            if not (k.isdigit() and int(k) < n):
                raise PackedColumnError(f"sparse key {k[:20]!r} is not a record index")
            out[int(k)] = v
        return out
    raise PackedColumnError("a packed column needs dtype/b64, lines, values/codes or sparse")


__all__ = ["DTYPES", "PackedColumnError", "narrowest", "pack_array", "pack_dictionary", "pack_lines",
           "pack_sparse", "pack_text", "unpack_array", "unpack_list"]  # fmt: skip
