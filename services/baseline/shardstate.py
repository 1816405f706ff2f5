"""Moving part of a detection engine between workers: the rows and open incidents of one shard.

A sharded baseline worker saves, per partition it owns, the learned rows of that partition's
targets (``export_rows``) and its open incidents (``incidents_of``); the worker that takes the
partition over loads them (``import_rows``, ``adopt_incidents``) before it starts deciding for
those targets, so learning carries over and an open incident continues under the same id.

Rows are merged, not replaced wholesale: a target the new owner already knows (component
targets, which every worker learns for context) keeps whichever copy has learned more recently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from voxguard.baseline import arrayzip
from voxguard.baseline.engine import DetectionEngine
from voxguard.baseline.incidents import Incident
from voxguard.baseline.profile import ProfileBank

ROWS_MAGIC = "voxguard-engine-rows"
ROWS_VERSION = 1
ROW_ARRAYS = ("last_seen", "sessions", "per_session")  # engine arrays of one value per target


def _bank_rows(name: str, arr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return arr[:, rows] if name == "level" else arr[rows]  # level is [slots, targets, metrics]


def export_rows(engine: DetectionEngine, owns: Callable[[str], bool]) -> bytes:
    """The learned state of the targets ``owns`` selects, as a zip of numpy arrays and JSON."""
    sel = [row for row, tid in enumerate(engine.ids) if owns(tid)]
    rows = np.array(sel, dtype=np.int64)
    arrays: dict[str, np.ndarray] = {}
    for name in ProfileBank.ARRAYS:
        arrays[f"bank_{name}"] = _bank_rows(name, getattr(engine.bank, name), rows)
    for name in ROW_ARRAYS:
        arrays[name] = getattr(engine, name)[rows]
    doc = {"magic": ROWS_MAGIC, "version": ROWS_VERSION, "site": engine.config.site,
           "targets": [engine.meta[r] for r in sel]}  # fmt: skip
    return arrayzip.pack("rows.json", doc, arrays)


def import_rows(engine: DetectionEngine, data: bytes) -> int:
    """Merge exported rows into the engine; returns how many rows were taken. ValueError when the
    bytes are not such an export (the engine is then unchanged)."""
    doc, arrays = _read(data)
    metas = doc["targets"]
    n = len(metas)
    for name in ProfileBank.ARRAYS:
        arr = arrays.get(f"bank_{name}")
        axis = 1 if name == "level" else 0
        if arr is None or arr.shape[axis] != n:
            raise ValueError(f"shard rows: array {name!r} missing or not {n} rows")
    for name in ROW_ARRAYS:
        if name not in arrays or arrays[name].shape != (n,):
            raise ValueError(f"shard rows: array {name!r} missing or not {n} rows")
    if n == 0:
        return 0
    known = np.array([m["id"] in engine.index for m in metas], dtype=bool)
    rows = np.array(
        [engine._row(str(m["id"]), {k: v for k, v in m.items() if k != "id"}, aggregate=False) for m in metas],
        dtype=np.int64,
    )
    bank = engine.bank
    saved_until = np.asarray(arrays["bank_learned_until"], dtype=np.float64)
    local_until = bank.learned_until[rows]
    # a row this worker knows keeps its own copy when it has learned at least as recently
    take = ~known | np.isnan(local_until) | (np.nan_to_num(saved_until, nan=-np.inf) > local_until)
    dst = rows[take]
    for name in ProfileBank.ARRAYS:
        arr = getattr(bank, name)
        src = arrays[f"bank_{name}"]
        if name == "level":
            arr[:, dst] = src[:, take].astype(arr.dtype)
        else:
            arr[dst] = src[take].astype(arr.dtype)
    for name in ROW_ARRAYS:
        getattr(engine, name)[dst] = arrays[name][take]
    bank._cache_key = None  # the profile cache is keyed by minute and size, not by content
    return int(take.sum())


def incidents_of(engine: DetectionEngine, owns: Callable[[str], bool]) -> list[dict[str, Any]]:
    """The open incidents of the selected targets, as saved with a shard."""
    return [inc.to_json() for tid, inc in engine.book.open.items() if owns(tid)]


def adopt_incidents(engine: DetectionEngine, incidents: Iterable[dict[str, Any]]) -> list[str]:
    """Open incidents handed over with a shard: continued under their ids (a target that already has
    an open incident keeps it). Returns the adopted ids."""
    adopted = []
    for d in incidents:
        inc = Incident.from_json(d)
        if inc.state == "resolved" or inc.target_id in engine.book.open:
            continue
        if inc.target_id not in engine.index:
            engine._row(inc.target_id, {"tier": inc.tier, "name": inc.target, "component": inc.component,
                                        "host": inc.host, "region": inc.region}, aggregate=False)  # fmt: skip
        engine.book.open[inc.target_id] = inc
        adopted.append(inc.id)
    return adopted


def drop_incidents(engine: DetectionEngine, owns: Callable[[str], bool]) -> list[str]:
    """Forget the open incidents of targets this worker no longer owns (their new owner has them)."""
    gone = [tid for tid in engine.book.open if owns(tid)]
    return [engine.book.open.pop(tid).id for tid in gone]


def _read(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    doc, arrays = arrayzip.unpack(data, "rows.json", ROWS_MAGIC, "a shard rows export")
    if doc.get("version") != ROWS_VERSION:
        raise ValueError(f"shard rows version {doc.get('version')!r} is not supported")
    if not isinstance(doc.get("targets"), list):
        raise ValueError("shard rows: targets missing")
    return doc, arrays


__all__ = ["adopt_incidents", "drop_incidents", "export_rows", "import_rows", "incidents_of"]
