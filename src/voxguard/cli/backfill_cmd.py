"""``voxguard backfill``: load history so baselines are learned at once (design.md section 4).

``--days N`` simulates N days of the config's normal traffic; ``--from FILE...`` reads an
operator's flow archives (pcap/pcapng of flow exports, nfcapd files). Either way the minute
buckets go to the database and the engine state, fitted on them, is saved for the baseline
service to load at its next start. Run it while the baseline service is stopped.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import typer

from voxguard.cli.stack import load_or_exit, resolve_config_path
from voxguard.shared.settings import load_settings


def backfill(
    days: float | None = typer.Option(None, "--days", min=0.001, max=90, help="Simulate N days of normal traffic."),
    from_: list[Path] | None = typer.Option(
        None, "--from", help="Flow archives: pcap/pcapng of flow exports, nfcapd files (repeat, or list after it)."
    ),
    files: list[Path] | None = typer.Argument(None, help="More files for --from.", show_default=False),
    config: Path | None = typer.Option(
        None, "--config", help="Config file (default: VOXGUARD_CONFIG, ./voxguard.yaml)."
    ),
    seed: int = typer.Option(0, "--seed", help="Simulator seed (--days)."),
    end: dt.datetime | None = typer.Option(None, "--end", help="End of the simulated history, UTC (default: now)."),
    workers: int | None = typer.Option(None, "--workers", min=1, max=64, help="Simulator processes (default 2)."),
    any_exporter: bool = typer.Option(
        False, "--any-exporter", help="Classify flows whatever exporter sent them (archives from other addresses)."
    ),
) -> None:
    """Load history into the baseline store and fit the baselines on it."""
    from voxguard.baseline.backfill import backfill_simulated
    from voxguard.baseline.engine import DetectionEngine
    from voxguard.baseline.flowfiles import backfill_files
    from voxguard.baseline.store import BaselineStore
    from voxguard.shared.db import make_engine

    paths = [*(from_ or []), *(files or [])]
    if (days is None) == (not paths):
        typer.echo("give either --days N or --from FILE...", err=True)
        raise typer.Exit(2)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        typer.echo(f"no such file: {', '.join(missing)}", err=True)
        raise typer.Exit(2)
    settings = load_settings()
    cfg = load_or_exit(resolve_config_path(config, settings))
    db = make_engine(settings.effective_database_url(), application_name="voxguard-backfill")
    try:
        store = BaselineStore(db)
        store.migrate()
        engine = DetectionEngine(cfg, tick_seconds=cfg.ingest.tick_seconds)
        if days is not None:
            end_utc = end.replace(tzinfo=dt.UTC) if end and end.tzinfo is None else end

            def progress(done: int, total: int) -> None:
                if sys.stderr.isatty() or done == total or done % 24 == 0:
                    typer.echo(f"  {done}/{total} hours", err=True)

            report = backfill_simulated(cfg, store, engine, days, end=end_utc, seed=seed, workers=workers,
                                        progress=progress)  # fmt: skip
        else:
            report = backfill_files(cfg, store, engine, paths, any_exporter=any_exporter)
            for line in report.skipped_files:
                typer.echo(f"warning: skipped {line}", err=True)
            typer.echo(f"{report.flows} flow records, {report.classified} matched a target")
    finally:
        db.dispose()
    span = f"{report.start:%Y-%m-%d %H:%M} .. {report.end:%Y-%m-%d %H:%M} UTC" if report.start and report.end else "-"
    typer.echo(
        f"backfilled {report.targets} targets, {report.rows} minute buckets ({span}) on {store.backend} "
        f"in {report.seconds:.1f} s; engine fitted on {report.fitted} targets, state saved"
    )
    if report.rows == 0:
        raise typer.Exit(1)
