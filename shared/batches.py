"""Batches of per-host traffic ticks (``TrafficBatch``): the message, its encoders and its checked decoder.

One message carries one tier's per-host ticks of one tick as columns, because at 100,000 hosts a
message per target (or a list of objects with repeated keys) costs seconds to encode and decode.
Columns travel as JSON lists (``format: "columns"``, easy for any producer) or packed
(``format: "packed"``, see ``batchcodec``: one string per column, what the collector sends);
``decode_batch`` takes both and gives the same ``TrafficColumns``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import numpy as np
import orjson
from pydantic import Field

from voxguard.shared import batchcodec
from voxguard.shared.config import Tier
from voxguard.shared.messages import SCHEMA_VERSION, Message, SourceCount, TrafficTick, new_id, subject_for, utcnow

log = logging.getLogger("voxguard.batches")

MAX_BATCH_BYTES = 1024 * 1024  # the JetStream traffic stream's max message size (bus.MAX_MSG_BYTES)
MAX_BATCH_RECORDS = 65_536
MAX_TOP = 100  # entries of a list column (exporters, size_histogram, sip_methods) per record
MAX_TOP_CHARS = 16_384  # characters of a record's top_sources / top_prefixes text
BATCH_SUBJECT_SUFFIX = "h"
# TrafficTick fields carried per record, by kind. Required: the rest default as in TrafficTick.
BATCH_REQUIRED = ("target_id", "target", "component", "protocol", "role", "bytes", "packets", "flows")
BATCH_TEXT = ("target_id", "target", "component", "protocol", "role")
BATCH_OPT_TEXT = ("host", "ports", "region")
BATCH_COUNTS = ("bytes", "packets", "flows", "new_connections", "icmp_packets", "long_lived_flows",
                "distinct_sources", "sip_scanner_packets", "sip_malformed_packets", "sip_sampled_packets",
                "flow_records")  # fmt: skip
BATCH_TOPS = ("top_sources", "top_prefixes")


def batch_subject(tier: str | Tier, partition: int | None = None) -> str:
    """Where a batch of per-host ticks travels: ``voxguard.traffic.v1.<tier>.h`` unsharded, the
    partition's ``voxguard.traffic.v1.<tier>.<k>`` sharded. Never the bare tier subject, which
    carries single component ticks (``TrafficTick``) that other consumers read."""
    tier_s = tier.value if isinstance(tier, Tier) else tier
    return f"{subject_for('traffic', tier_s)}.{BATCH_SUBJECT_SUFFIX if partition is None else partition}"


class BatchError(ValueError):
    """A traffic batch that cannot be used at all (the consumer terminates it and counts it)."""


class TrafficBatch(Message):
    """Many per-host ``TrafficTick`` records of one tier, one tick (and one partition), as columns.

    ``columns`` maps a TrafficTick field name to ``count`` values, record ``i`` being the
    ``i``-th value of every column. Shared fields (``tier``, ``tick_start``, ``tick_seconds``)
    are on the batch; record ids are ``<batch id>:<index>``. ``top_sources`` and
    ``top_prefixes`` hold each record's list as one compact text, ``"<source> <packets>
    <bytes>;..."`` (a source or prefix has no space or semicolon): only the few targets that turn
    hot need them, so the consumer parses them then (``TrafficColumns.sources``). With
    ``format: "columns"`` every column is a JSON list; with ``"packed"`` a column may instead be
    one of the ``batchcodec`` objects. A producer keeps each encoded batch under the server's max
    payload.

    ``decode_batch`` checks the structure (a broken one raises ``BatchError``) and every record
    (a bad record is dropped and counted, the rest kept); a bad entry inside a top-sources text is
    dropped when it is parsed.
    """

    kind: ClassVar[str] = "traffic"

    format: Literal["columns", "packed"] = "columns"
    tier: Tier
    partition: int | None = Field(default=None, ge=0)
    tick_start: datetime
    tick_seconds: float = Field(gt=0)
    count: int = Field(ge=0, le=MAX_BATCH_RECORDS)
    columns: dict[str, Any] = Field(default_factory=dict)

    def subject(self) -> str:
        return batch_subject(self.tier, self.partition)


BATCH_NUMBERS = (*BATCH_COUNTS, "bytes_per_packet", "sampled")


def ticks_to_columns(ticks: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """The batch columns of ``TrafficTick``-shaped dicts (top sources rendered as text)."""
    cols: dict[str, list[Any]] = {}
    for name in (*BATCH_TEXT, *BATCH_OPT_TEXT, *BATCH_NUMBERS, "exporters", "size_histogram", "sip_methods"):
        cols[name] = [t.get(name) for t in ticks]
    for name in BATCH_TOPS:
        cols[name] = [";".join([f"{s['source']} {s['packets']} {s['bytes']}" for s in t.get(name) or ()])
                      for t in ticks]  # fmt: skip
    return cols


def ticks_to_batch(ticks: list[dict[str, Any]], *, partition: int | None = None, batch_id: str | None = None,
                   packed: bool = False) -> dict[str, Any]:  # fmt: skip
    """A ``TrafficBatch`` document (plain dict, for orjson) from ``TrafficTick``-shaped dicts of one
    tier and one tick, as JSON lists or (``packed``) as ``batchcodec`` columns."""
    first = ticks[0]
    cols = ticks_to_columns(ticks)
    return batch_document(first["tier"], first["tick_start"], first["tick_seconds"], len(ticks),
                          pack_columns(cols) if packed else cols, partition=partition, batch_id=batch_id,
                          packed=packed)  # fmt: skip


def batch_document(tier: str, tick_start: str, tick_seconds: float, count: int, columns: dict[str, Any], *,
                   partition: int | None = None, batch_id: str | None = None, packed: bool = True
                   ) -> dict[str, Any]:  # fmt: skip
    """The ``TrafficBatch`` envelope around already-built columns."""
    return {
        "schema_version": SCHEMA_VERSION,
        "id": batch_id or new_id(),
        "ts": utcnow().isoformat(),
        "format": "packed" if packed else "columns",
        "tier": tier,
        "partition": partition,
        "tick_start": tick_start,
        "tick_seconds": tick_seconds,
        "count": count,
        "columns": columns,
    }


def pack_columns(cols: Mapping[str, Any]) -> dict[str, Any]:
    """Each column in its ``batchcodec`` form: numbers as arrays, text as lines or a dictionary,
    exporters as a dictionary, the SIP method mix sparse. Values numpy cannot hold as numbers
    (a ragged size histogram, a wrong type) stay JSON lists, for the consumer to judge."""
    out: dict[str, Any] = {}
    for name, col in cols.items():
        if name in BATCH_NUMBERS or name == "size_histogram":
            try:
                arr = np.asarray(col)
                if arr.dtype.kind not in "biuf" or arr.ndim != (2 if name == "size_histogram" else 1):
                    raise ValueError(name)
                out[name] = batchcodec.pack_array(arr)
            except (ValueError, TypeError, OverflowError):
                out[name] = col if isinstance(col, list) else list(col)
        elif name in (*BATCH_TEXT, *BATCH_OPT_TEXT, *BATCH_TOPS):
            out[name] = batchcodec.pack_text(col)
        elif name == "exporters":
            out[name] = batchcodec.pack_dictionary(col)
        elif name == "sip_methods":
            out[name] = batchcodec.pack_sparse(col)
        else:
            out[name] = col if isinstance(col, list) else list(col)
    return out


def encode_batches(tier: str, tick_start: str, tick_seconds: float, cols: Mapping[str, Any], n: int, *,
                   partition: int | None = None, max_bytes: int = MAX_BATCH_BYTES, first: int = 2_000
                   ) -> list[tuple[bytes, str]]:  # fmt: skip
    """``n`` records of columns (numpy arrays or lists of ``n``) as packed batches, each encoded
    under ``max_bytes``: sized from the bytes per record seen so far, halved when one still comes
    out too big; a single record too big is dropped (logged)."""
    out: list[tuple[bytes, str]] = []
    size = min(first, MAX_BATCH_RECORDS)
    i = 0
    while i < n:
        j = min(n, i + size)
        doc = batch_document(tier, tick_start, tick_seconds, j - i, pack_columns({k: v[i:j] for k, v in cols.items()}),
                             partition=partition)  # fmt: skip
        data = orjson.dumps(doc)
        if len(data) > max_bytes:
            if j - i == 1:
                log.warning("a per-host tick of %d bytes exceeds the max payload; dropped", len(data))
                i += 1
                continue
            size = max(1, (j - i) // 2)
            continue
        out.append((data, doc["id"]))
        size = max(1, min(MAX_BATCH_RECORDS, int(max_bytes * 0.9 / (len(data) / (j - i)))))
        i = j
    return out


def source_counts(raw: Any) -> list[SourceCount]:
    """A top-sources column value (``"<source> <packets> <bytes>;..."``) -> SourceCount list; bad
    entries dropped."""
    out: list[SourceCount] = []
    if not isinstance(raw, str) or not raw:
        return out
    for e in raw.split(";")[:MAX_TOP]:
        try:
            src, pk, by = e.split(" ")
            out.append(SourceCount(source=src, packets=int(pk), bytes=int(by)))
        except ValueError:
            continue
    return out


class RecordSources:
    """The top sources and prefixes of one batch record, parsed on first use."""

    __slots__ = ("_p", "_raw_p", "_raw_s", "_s")

    def __init__(self, raw_s: Any, raw_p: Any) -> None:
        self._raw_s, self._raw_p = raw_s, raw_p
        self._s: list[SourceCount] | None = None
        self._p: list[SourceCount] | None = None

    @property
    def top_sources(self) -> list[SourceCount]:
        if self._s is None:
            self._s = source_counts(self._raw_s)
        return self._s

    @property
    def top_prefixes(self) -> list[SourceCount]:
        if self._p is None:
            self._p = source_counts(self._raw_p)
        return self._p


class TrafficColumns:
    """The good records of a decoded batch: numeric columns as float64 arrays, the rest as lists."""

    def __init__(self, batch: TrafficBatch, keep: list[int] | None, nums: dict[str, Any], bad: dict[str, int]) -> None:
        cols = batch.columns
        self.batch = batch
        self.tier = batch.tier
        self.tick_start = batch.tick_start if batch.tick_start.tzinfo else batch.tick_start.replace(tzinfo=UTC)
        self.tick_seconds = float(batch.tick_seconds)
        self.bad = bad  # reason -> records dropped
        self.n = batch.count if keep is None else len(keep)
        self.num: dict[str, Any] = nums if keep is None else {k: v[keep] for k, v in nums.items()}
        self._keep = keep

        def pick(name: str, default: Any = None) -> list[Any]:
            col = cols.get(name)
            if col is None:
                return [default] * self.n
            return col if keep is None else [col[i] for i in keep]

        self.ids: list[str] = pick("target_id")
        self.text = {k: pick(k) for k in (*BATCH_TEXT[1:], *BATCH_OPT_TEXT)}
        self.sip_methods = pick("sip_methods", {})
        self.exporters = pick("exporters", [])
        self.size_histogram = pick("size_histogram", [])
        self.top_sources = pick("top_sources", "")
        self.top_prefixes = pick("top_prefixes", "")

    @property
    def dropped(self) -> int:
        return sum(self.bad.values())

    def meta(self, i: int) -> dict[str, Any]:
        """Record ``i``'s target as the registry row (``rollup.target_meta`` shape)."""
        t = self.text
        return {"id": self.ids[i], "tier": self.tier.value, "name": t["target"][i], "component": t["component"][i],
                "host": t["host"][i], "protocol": t["protocol"][i], "ports": t["ports"][i], "role": t["role"][i],
                "region": t["region"][i]}  # fmt: skip

    def sources(self, i: int) -> RecordSources:
        """Record ``i``'s top sources and prefixes, parsed when first read."""
        return RecordSources(self.top_sources[i], self.top_prefixes[i])

    def tick(self, i: int) -> TrafficTick:
        """Record ``i`` as a full TrafficTick (the object path: new targets, sampled SIP)."""
        t = self.text
        n = self.num
        index = i if self._keep is None else self._keep[i]
        return TrafficTick(
            id=f"{self.batch.id}:{index}", ts=self.batch.ts, tier=self.tier, target_id=self.ids[i],
            target=t["target"][i], component=t["component"][i], host=t["host"][i], protocol=t["protocol"][i],
            ports=t["ports"][i], role=t["role"][i], region=t["region"][i], tick_start=self.tick_start,
            tick_seconds=self.tick_seconds, exporters=self.exporters[i] or [],
            **{k: int(n[k][i]) for k in BATCH_COUNTS}, bytes_per_packet=float(n["bytes_per_packet"][i]),
            size_histogram=self.size_histogram[i] or [], top_sources=source_counts(self.top_sources[i]),
            top_prefixes=source_counts(self.top_prefixes[i]), sip_methods=self.sip_methods[i] or {},
            sampled=bool(n["sampled"][i]),
        )  # fmt: skip


def _number_column(col: list[Any]) -> Any:
    """A column as float64, NaN where a value is not a number."""
    if set(map(type, col)) <= {int, float}:
        try:
            return np.array(col, dtype=np.float64)
        except OverflowError:
            pass
    out = np.full(len(col), np.nan)
    for i, v in enumerate(col):
        if type(v) in (int, float) and abs(v) < 2**62:
            out[i] = float(v)
    return out


def _all(col: list[Any], types: set[type]) -> bool:
    return set(map(type, col)) <= types


class _Rows(Sequence[list[int]]):
    """A 2-D packed column read as one list per record (the size histogram of ``tick(i)``)."""

    def __init__(self, arr: np.ndarray) -> None:
        self.arr = arr

    def __len__(self) -> int:
        return len(self.arr)

    def __getitem__(self, i: Any) -> Any:
        return self.arr[i].tolist()


_SPARSE_DEFAULT: dict[str, Any] = {"sip_methods": {}, "exporters": [], "top_sources": "", "top_prefixes": ""}


def _unpack(cols: dict[str, Any], n: int, packed: bool) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Columns as lists of ``n`` (packed text, dictionary and sparse columns expanded) and the
    packed number columns as arrays; a column of the wrong shape is a ``BatchError``."""
    out: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for name, col in cols.items():
        if isinstance(col, dict) and packed:
            try:
                if name in BATCH_NUMBERS or name == "size_histogram":
                    arrays[name] = batchcodec.unpack_array(col, n, ndim=2 if name == "size_histogram" else 1)
                    out[name] = _Rows(arrays[name]) if name == "size_histogram" else arrays[name]
                    continue
                col = batchcodec.unpack_list(col, n, _SPARSE_DEFAULT.get(name))
            except batchcodec.PackedColumnError as exc:
                raise BatchError(f"traffic batch column {name!r}: {exc}") from None
        if not isinstance(col, list):
            raise BatchError(f"traffic batch column {name!r} is not a list")
        if len(col) != n:
            raise BatchError(f"traffic batch column {name!r} has {len(col)} values for count {n}")
        out[name] = col
    return out, arrays


def decode_batch(data: bytes | str | dict[str, Any]) -> TrafficColumns:
    """Decode and check a ``TrafficBatch``: ``BatchError`` when it is unusable (not JSON, too big,
    wrong envelope, missing or ragged columns), else its good records with the bad ones counted
    by reason (``bad_target_id``, ``duplicate``, ``bad_text``, ``bad_number``, ``bad_list``).

    Each check first runs as one C-speed pass over the column (``set(map(type, col))``) and
    looks at single values only when that pass finds something wrong."""
    from pydantic import ValidationError

    if isinstance(data, dict):
        doc: Any = data
    else:
        if len(data) > MAX_BATCH_BYTES:
            raise BatchError(f"traffic batch of {len(data)} bytes exceeds {MAX_BATCH_BYTES}")
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise BatchError(f"traffic batch is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BatchError("traffic batch must be a JSON object")
    cols = doc.get("columns")
    if not isinstance(cols, dict):
        raise BatchError("traffic batch has no 'columns' object")
    try:
        batch = TrafficBatch.model_validate({k: v for k, v in doc.items() if k != "columns"})
    except ValidationError as exc:
        raise BatchError(f"traffic batch envelope is invalid: {exc}") from None
    n = batch.count
    for name in BATCH_REQUIRED:
        if name not in cols:
            raise BatchError(f"traffic batch lacks column {name!r}")
    cols, arrays = _unpack(cols, n, batch.format == "packed")
    batch.columns = cols
    ok = np.ones(n, dtype=bool)
    bad: dict[str, int] = {}

    def reject(mask: Any, reason: str) -> None:
        new = mask & ok
        k = int(np.count_nonzero(new))
        if k:
            bad[reason] = bad.get(reason, 0) + k
            ok[new] = False

    def each(col: list[Any], wrong: Any, reason: str) -> None:
        reject(np.fromiter(map(wrong, col), bool, n), reason)

    ids = cols["target_id"]
    if not (_all(ids, {str}) and min(map(len, ids), default=1) > 0 and max(map(len, ids), default=0) <= 80):
        each(ids, lambda t: not (type(t) is str and 0 < len(t) <= 80), "bad_target_id")
    if len(set(ids if ok.all() else [t for t, g in zip(ids, ok.tolist(), strict=True) if g])) < int(ok.sum()):
        seen: set[str] = set()
        dup = np.zeros(n, dtype=bool)
        for i, t in enumerate(ids):
            if ok[i]:
                dup[i] = t in seen
                seen.add(t)
        reject(dup, "duplicate")
    for name in BATCH_TEXT[1:]:
        if not _all(cols[name], {str}):
            each(cols[name], lambda v: type(v) is not str, "bad_text")
    for name in BATCH_OPT_TEXT:
        if name in cols and not _all(cols[name], {str, type(None)}):
            each(cols[name], lambda v: v is not None and type(v) is not str, "bad_text")
    nums: dict[str, Any] = {}
    for name in (*BATCH_COUNTS, "bytes_per_packet"):
        col = cols.get(name)
        if col is None:
            nums[name] = np.zeros(n)
            continue
        arr = arrays[name].astype(np.float64) if name in arrays else _number_column(col)
        with np.errstate(invalid="ignore"):
            wrong = ~np.isfinite(arr) | (arr < 0)
            if name != "bytes_per_packet":
                wrong |= arr != np.floor(arr)
        reject(wrong, "bad_number")
        nums[name] = np.where(wrong, 0.0, arr)
    sampled = cols.get("sampled")
    if "sampled" in arrays:
        nums["sampled"] = (arrays["sampled"] != 0).astype(np.float64)
    else:
        nums["sampled"] = np.zeros(n) if sampled is None else np.fromiter(map(bool, sampled), float, n)
    for name in ("exporters", "size_histogram"):
        col = cols.get(name)
        if name in arrays or col is None:
            continue
        if not (_all(col, {list}) and max(map(len, col), default=0) <= MAX_TOP):
            each(col, lambda v: not (isinstance(v, list) and len(v) <= MAX_TOP), "bad_list")
    exp = cols.get("exporters")
    if exp is not None and not _all([e for v in exp if isinstance(v, list) for e in v], {str}):
        each(exp, lambda v: isinstance(v, list) and any(type(e) is not str for e in v), "bad_list")
    hist = cols.get("size_histogram")
    odd = np.zeros(n)
    width = np.zeros(n)  # buckets per record: the minute rollup counts odd sizes only for the usual 6
    if hist is not None:
        try:
            # the usual case: every record has the 6 buckets
            harr = arrays["size_histogram"].astype(np.float64) if "size_histogram" in arrays else np.array(
                hist, dtype=np.float64)  # fmt: skip
            if harr.ndim != 2:
                raise ValueError("ragged")
            hbad = (harr < 0).any(axis=1) | (harr != np.floor(harr)).any(axis=1)
            width[:] = harr.shape[1]
            if harr.shape[1] >= 6:
                odd = harr[:, 0] + harr[:, 5]
            reject(hbad, "bad_list")
        except (ValueError, TypeError, OverflowError):
            each(hist, lambda h: isinstance(h, list) and any(type(x) is not int or x < 0 for x in h), "bad_list")
            odd = np.fromiter((h[0] + h[5] if ok_h and isinstance(h, list) and len(h) >= 6 else 0
                               for h, ok_h in zip(hist, ok.tolist(), strict=True)), float, n)  # fmt: skip
            width = np.fromiter((len(h) if isinstance(h, list) else 0 for h in hist), float, n)
    nums["odd_size_packets"] = odd
    nums["size_buckets"] = width
    sip = cols.get("sip_methods")
    if sip is not None and any(sip):

        def bad_sip(m: Any) -> bool:
            if not m:
                return m is not None and not isinstance(m, dict)
            if not isinstance(m, dict) or len(m) > MAX_TOP:
                return True
            return not all(type(k) is str and type(v) is int and v >= 0 for k, v in m.items())

        each(sip, bad_sip, "bad_list")
    for name in BATCH_TOPS:
        col = cols.get(name)
        if col is not None and not (_all(col, {str}) and max(map(len, col), default=0) <= MAX_TOP_CHARS):
            each(col, lambda v: not (type(v) is str and len(v) <= MAX_TOP_CHARS), "bad_list")
    if ok.all():
        return TrafficColumns(batch, None, nums, bad)
    return TrafficColumns(batch, np.flatnonzero(ok).tolist(), nums, bad)
