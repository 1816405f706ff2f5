"""``voxguard decode FILE``: print every flow record of a capture as one JSON object per line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from voxguard.ingest.decode.netflow import NetflowDecoder
from voxguard.ingest.decode.sflow import SflowDecoder
from voxguard.ingest.pcapio import CaptureFormatError, iter_udp_payloads
from voxguard.ingest.pipeline import is_sflow


def looks_like_flow_export(payload: bytes) -> bool:
    """NetFlow v5/v9/IPFIX (16-bit version 5, 9, 10) or sFlow v5 (32-bit version 5)."""
    if len(payload) < 4:
        return False
    return is_sflow(payload) or payload[:2] in (b"\x00\x05", b"\x00\x09", b"\x00\x0a")


def decode_file(path: Path, port: int | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """All records of a capture, in wire order, and the decode errors met on the way."""
    netflow, sflow = NetflowDecoder(), SflowDecoder()
    records: list[dict[str, Any]] = []
    errors: list[str] = []
    for dg in iter_udp_payloads(path):
        if port is not None and dg.dport != port:
            continue
        if port is None and not looks_like_flow_export(dg.payload):
            continue
        decoder = sflow if is_sflow(dg.payload) else netflow
        batch = decoder.decode_batch([(dg.payload, dg.src)], want_records=True, now=dg.timestamp)
        records.extend(batch.records or [])
        errors.extend(f"{dg.src}: {r.error}" for r in batch.reports if r.error)
    return records, errors


def decode(
    file: Path = typer.Argument(..., help="A pcap or pcapng capture of flow-export datagrams."),
    port: int | None = typer.Option(None, "--port", help="Only datagrams to this UDP port."),
    fmt: str = typer.Option("jsonl", "--format", help="Output format (jsonl)."),
) -> None:
    """Decode NetFlow v5/v9, IPFIX and sFlow v5 from FILE: one JSON object per flow record."""
    if fmt != "jsonl":
        typer.echo(f"unsupported --format {fmt!r}: only jsonl", err=True)
        raise typer.Exit(2)
    try:
        records, errors = decode_file(file, port)
    except (CaptureFormatError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    out = sys.stdout
    for rec in records:
        out.write(json.dumps(rec, default=str, separators=(",", ":")) + "\n")
    for err in errors:
        typer.echo(f"warning: {err}", err=True)
