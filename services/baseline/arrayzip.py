"""One JSON document plus named numpy arrays in a zip: how engine state and shard rows are saved.

Arrays go through ``np.save`` / ``np.load`` with pickling off, so a stored blob can never run code.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np


def pack(doc_name: str, doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """``doc`` as ``<doc_name>`` and each array as ``<name>.npy``, deflated."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(doc_name, json.dumps(doc, default=str))
        for name, arr in arrays.items():
            b = io.BytesIO()
            np.save(b, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(f"{name}.npy", b.getvalue())
    return buf.getvalue()


def unpack(data: bytes, doc_name: str, magic: str, what: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The document and arrays of a ``pack`` blob whose document carries ``magic``; ValueError
    ("not <what> (...)") for anything else. The caller checks the document's version."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"{what} must be bytes")
    try:
        zf = zipfile.ZipFile(io.BytesIO(bytes(data)))
    except zipfile.BadZipFile:
        raise ValueError(f"not {what} (not a zip archive)") from None
    with zf:
        names = set(zf.namelist())
        if doc_name not in names:
            raise ValueError(f"not {what} ({doc_name} missing)")
        doc = json.loads(zf.read(doc_name))
        if not isinstance(doc, dict) or doc.get("magic") != magic:
            raise ValueError(f"not {what} (wrong magic)")
        arrays = {
            n.removesuffix(".npy"): np.load(io.BytesIO(zf.read(n)), allow_pickle=False) for n in names - {doc_name}
        }
    return doc, arrays
