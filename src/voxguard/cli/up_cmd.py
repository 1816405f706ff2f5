"""``voxguard up``: all four services in one process on embedded defaults."""

from __future__ import annotations

import os
from pathlib import Path

import typer
import uvicorn
from rich.console import Console

from voxguard.cli.stack import (
    SERVICES,
    build_stack,
    load_or_exit,
    nats_for,
    open_keystore,
    resolve_config_path,
)
from voxguard.shared.runtime import ServiceContext
from voxguard.shared.settings import load_settings, parse_host_port
from voxguard.shared.telemetry import configure_logging, setup_tracing


def up(
    config: Path | None = typer.Option(None, "--config", help="voxguard.yaml (default: ./voxguard.yaml)."),
    http: str | None = typer.Option(None, "--http", help="HTTP listen address HOST:PORT (default 127.0.0.1:8080)."),
) -> None:
    """Run ingest, baseline, mitigate and notify in one process (SQLite + bundled NATS by default)."""
    if http:
        try:
            parse_host_port(http)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--http") from None
        os.environ["VOXGUARD_HTTP"] = http
    settings = load_settings()
    configure_logging("voxguard", settings.log_level, settings.log_format)
    setup_tracing("voxguard", settings.otlp_endpoint)
    cfg_path = resolve_config_path(config, settings)
    cfg = load_or_exit(cfg_path)
    var_dir = settings.ensure_var_dir()
    console = Console(highlight=False, soft_wrap=True)
    keys = open_keystore(settings)
    admin_key = keys.ensure_admin_key(var_dir)
    with nats_for(settings, var_dir) as (nats_url, embedded):
        ctx = ServiceContext(settings, cfg, nats_url)
        stack = build_stack(ctx, SERVICES, keys)
        host, port = settings.http_host, settings.http_port
        ing = cfg.ingest
        console.print(f"[bold]VoxGuard[/] site [bold]{cfg.site}[/] - config {cfg_path}")
        console.print(f"  HTTP API      http://{host}:{port}  (OpenAPI: /docs, health: /healthz /readyz /metrics)")
        console.print(
            f"  flow ingest   udp {ing.host}:{ing.netflow_port} (NetFlow v5/v9), "
            f":{ing.ipfix_port} (IPFIX), :{ing.sflow_port} (sFlow v5)"
        )
        console.print(f"  NATS          {nats_url}" + ("  (embedded, store in var/nats)" if embedded else ""))
        db = settings.effective_database_url()
        console.print(f"  database      {db.split('@')[-1] if '@' in db else db}")
        if admin_key:
            console.print(
                f"  [yellow]admin API key created: {admin_key} (mode 0600) - use it as 'Authorization: Bearer <key>'[/]"
            )
        else:
            console.print(f"  API keys      {keys.count()} key(s); create more with 'voxguard keys create'")
        console.print("  Ctrl-C stops everything cleanly; starting again resumes state.")
        uvicorn.run(stack.app, host=host, port=port, log_level="warning", lifespan="on")
