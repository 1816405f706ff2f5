"""Template, options-template, held-data and sampler state for NetFlow v9 / IPFIX exporters.

Everything here is bounded, because every byte of it is controlled by whoever can send us UDP:
templates per (exporter, domain) and in total (LRU eviction), domains (LRU), compiled layouts
(LRU, shared between identical templates of different exporters), sets held while waiting for
their template (per exporter and in total, in bytes and count, expired after ``hold_seconds``),
and sampler tables. The decoder owns the parsing; this module owns the state and its limits.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxguard.ingest.decode.ies import IP6, ipfix_ie, v9_field

VARLEN = 65535  # IPFIX field length meaning "variable length" (RFC 7011 section 7)
MAX_RECORD_LENGTH = 65535 - 16 - 4  # an IPFIX message is at most 65535 bytes with its headers


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One template field as sent on the wire."""

    ie: int
    length: int
    pen: int = 0
    scope: bool = False  # v9 options scope field: ``ie`` is a scope type, not an IE id


class Layout:
    """A compiled template (field list -> names, numpy dtype); identical templates share one.

    ``dtype`` covers the fixed-length fields only, packed in template order: for templates without
    variable-length fields that is the wire record itself, so a data set is one ``np.frombuffer``;
    records with variable-length fields are first compacted to that layout (slow path).
    """

    __slots__ = (
        "dtype",
        "field_ix",
        "fields",
        "fixed_ix",
        "min_length",
        "names",
        "plan",
        "record_length",
        "types",
        "variable",
        "version",
        "wire_offsets",
    )

    def __init__(self, version: int, fields: tuple[FieldSpec, ...]) -> None:
        self.version = version
        self.fields = fields
        names: list[str] = []
        types: list[str] = []
        for f in fields:
            if version == 10:
                name, kind = ipfix_ie(f.ie, f.pen)
            else:
                name, kind = v9_field(f.ie, scope=f.scope)
            names.append(name)
            types.append(kind)
        self.names = tuple(names)
        self.types = tuple(types)
        self.variable = any(f.length == VARLEN for f in fields)
        self.fixed_ix = tuple(i for i, f in enumerate(fields) if f.length != VARLEN)
        self.min_length = sum(1 if f.length == VARLEN else f.length for f in fields)
        self.record_length = None if self.variable else self.min_length
        offsets: list[int] = []
        pos = 0
        for f in fields:
            offsets.append(pos)
            pos += f.length
        self.wire_offsets = None if self.variable else tuple(offsets)
        formats: list[tuple[str, Any]] = []
        for i in self.fixed_ix:
            n = fields[i].length
            if n == 16 and types[i] == IP6:
                formats.append((f"f{i}", (">u8", (2,))))
            elif n in (1, 2, 4, 8):
                formats.append((f"f{i}", f">u{n}"))
            else:
                formats.append((f"f{i}", f"V{n}"))
        self.dtype = np.dtype(formats)
        # first template position of each (pen, ie); the flow plan looks fields up by id
        field_ix: dict[tuple[int, int], int] = {}
        for i, f in enumerate(fields):
            if not f.scope or version == 10:
                field_ix.setdefault((f.pen, f.ie), i)
        self.field_ix = field_ix
        self.plan: Any = None  # the decoder's column plan, compiled once per layout


@dataclass(slots=True)
class Template:
    """A template as one exporter defined it."""

    template_id: int
    kind: str  # "flow" or "options"
    layout: Layout
    scope_count: int = 0
    fast: bool = False  # flow records, fixed length: the vectorised path takes them whole

    def __post_init__(self) -> None:
        self.fast = self.kind == "flow" and not self.layout.variable

    def view(self) -> dict[str, Any]:
        """Plain-dict form for the exporter registry."""
        return {
            "id": self.template_id,
            "kind": self.kind,
            "field_count": len(self.layout.fields),
            "scope_field_count": self.scope_count,
            "record_length": self.layout.record_length,
            "variable_length": self.layout.variable,
            "fields": list(self.layout.names),
        }


@dataclass(slots=True)
class DomainState:
    """Per (exporter, format, domain): templates, samplers and sequence tracking."""

    exporter: str
    version: int
    domain: int
    templates: OrderedDict[int, Template] = field(default_factory=OrderedDict)
    samplers: dict[int, int] = field(default_factory=dict)  # sampler/selector id -> interval
    default_sampling: int | None = None  # from options data without a sampler id
    default_rate: int = 1  # effective_default() or 1, kept current for the hot path
    system_init_ms: int | None = None  # IPFIX systemInitTimeMilliseconds, for *SysUpTime fields
    next_seq: int | None = None  # sequence number expected next (None: unknown, resync)
    last_seq: int | None = None
    lost_total: int = 0
    evicted: bool = False  # dropped from the cache (LRU); holders must look the domain up again

    def effective_default(self) -> int | None:
        """Interval for records that do not name their sampler."""
        if self.default_sampling:
            return self.default_sampling
        if len(self.samplers) == 1:
            return next(iter(self.samplers.values()))
        return None


@dataclass(slots=True)
class HeldSet:
    """A data set that arrived before its template."""

    version: int
    domain: int
    template_id: int
    payload: bytes
    header: tuple[int, int]  # (export unix seconds, sysUptime ms or 0)
    arrived: float
    token: int  # decode_batch call that held it
    datagram_ix: int


class TemplateCache:
    """All template-related state of one decoder, with hard limits on every table."""

    def __init__(
        self,
        *,
        max_templates_per_domain: int = 4096,
        max_templates: int = 65536,
        max_domains: int = 16384,
        max_layouts: int = 8192,
        max_samplers_per_domain: int = 1024,
        hold_seconds: float = 5.0,
        max_held_sets_per_exporter: int = 256,
        max_held_bytes_per_exporter: int = 1 << 20,
        max_held_bytes: int = 16 << 20,
    ) -> None:
        self.max_templates_per_domain = max_templates_per_domain
        self.max_templates = max_templates
        self.max_domains = max_domains
        self.max_layouts = max_layouts
        self.max_samplers_per_domain = max_samplers_per_domain
        self.hold_seconds = hold_seconds
        self.max_held_sets_per_exporter = max_held_sets_per_exporter
        self.max_held_bytes_per_exporter = max_held_bytes_per_exporter
        self.max_held_bytes = max_held_bytes
        self._domains: OrderedDict[tuple[str, int, int], DomainState] = OrderedDict()
        self._layouts: OrderedDict[tuple[int, tuple[FieldSpec, ...]], Layout] = OrderedDict()
        self._template_count = 0
        # every stored template, least recently learned/refreshed first (for the global cap)
        self._order: OrderedDict[tuple[tuple[str, int, int], int], None] = OrderedDict()
        self._held: OrderedDict[str, deque[HeldSet]] = OrderedDict()
        self._held_bytes: dict[str, int] = {}
        self._held_total = 0
        self.pending_drops: dict[str, int] = {}  # held sets given up on, not yet reported
        self.evicted_templates = 0
        self.dropped_held_total = 0

    # -- domains and templates -------------------------------------------------------------
    def domain(self, exporter: str, version: int, domain: int) -> DomainState:
        """The state of one (exporter, format, domain), created on first use (LRU-bounded)."""
        key = (exporter, version, domain)
        st = self._domains.get(key)
        if st is None:
            st = DomainState(exporter, version, domain)
            self._domains[key] = st
            while len(self._domains) > self.max_domains:
                old_key, old = self._domains.popitem(last=False)
                old.evicted = True
                for tid in old.templates:
                    self._order.pop((old_key, tid), None)
                self._template_count -= len(old.templates)
                self.evicted_templates += len(old.templates)
        else:
            self._domains.move_to_end(key)
        return st

    def layout(self, version: int, fields: tuple[FieldSpec, ...]) -> Layout:
        """Compile (or reuse) the layout of a field list."""
        key = (version, fields)
        lay = self._layouts.get(key)
        if lay is None:
            lay = Layout(version, fields)
            self._layouts[key] = lay
            if len(self._layouts) > self.max_layouts:
                self._layouts.popitem(last=False)
        else:
            self._layouts.move_to_end(key)
        return lay

    def learn(
        self, st: DomainState, template_id: int, kind: str, fields: tuple[FieldSpec, ...], scope_count: int
    ) -> Template:
        """Store a (re)definition; an identical re-send keeps the existing object."""
        okey = ((st.exporter, st.version, st.domain), template_id)
        old = st.templates.get(template_id)
        if old is not None and old.kind == kind and old.layout.fields == fields:
            st.templates.move_to_end(template_id)
            self._order.move_to_end(okey)
            return old
        t = Template(template_id, kind, self.layout(st.version, fields), scope_count)
        if old is None:
            self._template_count += 1
        st.templates[template_id] = t
        st.templates.move_to_end(template_id)
        self._order[okey] = None
        self._order.move_to_end(okey)
        while len(st.templates) > self.max_templates_per_domain:
            tid, _ = st.templates.popitem(last=False)
            self._order.pop((okey[0], tid), None)
            self._template_count -= 1
            self.evicted_templates += 1
        while self._template_count > self.max_templates and self._order:
            # least recently learned or refreshed first: live exporters re-send their templates
            (dkey, tid), _ = self._order.popitem(last=False)
            dst = self._domains.get(dkey)
            if dst is not None and dst.templates.pop(tid, None) is not None:
                self._template_count -= 1
                self.evicted_templates += 1
        return t

    def withdraw(self, st: DomainState, template_id: int, kind: str) -> int:
        """RFC 7011 8.1: withdraw one template, or all of a kind (id 2 = data, id 3 = options)."""
        if template_id in (2, 3):
            ids = [tid for tid, t in st.templates.items() if t.kind == kind]
        else:
            t = st.templates.get(template_id)
            ids = [template_id] if t is not None and t.kind == kind else []
        dkey = (st.exporter, st.version, st.domain)
        for tid in ids:
            del st.templates[tid]
            self._order.pop((dkey, tid), None)
        self._template_count -= len(ids)
        return len(ids)

    @property
    def template_count(self) -> int:
        return self._template_count

    # -- sets held until their template arrives ---------------------------------------------
    def hold(self, exporter: str, item: HeldSet) -> tuple[bool, int]:
        """Keep a set for later: (kept, sets of this exporter dropped to make room or refused)."""
        size = len(item.payload)
        if size > self.max_held_bytes_per_exporter or size > self.max_held_bytes:
            self.dropped_held_total += 1
            return False, 1
        q = self._held.get(exporter)
        if q is None:
            q = self._held[exporter] = deque()
            self._held_bytes[exporter] = 0
        else:
            self._held.move_to_end(exporter)
        dropped = 0
        while q and (
            len(q) >= self.max_held_sets_per_exporter
            or self._held_bytes[exporter] + size > self.max_held_bytes_per_exporter
        ):
            self._forget(exporter, q.popleft())
            dropped += 1
        while self._held_total + size > self.max_held_bytes:
            # least recently holding exporter first; one exists since size <= max_held_bytes
            victim, vq = next((e, d) for e, d in self._held.items() if d)
            self._forget(victim, vq.popleft())
            if victim == exporter:
                dropped += 1
            else:
                self._note_drop(victim, 1)
                if not vq:
                    del self._held[victim], self._held_bytes[victim]
        q.append(item)
        self._held_bytes[exporter] += size
        self._held_total += size
        self.dropped_held_total += dropped
        return True, dropped

    def _forget(self, exporter: str, item: HeldSet) -> None:
        n = len(item.payload)
        self._held_bytes[exporter] -= n
        self._held_total -= n

    def release(self, exporter: str, version: int, domain: int, template_id: int) -> list[HeldSet]:
        """Take the held sets a newly learned template can decode, in arrival order."""
        q = self._held.get(exporter)
        if not q:
            return []
        out = [h for h in q if h.template_id == template_id and h.domain == domain and h.version == version]
        if out:
            keep = deque(
                h for h in q if not (h.template_id == template_id and h.domain == domain and h.version == version)
            )
            for h in out:
                self._forget(exporter, h)
            if keep:
                self._held[exporter] = keep
            else:
                del self._held[exporter], self._held_bytes[exporter]
        return out

    def expire(self, now: float) -> None:
        """Drop held sets older than ``hold_seconds``; counted for their exporter's next report."""
        if not self._held:
            return
        limit = now - self.hold_seconds
        for exporter in list(self._held):
            q = self._held[exporter]
            n = 0
            while q and q[0].arrived < limit:
                self._forget(exporter, q.popleft())
                n += 1
            if n:
                self._note_drop(exporter, n)
            if not q:
                del self._held[exporter], self._held_bytes[exporter]

    def _note_drop(self, exporter: str, n: int) -> None:
        self.dropped_held_total += n
        if len(self.pending_drops) >= self.max_domains and exporter not in self.pending_drops:
            self.pending_drops.clear()  # spoofed sources that never speak again: totals stay counted
        self.pending_drops[exporter] = self.pending_drops.get(exporter, 0) + n

    def take_dropped(self, exporter: str) -> int:
        """Held sets of this exporter given up on since its last report."""
        if not self.pending_drops:
            return 0
        return self.pending_drops.pop(exporter, 0)

    @property
    def held_bytes(self) -> int:
        return self._held_total

    @property
    def held_sets(self) -> int:
        return sum(len(q) for q in self._held.values())

    # -- samplers ----------------------------------------------------------------------------
    def learn_sampler(self, st: DomainState, sampler_id: int | None, interval: int) -> None:
        """Record a sampling interval from options data (per sampler id, or the domain default)."""
        if interval <= 0:
            return
        if sampler_id is None:
            st.default_sampling = interval
        elif sampler_id in st.samplers or len(st.samplers) < self.max_samplers_per_domain:
            st.samplers[sampler_id] = interval
        st.default_rate = st.effective_default() or 1

    # -- read-only views for the exporter registry ---------------------------------------------
    def domains(self) -> list[tuple[str, str, int]]:
        """(exporter, format, domain) of every known domain."""
        return [(k[0], _FORMAT[k[1]], k[2]) for k in self._domains]

    def templates_view(self, exporter: str, domain: int, fmt: str | None = None) -> list[dict[str, Any]]:
        """Templates of one exporter domain as plain dicts, sorted by id."""
        out: list[dict[str, Any]] = []
        for (exp, ver, dom), st in self._domains.items():
            if exp == exporter and dom == domain and (fmt is None or _FORMAT[ver] == fmt):
                out.extend(t.view() for t in st.templates.values())
        return sorted(out, key=lambda d: (d["kind"], d["id"]))

    def sampling_view(self, exporter: str, domain: int) -> dict[str, Any]:
        """Learned sampling of one exporter domain: default interval and per-sampler intervals."""
        samplers: dict[int, int] = {}
        default: int | None = None
        for (exp, _, dom), st in self._domains.items():
            if exp == exporter and dom == domain:
                samplers.update(st.samplers)
                default = st.effective_default() or default
        return {"default": default, "samplers": dict(sorted(samplers.items()))}

    def snapshot(self) -> list[dict[str, Any]]:
        """Everything the registry shows, one dict per (exporter, format, domain)."""
        return [
            {
                "exporter": st.exporter,
                "format": _FORMAT[st.version],
                "domain": st.domain,
                "templates": sorted((t.view() for t in st.templates.values()), key=lambda d: d["id"]),
                "sampling": {"default": st.effective_default(), "samplers": dict(st.samplers)},
                "sequence": st.last_seq,
                "lost": st.lost_total,
            }
            for st in self._domains.values()
        ]


_FORMAT = {5: "netflow5", 9: "netflow9", 10: "ipfix"}


def validate_fields(version: int, fields: tuple[FieldSpec, ...], max_fields: int) -> str | None:
    """Why a template must be rejected, or None when it is usable."""
    if not fields:
        return "template has no fields"
    if len(fields) > max_fields:
        return f"template has {len(fields)} fields (limit {max_fields})"
    total = 0
    for i, f in enumerate(fields):
        if f.length == 0:
            return f"field {i} (type {f.ie}) has length 0"
        if f.length == VARLEN:
            if version != 10:
                return f"field {i} (type {f.ie}) has variable length 65535, not allowed in v9"
            total += 1
        else:
            total += f.length
    if total > MAX_RECORD_LENGTH:
        return f"record length {total} exceeds {MAX_RECORD_LENGTH}"
    return None


def split_record(layout: Layout, data: bytes, off: int, end: int) -> tuple[list[bytes], int] | None:
    """The raw field values of one record at ``off`` and where the next starts; None if it overflows.

    Variable-length fields carry a 1-byte length, or 255 followed by a 2-byte length (RFC 7011 7).
    """
    if layout.wire_offsets is not None:
        nxt = off + layout.min_length
        if nxt > end:
            return None
        pairs = zip(layout.wire_offsets, layout.fields, strict=True)
        return [data[off + o : off + o + f.length] for o, f in pairs], nxt
    values: list[bytes] = []
    for f in layout.fields:
        n = f.length
        if n == VARLEN:
            if off >= end:
                return None
            n = data[off]
            off += 1
            if n == 255:
                if off + 2 > end:
                    return None
                n = (data[off] << 8) | data[off + 1]
                off += 2
        if off + n > end:
            return None
        values.append(data[off : off + n])
        off += n
    return values, off
