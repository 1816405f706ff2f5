"""``voxguard replay FILE --to HOST:PORT``: send a capture's flow datagrams to a collector."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import typer

from voxguard.cli.decode_cmd import looks_like_flow_export
from voxguard.ingest.pcapio import CaptureFormatError, iter_udp_payloads


def parse_hostport(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise typer.BadParameter(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def replay(
    file: Path = typer.Argument(..., help="A pcap or pcapng capture of flow-export datagrams."),
    to: str = typer.Option(..., "--to", help="Collector address, HOST:PORT."),
    rate: float = typer.Option(0.0, "--rate", help="Datagrams per second (0 = as fast as possible)."),
    loops: int = typer.Option(1, "--loops", min=1, max=1_000_000, help="Send the capture this many times."),
    bind: str | None = typer.Option(None, "--bind", help="Source address to send from (e.g. 127.0.1.1)."),
    port: int | None = typer.Option(None, "--port", help="Only datagrams that went to this UDP port."),
) -> None:
    """Send FILE's flow-export datagrams to a collector, paced at --rate."""
    host, dport = parse_hostport(to)
    try:
        payloads = [
            d.payload
            for d in iter_udp_payloads(file)
            if (port is None or d.dport == port) and looks_like_flow_export(d.payload)
        ]
    except (CaptureFormatError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if not payloads:
        typer.echo("no flow-export datagrams in the capture", err=True)
        raise typer.Exit(1)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sent = send_datagrams(payloads * loops, (host, dport), family, rate, bind)
    typer.echo(f"sent {sent} datagrams to {host}:{dport}")


def send_datagrams(
    payloads: list[bytes], dest: tuple[str, int], family: int, rate: float, bind: str | None = None
) -> int:
    """Send, pacing evenly at ``rate`` datagrams/s when given; returns the count sent."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if bind:
            sock.bind((bind, 0))
        start = time.perf_counter()
        for i, p in enumerate(payloads):
            if rate > 0:
                due = start + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            sock.sendto(p, dest)
        return len(payloads)
    finally:
        sock.close()
