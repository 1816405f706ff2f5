"""The exporter registry: every router the collector hears from, and what it sent.

Keyed by the datagram's source address. Bounded: past ``max_exporters`` distinct
addresses (a spoofed flood), new addresses are counted under one overflow entry.
Bad datagrams are logged at most once per ``log_interval`` per exporter, with the number
of suppressed messages, so a broken router cannot flood the logs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from voxguard.ingest.decode.base import DatagramReport
from voxguard.shared.config import VoxGuardConfig

log = logging.getLogger("voxguard.ingest.exporters")

OVERFLOW = "overflow"


@dataclass(slots=True)
class ExporterStats:
    """Counters and state for one exporter address."""

    address: str
    name: str | None  # the config's exporter name, when the address is configured
    config_ix: int  # index into the config's exporters, or the "unknown" index
    formats: set[str] = field(default_factory=set)
    domains: set[int] = field(default_factory=set)
    agents: set[str] = field(default_factory=set)
    first_seen: float = 0.0
    last_seen: float = 0.0
    datagrams: int = 0
    records: int = 0
    options_records: int = 0
    decode_errors: int = 0
    sequence_gaps: int = 0
    lost: int = 0
    templates_learned: int = 0
    template_withdrawals: int = 0
    dropped_sets: int = 0
    sampling_interval: int | None = None
    last_error: str | None = None
    _last_log: float = 0.0
    _suppressed: int = 0

    def as_dict(self, templates: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """JSON view for ``GET /v1/exporters``."""
        return {
            "address": self.address,
            "name": self.name,
            "formats": sorted(self.formats),
            "observation_domains": sorted(self.domains),
            "agents": sorted(self.agents),
            "templates": templates or [],
            "sampling_interval": self.sampling_interval,
            "first_seen": _iso(self.first_seen),
            "last_seen": _iso(self.last_seen),
            "datagrams": self.datagrams,
            "records": self.records,
            "options_records": self.options_records,
            "decode_errors": self.decode_errors,
            "sequence_gaps": self.sequence_gaps,
            "lost_estimate": self.lost,
            "templates_learned": self.templates_learned,
            "template_withdrawals": self.template_withdrawals,
            "dropped_sets": self.dropped_sets,
            "last_error": self.last_error,
        }


def _iso(ts: float) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts else None


class ExporterRegistry:
    """Knows every exporter by address; maps addresses to the config's monitoring points."""

    def __init__(self, config: VoxGuardConfig, max_exporters: int = 10_000, log_interval: float = 10.0):
        self.max_exporters = max_exporters
        self.log_interval = log_interval
        self._by_address: dict[str, ExporterStats] = {}
        self._config_ix = {str(e.address): i for i, e in enumerate(config.exporters)}
        self._names = [e.name for e in config.exporters]
        self._overrides = {str(e.address): e.sampling_interval for e in config.exporters if e.sampling_interval}
        self.unknown_ix = len(config.exporters)

    def get(self, address: str, now: float) -> ExporterStats:
        """The stats entry for an address, created on first sight (bounded)."""
        st = self._by_address.get(address)
        if st is not None:
            return st
        if len(self._by_address) >= self.max_exporters:
            address = OVERFLOW
            st = self._by_address.get(address)
            if st is not None:
                return st
        ix = self._config_ix.get(address, self.unknown_ix)
        st = ExporterStats(
            address=address,
            name=self._names[ix] if ix < self.unknown_ix else None,
            config_ix=ix,
            first_seen=now,
        )
        self._by_address[address] = st
        return st

    def is_configured(self, address: str) -> bool:
        """Whether the address belongs to a configured monitoring point."""
        return address in self._config_ix

    @property
    def has_overrides(self) -> bool:
        """Whether any configured exporter has a sampling interval override."""
        return bool(self._overrides)

    def sampling_override(self, address: str) -> int | None:
        """The config's sampling interval for an exporter whose export does not carry one."""
        return self._overrides.get(address)

    def record(self, report: DatagramReport, now: float) -> ExporterStats:
        """Fold one datagram's report into its exporter's counters."""
        st = self.get(report.exporter, now)
        st.last_seen = now
        st.datagrams += 1
        st.formats.add(report.format)
        st.domains.add(report.domain)
        if report.agent:
            st.agents.add(report.agent)
        st.records += report.flow_records
        st.options_records += report.options_records
        st.templates_learned += report.templates
        st.template_withdrawals += report.template_withdrawals
        st.dropped_sets += report.dropped
        if report.lost > 0:
            st.sequence_gaps += 1
            st.lost += report.lost
        if report.sampling_interval:
            st.sampling_interval = report.sampling_interval
        if report.error:
            st.decode_errors += 1
            st.last_error = report.error
            self._log_error(st, report.error, now)
        return st

    def _log_error(self, st: ExporterStats, error: str, now: float) -> None:
        if now - st._last_log < self.log_interval:
            st._suppressed += 1
            return
        extra = f" ({st._suppressed} similar messages suppressed)" if st._suppressed else ""
        log.warning("bad datagram from %s (%s): %s%s", st.address, st.name or "unconfigured", error, extra)
        st._last_log = now
        st._suppressed = 0

    def all(self) -> list[ExporterStats]:
        """Every exporter, most recently seen first."""
        return sorted(self._by_address.values(), key=lambda s: -s.last_seen)

    def __len__(self) -> int:
        return len(self._by_address)
