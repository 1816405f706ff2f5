"""``voxguard simulate``: VoIP platform traffic (and attacks) as NetFlow v9 / IPFIX / sFlow datagrams."""

from __future__ import annotations

from pathlib import Path

import typer

from voxguard.ingest.simulate.sender import run_simulate


def simulate(
    config: Path | None = typer.Option(None, "--config", help="voxguard.yaml (default: the example config)."),
    to: str = typer.Option("127.0.0.1", "--to", help="Collector host (ports from the config's ingest section)."),
    duration: float = typer.Option(60.0, "--duration", min=0.1, max=86_400, help="Seconds to send, then stop."),
    attack: list[str] = typer.Option(
        [], "--attack", help="Attack spec, repeatable: VECTOR[@START][+DURATION][*INTENSITY], e.g. sip_flood@30s+60s*8."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same traffic)."),
    rate: float = typer.Option(1.0, "--rate", min=0.001, max=1000, help="Traffic volume multiplier."),
    sampling: int = typer.Option(64, "--sampling", min=1, help="sFlow 1-in-N packet sampling."),
    netflow_sampling: int = typer.Option(1, "--netflow-sampling", min=1, help="NetFlow/IPFIX 1-in-N sampling."),
    formats: str | None = typer.Option(
        None, "--formats", help="Export format per tier or exporter: 'sflow5' or 'sbc=sflow5,media=ipfix'."
    ),
    time_warp: bool = typer.Option(False, "--time-warp", help="Send as fast as possible (timestamps still advance)."),
    list_scenarios: bool = typer.Option(False, "--list", help="List the attack scenarios and exit."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Emit realistic VoIP traffic for the config's tiers, with attacks from the catalogue, bounded in time."""
    code = run_simulate(
        config,
        to=to,
        duration=duration,
        attacks=attack or None,
        seed=seed,
        rate=rate,
        sampling=sampling,
        netflow_sampling=netflow_sampling,
        formats=formats,
        time_warp=time_warp,
        list_scenarios=list_scenarios,
        json_output=json_output,
    )
    raise typer.Exit(code)
