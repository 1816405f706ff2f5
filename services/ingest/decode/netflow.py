"""NetFlow v5, NetFlow v9 (RFC 3954) and IPFIX (RFC 7011) decoder: datagrams in, FLOW columns out.

Shape of the hot path (design section 6): a tight per-datagram loop parses the header and the set
boundaries with ``struct`` and appends each data set's record bytes to a group keyed by the
template's compiled layout (shared by identical templates, across exporters); after the loop each
group is decoded with one ``np.frombuffer`` over a structured big-endian dtype and the FLOW columns
are filled with array operations. Only templates with variable-length fields, options records and
``want_records=True`` take per-record Python paths.
"""

from __future__ import annotations

import struct
import time
from typing import Any

import numpy as np

from voxguard.ingest.decode.base import DatagramReport, DecodeBatch
from voxguard.ingest.decode.flows import FLOW_DTYPE, V4_MAPPED_LO_PREFIX, empty_flows
from voxguard.ingest.decode.ies import render
from voxguard.ingest.decode.templates import (
    VARLEN,
    DomainState,
    FieldSpec,
    HeldSet,
    Layout,
    Template,
    TemplateCache,
    split_record,
    validate_fields,
)

_V5_HDR = struct.Struct("!HHIIIIBBH")
_V9_HDR = struct.Struct("!HHIIII")
_IPFIX_HDR = struct.Struct("!HHIII")
_SET_HDR = struct.Struct("!HH")
_FIELD = struct.Struct("!HH")
_PEN = struct.Struct("!I")

# The fixed v5 record, described as a template so v5 shares the v9/IPFIX machinery and names.
V5_FIELDS = tuple(
    FieldSpec(ie, n)
    for ie, n in (
        (8, 4), (12, 4), (15, 4), (10, 2), (14, 2), (2, 4), (1, 4), (22, 4), (21, 4), (7, 2),
        (11, 2), (210, 1), (6, 1), (4, 1), (5, 1), (16, 2), (17, 2), (9, 1), (13, 1), (210, 2),
    )
)  # fmt: skip
V5_RECORD = 48

FORMAT = {5: "netflow5", 9: "netflow9", 10: "ipfix"}

# Sequence heuristics: a forward jump beyond MAX_GAP, or a backward one beyond REORDER, is taken as
# an exporter restart (resync, no loss); a small backward step is a late or duplicate datagram.
_MAX_GAP = {5: 1 << 24, 9: 1 << 16, 10: 1 << 24}
_REORDER = {5: 1 << 16, 9: 1 << 10, 10: 1 << 16}


class _Group:
    """Data sets of one layout collected across the batch; decoded with one frombuffer."""

    __slots__ = ("chunks", "layout", "meta", "n", "offset")

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.chunks: list[bytes] = []
        # per chunk: (records, datagram_ix, export secs, sysUptime ms, default sampling, state)
        self.meta: list[tuple[int, int, int, int, int, DomainState]] = []
        self.n = 0
        self.offset = 0


class _Batch:
    """Working state of one decode_batch call."""

    __slots__ = ("domains", "groups", "now", "patches", "records", "reports", "token", "want")

    def __init__(self, want: bool, token: int, now: float) -> None:
        self.want = want
        self.token = token
        self.now = now
        self.groups: dict[Layout, _Group] = {}
        self.reports: list[DatagramReport] = []
        self.records: list[dict[str, Any]] | None = [] if want else None
        self.patches: list[tuple[dict[str, Any], _Group, int]] = []
        self.domains: dict[tuple[str, int, int], DomainState] = {}  # resolved once per batch


def _err(rep: DatagramReport, msg: str) -> None:
    rep.error = msg if rep.error is None else f"{rep.error}; {msg}"


class NetflowDecoder:
    """Decoder for NetFlow v5/v9 and IPFIX; one instance holds the template state of all exporters.

    ``templates`` (a :class:`TemplateCache`) holds templates, held sets, sampler tables and
    sequence state, all bounded; its views feed the exporter registry. Not thread-safe: one
    decoder per receiving thread/process (exporters are pinned to a collector anyway).
    """

    def __init__(self, templates: TemplateCache | None = None, *, max_template_fields: int = 512) -> None:
        self.templates = templates if templates is not None else TemplateCache()
        self.max_template_fields = max_template_fields
        self._v5 = Layout(5, V5_FIELDS)
        self._token = 0

    # -- public --------------------------------------------------------------------------------
    def decode_batch(
        self,
        datagrams: list[tuple[bytes, str]],
        *,
        want_records: bool = False,
        now: float | None = None,
    ) -> DecodeBatch:
        """Decode ``(payload, exporter address)`` pairs; never raises on bad input.

        Every datagram gets a report (errors in ``DatagramReport.error``). ``now`` (default
        ``time.monotonic()``) only ages the sets held for a missing template. With
        ``want_records=True`` the records come in wire order and ``flows[i]`` is the i-th flow
        record; otherwise flows are grouped by template layout (``datagram_ix`` says where from).
        """
        now = time.monotonic() if now is None else now
        self._token += 1
        b = _Batch(want_records, self._token, now)
        self.templates.expire(now)
        reports = b.reports
        for dix, (data, exporter) in enumerate(datagrams):
            rep = DatagramReport(exporter if type(exporter) is str else str(exporter), "unknown")
            reports.append(rep)
            try:
                if type(data) is not bytes:
                    data = bytes(data)
                version = (data[0] << 8) | data[1] if len(data) >= 2 else -1
                if version == 9:
                    self._v9(b, dix, data, rep)
                elif version == 10:
                    self._ipfix(b, dix, data, rep)
                elif version == 5:
                    self._v5_datagram(b, dix, data, rep)
                elif version < 0:
                    _err(rep, f"datagram of {len(data)} bytes has no version field")
                else:
                    _err(rep, f"unsupported flow export version {version}")
            except Exception as exc:  # a decoder bug must not stop the collector
                _err(rep, f"internal decoder error: {exc!r}")
        flows = self._finish(b)
        return DecodeBatch(flows=flows, reports=reports, records=b.records)

    # -- per datagram ----------------------------------------------------------------------------
    def _v5_datagram(self, b: _Batch, dix: int, data: bytes, rep: DatagramReport) -> None:
        rep.format = "netflow5"
        n = len(data)
        if n < 24:
            _err(rep, f"netflow5: datagram of {n} bytes is shorter than the 24-byte header")
            return
        _, count, uptime, secs, _nsecs, seq, etype, eid, samp = _V5_HDR.unpack_from(data, 0)
        domain = (etype << 8) | eid
        st = self.templates.domain(rep.exporter, 5, domain)
        rep.domain = domain
        rep.sequence = seq
        avail = (n - 24) // V5_RECORD
        if count > avail:
            _err(rep, f"netflow5: header count {count} needs {24 + count * V5_RECORD} bytes, datagram has {n}")
            count = avail
        rep.lost = _track(st, 5, seq, count)
        interval = samp & 0x3FFF
        rep.sampling_interval = interval or None
        if count == 0:
            return
        rep.flow_records = count
        rate = interval or 1
        g = b.groups.get(self._v5)
        if g is None:
            g = b.groups[self._v5] = _Group(self._v5)
        start = g.n
        g.chunks.append(data[24 : 24 + count * V5_RECORD])
        g.meta.append((count, dix, secs, uptime, rate, st))
        g.n += count
        if b.want:
            assert b.records is not None
            for k in range(count):
                off = 24 + k * V5_RECORD
                vals = split_record(self._v5, data, off, off + V5_RECORD)
                rec = record_dict(self._v5, vals[0] if vals else [], rep, None, "flow")
                rec["engineType"] = etype
                rec["engineId"] = eid
                b.records.append(rec)
                b.patches.append((rec, g, start + k))

    def _v9(self, b: _Batch, dix: int, data: bytes, rep: DatagramReport) -> None:
        rep.format = "netflow9"
        n = len(data)
        if n < 20:
            _err(rep, f"netflow9: datagram of {n} bytes is shorter than the 20-byte header")
            return
        _, _count, uptime, secs, seq, src = _V9_HDR.unpack_from(data, 0)
        cache = self.templates
        key = (rep.exporter, 9, src)
        st = b.domains.get(key)
        if st is None or st.evicted:
            st = b.domains[key] = cache.domain(*key)
        rep.domain = src
        rep.sequence = seq
        if st.next_seq == seq:  # in order: the common case, inline
            st.next_seq = (seq + 1) & 0xFFFFFFFF
            st.last_seq = seq
        else:
            rep.lost = _track(st, 9, seq, 1)
        if cache.pending_drops:
            rep.dropped += cache.take_dropped(rep.exporter)
        templates = st.templates
        off = 20
        while n - off >= 4:
            sid, slen = _SET_HDR.unpack_from(data, off)
            if slen < 4:
                _err(rep, f"netflow9: flowset length {slen} < 4 at offset {off}")
                break
            end = off + slen
            if end > n:
                _err(rep, f"netflow9: flowset length {slen} exceeds datagram ({n} bytes) at offset {off}")
                break
            if sid >= 256:
                t = templates.get(sid)
                if t is None:
                    self._hold(b, dix, rep, st, sid, data[off + 4 : end], secs, uptime)
                else:
                    templates.move_to_end(sid)
                    if t.fast and not b.want:  # the hot path: queue the records for one frombuffer
                        lay = t.layout
                        reclen = lay.min_length
                        cnt = (slen - 4) // reclen
                        if cnt:
                            g = b.groups.get(lay)
                            if g is None:
                                g = b.groups[lay] = _Group(lay)
                            g.chunks.append(data[off + 4 : off + 4 + cnt * reclen])
                            g.meta.append((cnt, dix, secs, uptime, st.default_rate, st))
                            g.n += cnt
                            rep.flow_records += cnt
                    else:
                        self._data_slow(b, dix, rep, st, t, data, off + 4, end, secs, uptime)
            elif sid == 0:
                self._v9_templates(b, dix, rep, st, data, off + 4, end, False, secs, uptime)
            elif sid == 1:
                self._v9_templates(b, dix, rep, st, data, off + 4, end, True, secs, uptime)
            off = end
        if st.default_sampling or st.samplers:
            rep.sampling_interval = st.effective_default()

    def _ipfix(self, b: _Batch, dix: int, data: bytes, rep: DatagramReport) -> None:
        rep.format = "ipfix"
        n = len(data)
        if n < 16:
            _err(rep, f"ipfix: datagram of {n} bytes is shorter than the 16-byte header")
            return
        _, length, export, seq, odid = _IPFIX_HDR.unpack_from(data, 0)
        key = (rep.exporter, 10, odid)
        st = b.domains.get(key)
        if st is None or st.evicted:
            st = b.domains[key] = self.templates.domain(*key)
        rep.domain = odid
        rep.sequence = seq
        if length < 16:
            _err(rep, f"ipfix: message length {length} is shorter than the 16-byte header")
            st.next_seq = None
            return
        if length > n:
            _err(rep, f"ipfix: message length {length} exceeds datagram ({n} bytes)")
        else:
            n = length
        cache = self.templates
        if cache.pending_drops:
            rep.dropped += cache.take_dropped(rep.exporter)
        templates = st.templates
        off = 16
        ok = True
        while n - off >= 4:
            sid, slen = _SET_HDR.unpack_from(data, off)
            if slen < 4:
                _err(rep, f"ipfix: set length {slen} < 4 at offset {off}")
                ok = False
                break
            end = off + slen
            if end > n:
                _err(rep, f"ipfix: set length {slen} exceeds datagram ({n} bytes) at offset {off}")
                ok = False
                break
            if sid >= 256:
                t = templates.get(sid)
                if t is None:
                    self._hold(b, dix, rep, st, sid, data[off + 4 : end], export, 0)
                    ok = False
                else:
                    templates.move_to_end(sid)
                    if t.fast and not b.want:  # the hot path, as in _v9
                        lay = t.layout
                        reclen = lay.min_length
                        cnt = (slen - 4) // reclen
                        if cnt:
                            g = b.groups.get(lay)
                            if g is None:
                                g = b.groups[lay] = _Group(lay)
                            g.chunks.append(data[off + 4 : off + 4 + cnt * reclen])
                            g.meta.append((cnt, dix, export, 0, st.default_rate, st))
                            g.n += cnt
                            rep.flow_records += cnt
                    else:
                        ok = self._data_slow(b, dix, rep, st, t, data, off + 4, end, export, 0) and ok
            elif sid == 2 or sid == 3:
                self._ipfix_templates(b, dix, rep, st, data, off + 4, end, sid == 3, export)
            off = end
        if n - off > 0 and ok and any(data[off:n]):
            _err(rep, f"ipfix: {n - off} trailing bytes after the last set at offset {off}")
        # IPFIX sequence numbers count data records: the next one is known only if all were counted
        if ok and st.next_seq == seq:  # in order: the common case, inline
            st.next_seq = (seq + rep.flow_records + rep.options_records) & 0xFFFFFFFF
            st.last_seq = seq
        else:
            rep.lost = _track(st, 10, seq, rep.flow_records + rep.options_records if ok else None)
        if st.default_sampling or st.samplers:
            rep.sampling_interval = st.effective_default()

    # -- templates -------------------------------------------------------------------------------
    def _v9_templates(
        self,
        b: _Batch,
        dix: int,
        rep: DatagramReport,
        st: DomainState,
        data: bytes,
        off: int,
        end: int,
        options: bool,
        secs: int,
        uptime: int,
    ) -> None:
        what = "options template" if options else "template"
        hdr = 6 if options else 4
        while end - off >= hdr:
            if options:
                tid, scope_len, opt_len = struct.unpack_from("!HHH", data, off)
                if tid == 0 and scope_len == 0 and opt_len == 0:
                    return  # padding
                if scope_len % 4 or opt_len % 4 or scope_len + opt_len == 0:
                    _err(rep, f"netflow9: {what} {tid}: scope length {scope_len} / option length {opt_len}")
                    return
                nscope, nfields = scope_len // 4, (scope_len + opt_len) // 4
            else:
                tid, nfields = _FIELD.unpack_from(data, off)
                nscope = 0
                if tid == 0 and nfields == 0:
                    return  # padding
            off += hdr
            if tid < 256:
                _err(rep, f"netflow9: {what} id {tid} < 256")
                return
            if nfields == 0:
                _err(rep, f"netflow9: {what} {tid} has field count 0")
                return
            if off + 4 * nfields > end:
                _err(
                    rep,
                    f"netflow9: {what} {tid} field count {nfields} overflows its flowset ({end - off} left)",
                )
                return
            fields = tuple(
                FieldSpec(ft, fl, 0, i < nscope)
                for i, (ft, fl) in enumerate(_FIELD.iter_unpack(data[off : off + 4 * nfields]))
            )
            off += 4 * nfields
            self._learn(b, dix, rep, st, tid, "options" if options else "flow", fields, nscope, secs, uptime)

    def _ipfix_templates(
        self,
        b: _Batch,
        dix: int,
        rep: DatagramReport,
        st: DomainState,
        data: bytes,
        off: int,
        end: int,
        options: bool,
        export: int,
    ) -> None:
        what = "options template" if options else "template"
        kind = "options" if options else "flow"
        while end - off >= 4:
            tid, nfields = _FIELD.unpack_from(data, off)
            if tid == 0 and nfields == 0:
                return  # padding
            if nfields == 0:  # RFC 7011 8.1 withdrawal (2 / 3 = all of the kind)
                off += 4
                if tid < 256 and tid != (3 if options else 2):
                    _err(rep, f"ipfix: {what} withdrawal of reserved id {tid}")
                    return
                self.templates.withdraw(st, tid, kind)
                rep.template_withdrawals += 1
                continue
            nscope = 0
            if options:
                if end - off < 6:
                    _err(rep, f"ipfix: options template {tid} header truncated at offset {off}")
                    return
                nscope = struct.unpack_from("!H", data, off + 4)[0]
                off += 6
                if nscope == 0 or nscope > nfields:
                    _err(rep, f"ipfix: options template {tid} has scope field count {nscope} of {nfields}")
                    return
            else:
                off += 4
            if tid < 256:
                _err(rep, f"ipfix: {what} id {tid} < 256")
                return
            fields: list[FieldSpec] = []
            for _ in range(nfields):
                if end - off < 4:
                    _err(rep, f"ipfix: {what} {tid} field count {nfields} overflows its set")
                    return
                ie, fl = _FIELD.unpack_from(data, off)
                off += 4
                pen = 0
                if ie & 0x8000:
                    if end - off < 4:
                        _err(rep, f"ipfix: {what} {tid} field count {nfields} overflows its set")
                        return
                    pen = _PEN.unpack_from(data, off)[0]
                    off += 4
                    ie &= 0x7FFF
                fields.append(FieldSpec(ie, fl, pen))
            self._learn(b, dix, rep, st, tid, kind, tuple(fields), nscope, export, 0)

    def _learn(
        self,
        b: _Batch,
        dix: int,
        rep: DatagramReport,
        st: DomainState,
        tid: int,
        kind: str,
        fields: tuple[FieldSpec, ...],
        nscope: int,
        secs: int,
        uptime: int,
    ) -> None:
        fmt = FORMAT[st.version]
        problem = validate_fields(st.version, fields, self.max_template_fields)
        if problem:
            _err(rep, f"{fmt}: {kind} template {tid} rejected: {problem}")
            rep.dropped += 1
            return
        t = self.templates.learn(st, tid, kind, fields, nscope)
        rep.templates += 1
        for h in self.templates.release(rep.exporter, st.version, st.domain, tid):
            same = h.token == b.token
            hdix = h.datagram_ix if same else dix
            hrep = b.reports[hdix]
            hrep.pending -= 1 if same else 0
            payload = h.payload
            self._data(b, hdix, hrep, st, t, payload, 0, len(payload), h.header[0], h.header[1])

    def _hold(
        self,
        b: _Batch,
        dix: int,
        rep: DatagramReport,
        st: DomainState,
        tid: int,
        payload: bytes,
        secs: int,
        uptime: int,
    ) -> None:
        if not payload:
            return
        item = HeldSet(st.version, st.domain, tid, payload, (secs, uptime), b.now, b.token, dix)
        kept, dropped = self.templates.hold(rep.exporter, item)
        rep.pending += kept
        rep.dropped += dropped

    # -- data sets -------------------------------------------------------------------------------
    def _data(
        self,
        b: _Batch,
        dix: int,
        rep: DatagramReport,
        st: DomainState,
        t: Template,
        data: bytes,
        off: int,
        end: int,
        secs: int,
        uptime: int,
    ) -> bool:
        """Queue (flow) or apply (options) the records of one data set; False when some were lost."""
        lay = t.layout
        if t.fast and not b.want:
            reclen = lay.min_length
            cnt = (end - off) // reclen
            if cnt:
                g = b.groups.get(lay)
                if g is None:
                    g = b.groups[lay] = _Group(lay)
                g.chunks.append(data[off : off + cnt * reclen])
                g.meta.append((cnt, dix, secs, uptime, st.default_rate, st))
                g.n += cnt
                rep.flow_records += cnt
            return True
        return self._data_slow(b, dix, rep, st, t, data, off, end, secs, uptime)

    def _data_slow(
        self,
        b: _Batch,
        dix: int,
        rep: DatagramReport,
        st: DomainState,
        t: Template,
        data: bytes,
        off: int,
        end: int,
        secs: int,
        uptime: int,
    ) -> bool:
        """Per-record path: variable-length fields, options records, or full records wanted."""
        lay = t.layout
        fmt = FORMAT[st.version]
        compact: list[bytes] = []
        recs: list[dict[str, Any]] = []
        ok = True
        while end - off >= lay.min_length and lay.min_length > 0:
            got = split_record(lay, data, off, end)
            if got is None:
                _err(
                    rep,
                    f"{fmt}: variable-length field overflows set of template {t.template_id} at offset {off}",
                )
                rep.dropped += 1
                ok = False
                break
            values, nxt = got
            if t.kind == "options":
                rep.options_records += 1
                learned = learn_from_options(self.templates, st, lay, values)
                if b.want:
                    rec = record_dict(lay, values, rep, t.template_id, "options")
                    rec["samplingInterval"] = learned or st.effective_default() or 1
                    recs.append(rec)
            else:
                rep.flow_records += 1
                if lay.variable:
                    compact.append(b"".join(values[i] for i in lay.fixed_ix))
                else:
                    compact.append(data[off:nxt])
                if b.want:
                    recs.append(record_dict(lay, values, rep, t.template_id, "flow"))
            off = nxt
        if b.records is not None:
            b.records.extend(recs)
        if compact:
            g = b.groups.get(lay)
            if g is None:
                g = b.groups[lay] = _Group(lay)
            if b.want:
                flow_recs = [r for r in recs if r["recordType"] == "flow"]
                for k, rec in enumerate(flow_recs):
                    b.patches.append((rec, g, g.n + k))
            g.chunks.append(b"".join(compact))
            g.meta.append((len(compact), dix, secs, uptime, st.default_rate, st))
            g.n += len(compact)
        return ok

    # -- after the loop: vectorised columns ------------------------------------------------------
    def _finish(self, b: _Batch) -> np.ndarray:
        total = sum(g.n for g in b.groups.values())
        if total == 0:
            return empty_flows()
        out = np.zeros(total, dtype=FLOW_DTYPE)
        pos = 0
        keep = np.ones(total, dtype=bool)
        for g in b.groups.values():
            g.offset = pos
            sl = out[pos : pos + g.n]
            try:
                lay = g.layout
                if lay.dtype.itemsize:
                    buf = g.chunks[0] if len(g.chunks) == 1 else b"".join(g.chunks)
                    arr = np.frombuffer(buf, dtype=lay.dtype, count=g.n)
                else:  # only variable-length fields: nothing for the columns but the row itself
                    arr = np.zeros(g.n, dtype=[("_", "u1")])
                fill_columns(sl, arr, lay, plan_for(lay), g.meta)
            except Exception as exc:  # a bug must cost this group only
                keep[pos : pos + g.n] = False
                for m in g.meta:
                    _err(b.reports[m[1]], f"internal decoder error in column fill: {exc!r}")
            pos += g.n
        if b.patches:
            rows = np.fromiter((g.offset + k for _, g, k in b.patches), dtype=np.int64, count=len(b.patches))
            for (rec, _, _), row in zip(b.patches, out[rows], strict=True):
                rec["samplingInterval"] = int(row["sampling"])
                if "flowStartMilliseconds" not in rec and row["start_ms"]:
                    rec["flowStartMilliseconds"] = int(row["start_ms"])
                if "flowEndMilliseconds" not in rec and row["end_ms"]:
                    rec["flowEndMilliseconds"] = int(row["end_ms"])
            if len(rows) == total:  # want_records: flows[i] is the i-th flow record, wire order
                out, keep = out[rows], keep[rows]
        if not keep.all():
            out = out[keep]
        return out


def _track(st: DomainState, version: int, seq: int, count: int | None) -> int:
    """Loss before this datagram from its sequence number; updates the expectation."""
    exp = st.next_seq
    lost = 0
    if exp is not None:
        d = (seq - exp) & 0xFFFFFFFF
        if d and d < _MAX_GAP[version]:
            lost = d
        elif d and d > (1 << 32) - _REORDER[version]:
            st.last_seq = seq  # late or duplicate: no loss, keep expecting what we expected
            return 0
    st.next_seq = None if count is None else (seq + count) & 0xFFFFFFFF
    st.last_seq = seq
    st.lost_total += lost
    return lost


# -- records (want_records=True) ------------------------------------------------------------------
_SKIP_IN_RECORDS = frozenset({"paddingOctets"})


def record_dict(
    lay: Layout, values: list[bytes], rep: DatagramReport, template_id: int | None, kind: str
) -> dict[str, Any]:
    """One data record with IPFIX names as keys; repeated elements become lists."""
    rec: dict[str, Any] = {}
    for name, typ, raw in zip(lay.names, lay.types, values, strict=False):
        if name in _SKIP_IN_RECORDS:
            continue
        value = render(typ, raw)
        if name in rec:
            prev = rec[name]
            rec[name] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            rec[name] = value
    rec["exporter"] = rep.exporter
    rec["observationDomainId"] = rep.domain
    rec["format"] = rep.format
    rec["templateId"] = template_id
    rec["recordType"] = kind
    return rec


def _uint(raw: bytes | None) -> int | None:
    return int.from_bytes(raw, "big") if raw is not None and 0 < len(raw) <= 8 else None


def learn_from_options(cache: TemplateCache, st: DomainState, lay: Layout, values: list[bytes]) -> int | None:
    """Feed the sampler table (and system init time) from one options record; returns the interval."""
    by_id: dict[int, bytes] = {}
    for f, raw in zip(lay.fields, values, strict=False):
        if f.pen == 0 and not (f.scope and lay.version == 9):
            by_id.setdefault(f.ie, raw)
    init = _uint(by_id.get(160))
    if init:
        st.system_init_ms = init
    interval = _uint(by_id.get(34)) or _uint(by_id.get(50))
    if not interval:
        pkt, space = _uint(by_id.get(305)), _uint(by_id.get(306))
        size, population = _uint(by_id.get(309)), _uint(by_id.get(310))
        if pkt and space is not None:
            interval = (pkt + space) // pkt
        elif size and population:
            interval = population // size
        elif by_id.get(311) is not None and len(by_id[311]) == 8:
            p = struct.unpack(">d", by_id[311])[0]
            interval = round(1 / p) if 0 < p <= 1 else None
    if not interval:
        return None
    sampler = _uint(by_id.get(48))
    if sampler is None:
        sampler = _uint(by_id.get(302))
    cache.learn_sampler(st, sampler, interval)
    return interval


# -- column plan and fill --------------------------------------------------------------------------
_BYTES = (1, 23, 231, 352, 85, 401)
_PACKETS = (2, 24, 298, 430, 86, 402)
# (ie, unit) for start / end times, in order of preference
_START = (
    (152, "ms"),
    (150, "s"),
    (154, "ntp"),
    (156, "ntp"),
    (22, "up"),
    (158, "dus"),
    (323, "ms"),
    (322, "s"),
)
_END = (
    (153, "ms"),
    (151, "s"),
    (155, "ntp"),
    (157, "ntp"),
    (21, "up"),
    (159, "dus"),
    (323, "ms"),
    (322, "s"),
)


class _Plan:
    """Which template positions feed which FLOW column; compiled once per layout."""

    __slots__ = (
        "bytes", "dport", "dst4", "dst6", "duration", "end", "flags", "icmp_code", "icmp_tc",
        "icmp_type", "interval", "ipver", "packets", "pkt_interval", "pkt_space", "proto",
        "sampler", "sport", "src4", "src6", "start",
    )  # fmt: skip

    def __init__(self, lay: Layout) -> None:
        fixed = set(lay.fixed_ix)

        def pos(*ies: int, length: int | None = None) -> int | None:
            for ie in ies:
                i = lay.field_ix.get((0, ie))
                if i is not None and i in fixed and (length is None or lay.fields[i].length == length):
                    return i
            return None

        self.src4, self.dst4 = pos(8, length=4), pos(12, length=4)
        self.src6, self.dst6 = pos(27, length=16), pos(28, length=16)
        self.ipver = pos(60)
        self.sport, self.dport = pos(7, 180, 182), pos(11, 181, 183)
        self.proto, self.flags = pos(4), pos(6)
        self.bytes, self.packets = pos(*_BYTES), pos(*_PACKETS)
        self.start = next(((i, u) for ie, u in _START if (i := pos(ie)) is not None), None)
        self.end = next(((i, u) for ie, u in _END if (i := pos(ie)) is not None), None)
        dur_ms, dur_us = pos(161), pos(162)
        self.duration = (dur_ms, 1) if dur_ms is not None else (dur_us, 1000) if dur_us is not None else None
        self.sampler = pos(48, 302)
        self.interval = pos(34, 50)
        self.pkt_interval, self.pkt_space = pos(305), pos(306)
        self.icmp_tc = pos(32, 139)
        self.icmp_type, self.icmp_code = pos(176, 178), pos(177, 179)


def plan_for(lay: Layout) -> _Plan:
    """The column plan of a layout (cached on it)."""
    if lay.plan is None:
        lay.plan = _Plan(lay)
    plan: _Plan = lay.plan
    return plan


def _col(arr: np.ndarray, lay: Layout, i: int) -> np.ndarray:
    """Field ``i`` as unsigned integers; odd sizes (reduced-size encoding) widened to uint64."""
    name = f"f{i}"
    n = lay.fields[i].length
    if n in (1, 2, 4, 8):
        col: np.ndarray = arr[name]
        return col
    raw = arr.view(np.uint8).reshape(len(arr), lay.dtype.itemsize)
    fields = lay.dtype.fields
    assert fields is not None
    off = fields[name][1]
    take = min(n, 8)
    wide = np.zeros((len(arr), 8), dtype=np.uint8)
    wide[:, 8 - take :] = raw[:, off + n - take : off + n]
    return wide.view(">u8").reshape(-1)


def _expand(values: list[int], counts: list[int]) -> Any:
    """Per-chunk values as per-row values: a scalar when all chunks agree (the common case)."""
    if values.count(values[0]) == len(values):
        return values[0]
    return np.repeat(np.asarray(values, dtype=np.int64), counts)


_WRAP = np.int64(1 << 32)
_HALF = np.int64(1 << 31)
_NTP_EPOCH_S = np.uint64(2208988800)


class _Rows:
    """Per-row views of the per-chunk header values of one group, each expanded at most once."""

    __slots__ = ("_cache", "counts", "meta")

    def __init__(self, meta: list[Any]) -> None:
        self.meta = meta
        self.counts = [m[0] for m in meta]
        self._cache: dict[str, Any] = {}

    def get(self, what: str) -> Any:
        v = self._cache.get(what)
        if v is None:
            m = self.meta
            if what == "dix":
                vals = [x[1] for x in m]
            elif what == "export_ms":
                vals = [x[2] * 1000 for x in m]
            elif what == "uptime":
                vals = [x[3] for x in m]
            elif what == "default":
                vals = [x[4] for x in m]
            else:  # "init": IPFIX systemInitTimeMilliseconds of the chunk's domain
                vals = [x[5].system_init_ms or 0 for x in m]
            v = self._cache[what] = _expand(vals, self.counts)
        return v


def _time(arr: np.ndarray, lay: Layout, spec: tuple[int, str], rows: _Rows) -> np.ndarray:
    """Unix milliseconds for one time field: int64 (<= 0 = unknown), or the raw uint64 column."""
    i, unit = spec
    col = _col(arr, lay, i)
    if unit == "ms":
        return col
    if unit == "s":
        return col.astype(np.int64) * 1000
    if unit == "ntp":
        c = col.astype(np.uint64)
        secs = (c >> np.uint64(32)).astype(np.int64) - np.int64(_NTP_EPOCH_S)
        # fraction of a second in 1/2^32 units, rounded to the nearest ms
        frac = ((c & np.uint64(0xFFFFFFFF)) * np.uint64(1000) + np.uint64(1 << 31)) >> np.uint64(32)
        out: np.ndarray = secs * 1000 + frac.astype(np.int64)
        return out
    v = col.astype(np.int64)
    if unit == "dus":
        return np.asarray(rows.get("export_ms") - v // 1000)
    if lay.version == 10:  # flow*SysUpTime is relative to systemInitTimeMilliseconds (options data)
        init = rows.get("init")
        return np.where(np.asarray(init) > 0, init + v, 0)
    # v5 / v9: relative to the header's sysUptime, as a signed 32-bit age (survives the wrap)
    age = rows.get("uptime") - v
    if age.min() < -_HALF or age.max() >= _HALF:
        age = ((age + _HALF) % _WRAP) - _HALF
    return np.asarray(rows.get("export_ms") - age)


def _sampler_rates(ids: np.ndarray, rows: _Rows) -> np.ndarray:
    """Interval per row from the sampler id in the record and its exporter's table (0 = unknown)."""
    states = [m[5] for m in rows.meta]
    counts = rows.counts
    out = np.zeros(len(ids), dtype=np.int64)
    if states.count(states[0]) == len(states):
        groups: list[tuple[Any, Any]] = [(states[0], slice(None))]
    else:
        owner = np.repeat(np.arange(len(states)), counts)
        seen: dict[int, Any] = {}
        for k, s in enumerate(states):
            seen.setdefault(id(s), (s, []))[1].append(k)
        groups = [(s, np.isin(owner, ks)) for s, ks in seen.values()]
    for st, sel in groups:
        table = st.samplers
        if not table:
            continue
        sub = ids[sel]
        if not len(sub):
            continue
        lo, hi = int(sub.min()), int(sub.max())
        if lo == hi:
            out[sel] = table.get(lo, 0)
        else:
            uniq, inv = np.unique(sub, return_inverse=True)
            lut = np.array([table.get(int(u), 0) for u in uniq], dtype=np.int64)
            out[sel] = lut[inv]
    return out


def fill_columns(o: np.ndarray, arr: np.ndarray, lay: Layout, plan: _Plan, meta: list[Any]) -> None:
    """Vectorised: decoded template records -> FLOW_DTYPE rows (``o`` is zeroed)."""
    rows = _Rows(meta)
    o["datagram_ix"] = rows.get("dix")
    has4 = plan.src4 is not None or plan.dst4 is not None
    has6 = plan.src6 is not None or plan.dst6 is not None
    if has4 and not has6:
        for i, col in ((plan.src4, "src_lo"), (plan.dst4, "dst_lo")):
            if i is not None:
                o[col] = arr[f"f{i}"]
                o[col] |= V4_MAPPED_LO_PREFIX
        o["ip_version"] = 4
    elif has6 and not has4:
        for i, side in ((plan.src6, "src"), (plan.dst6, "dst")):
            if i is not None:
                a = arr[f"f{i}"]
                o[f"{side}_hi"] = a[:, 0]
                o[f"{side}_lo"] = a[:, 1]
        o["ip_version"] = 6
    elif has4:
        _mixed_addresses(o, arr, plan)
    for i, col in (
        (plan.sport, "src_port"),
        (plan.dport, "dst_port"),
        (plan.proto, "proto"),
        (plan.flags, "tcp_flags"),
        (plan.bytes, "bytes"),
        (plan.packets, "packets"),
    ):
        if i is not None:
            o[col] = _col(arr, lay, i)
    _fill_times(o, arr, lay, plan, rows)
    _fill_icmp(o, arr, lay, plan)
    _fill_sampling(o, arr, lay, plan, rows)


def _mixed_addresses(o: np.ndarray, arr: np.ndarray, plan: _Plan) -> None:
    """Templates with both IPv4 and IPv6 address fields: pick per row."""
    n = len(arr)
    zero = np.zeros(n, dtype=np.uint64)
    v6 = {k: arr[f"f{i}"].astype(np.uint64) for k, i in (("s", plan.src6), ("d", plan.dst6)) if i is not None}
    v4 = {k: arr[f"f{i}"].astype(np.uint64) for k, i in (("s", plan.src4), ("d", plan.dst4)) if i is not None}
    if plan.ipver is not None:
        is6 = arr[f"f{plan.ipver}"] == 6
    else:
        is6 = np.zeros(n, dtype=bool)
        for a in v6.values():
            is6 |= (a[:, 0] | a[:, 1]) != 0
    for k, col in (("s", "src"), ("d", "dst")):
        six = v6.get(k)
        four = v4.get(k)
        lo4 = four | V4_MAPPED_LO_PREFIX if four is not None else zero
        o[f"{col}_hi"] = np.where(is6, six[:, 0], 0) if six is not None else 0
        o[f"{col}_lo"] = np.where(is6, six[:, 1], lo4) if six is not None else np.where(is6, 0, lo4)
    o["ip_version"] = np.where(is6, 6, 4)


def _fill_times(o: np.ndarray, arr: np.ndarray, lay: Layout, plan: _Plan, rows: _Rows) -> None:
    start = _time(arr, lay, plan.start, rows) if plan.start is not None else None
    end = _time(arr, lay, plan.end, rows) if plan.end is not None else None
    if plan.duration is not None and plan.duration[0] is not None and (start is None) != (end is None):
        dur = _col(arr, lay, plan.duration[0]).astype(np.int64) // plan.duration[1]
        if start is not None:
            s64 = start.astype(np.int64)
            end = np.where(s64 > 0, s64 + dur, 0)
        elif end is not None:
            e64 = end.astype(np.int64)
            start = np.where(e64 > 0, e64 - dur, 0)
    for col, v in (("start_ms", start), ("end_ms", end)):
        if v is not None:
            o[col] = v if v.dtype.kind == "u" else np.maximum(v, 0)


def _fill_icmp(o: np.ndarray, arr: np.ndarray, lay: Layout, plan: _Plan) -> None:
    if plan.icmp_tc is not None:
        tc = _col(arr, lay, plan.icmp_tc)
        o["icmp_type"] = tc >> 8
        o["icmp_code"] = tc & 0xFF
    elif plan.icmp_type is not None or plan.icmp_code is not None:
        if plan.icmp_type is not None:
            o["icmp_type"] = _col(arr, lay, plan.icmp_type)
        if plan.icmp_code is not None:
            o["icmp_code"] = _col(arr, lay, plan.icmp_code)
    elif plan.dport is not None and plan.proto is not None:
        # Cisco convention without an ICMP field: type * 256 + code in the destination port
        proto = np.ascontiguousarray(_col(arr, lay, plan.proto))
        is_icmp = (proto == 1) | (proto == 58)
        if is_icmp.any():
            dport = o["dst_port"]
            o["icmp_type"] = np.where(is_icmp, dport >> 8, 0)
            o["icmp_code"] = np.where(is_icmp, dport & 0xFF, 0)


def _fill_sampling(o: np.ndarray, arr: np.ndarray, lay: Layout, plan: _Plan, rows: _Rows) -> None:
    default = rows.get("default")
    if plan.sampler is None and plan.interval is None and plan.pkt_space is None:
        o["sampling"] = default
        return
    rate = np.zeros(len(arr), dtype=np.int64)
    if plan.sampler is not None:
        rate = _sampler_rates(_col(arr, lay, plan.sampler).astype(np.uint64), rows)
    if plan.interval is not None:
        rec = _col(arr, lay, plan.interval).astype(np.int64)
        rate = np.where(rate > 0, rate, rec)
    if plan.pkt_space is not None and plan.pkt_interval is not None:
        pkt = _col(arr, lay, plan.pkt_interval).astype(np.int64)
        space = _col(arr, lay, plan.pkt_space).astype(np.int64)
        rec = np.where(pkt > 0, (pkt + space) // np.maximum(pkt, 1), 0)
        rate = np.where(rate > 0, rate, rec)
    rate = np.where(rate > 0, rate, default)
    o["sampling"] = np.clip(rate, 1, 0xFFFFFFFF)


__all__ = ["V5_FIELDS", "VARLEN", "NetflowDecoder"]
