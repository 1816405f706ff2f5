"""What every decoder returns, so the collector, the CLI and the tests treat all formats alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from voxguard.ingest.decode.flows import empty_flows

FORMATS = ("netflow5", "netflow9", "ipfix", "sflow5")


class DecodeError(ValueError):
    """A datagram (or a part of it) that cannot be decoded; the message says why."""


@dataclass(slots=True)
class DatagramReport:
    """What one datagram told us: feeds the exporter registry and the counters."""

    exporter: str
    format: str  # one of FORMATS, or "unknown"
    domain: int = 0  # v9 source id / IPFIX observation domain / sFlow sub-agent id
    sequence: int | None = None
    lost: int = 0  # datagrams (v9, sFlow) or records (v5, IPFIX) missing before this one
    flow_records: int = 0
    options_records: int = 0
    templates: int = 0  # template and options-template records learned
    template_withdrawals: int = 0
    pending: int = 0  # sets held back waiting for their template
    dropped: int = 0  # sets or records given up on (no template in time, invalid)
    sampling_interval: int | None = None  # learned from the header or options data
    agent: str | None = None  # sFlow agent address
    error: str | None = None  # None when the datagram decoded cleanly
    counter_records: int = 0  # sFlow counter samples (plain and expanded)
    lost_samples: int = 0  # sFlow: samples missing per source id (sample sequence gaps)


@dataclass(slots=True)
class RawSample:
    """A sampled packet header from sFlow, kept for evidence (written out as pcap)."""

    datagram_ix: int
    flow_ix: int  # row in DecodeBatch.flows
    header_protocol: int  # sFlow header_protocol (1 = Ethernet, 11 = IPv4, 12 = IPv6)
    frame_length: int
    header: bytes


@dataclass(slots=True)
class DecodeBatch:
    """The decoded content of a batch of datagrams."""

    flows: np.ndarray = field(default_factory=empty_flows)  # FLOW_DTYPE
    reports: list[DatagramReport] = field(default_factory=list)
    records: list[dict[str, Any]] | None = None  # full records (IPFIX IE names) when asked
    samples: list[RawSample] = field(default_factory=list)


class Decoder(Protocol):
    """A stateful (template caches) but socket-free decoder for one family of formats."""

    def decode_batch(
        self,
        datagrams: list[tuple[bytes, str]],
        *,
        want_records: bool = False,
        now: float | None = None,
    ) -> DecodeBatch:
        """Decode ``(payload, exporter address)`` pairs; never raises on bad input."""
        ...
