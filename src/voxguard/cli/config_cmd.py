"""``voxguard config check FILE``: validate a config and explain every error at once."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from voxguard.cli.configload import load_full_config
from voxguard.shared.config import ConfigError

app = typer.Typer(help="Work with voxguard.yaml.", no_args_is_help=True)


@app.command("check")
def check(file: Path = typer.Argument(..., help="The voxguard.yaml to validate.")) -> None:
    """Validate FILE; print a summary of the targets, or every error with its key path."""
    console = Console(stderr=False, highlight=False, soft_wrap=True)
    try:
        cfg = load_full_config(file)
    except ConfigError as exc:
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        err.print(f"[bold red]{exc.source}: {len(exc.errors)} error(s)[/]")
        for path, reason in exc.errors:
            err.print(f"  [bold]{escape(path)}[/]: {escape(reason)}")
        raise typer.Exit(code=1) from None
    targets = list(cfg.iter_targets())
    console.print(
        f"[green]{file}: valid[/] - site {cfg.site}, {len(cfg.tiers)} tiers, "
        f"{len(cfg.exporters)} exporters, {len(targets)} configured targets"
    )
    for tier, tc in cfg.tiers.items():
        mons = ", ".join(m.label() for m in tc.monitors)
        comps = ", ".join(c.name for c in tc.components)
        mode = tc.mitigation.mode
        exporters = ", ".join(tc.exporters) or "any"
        console.print(escape(f"  {tier.value:<10} {comps}  [{mons}]  exporters: {exporters}  mitigation: {mode}"))
