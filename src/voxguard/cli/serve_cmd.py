"""``voxguard serve SERVICE``: one service per process (the container entry point)."""

from __future__ import annotations

from pathlib import Path

import typer
import uvicorn

from voxguard.cli.stack import (
    SERVICES,
    build_stack,
    load_or_exit,
    nats_for,
    open_keystore,
    resolve_config_path,
)
from voxguard.shared.runtime import ServiceContext
from voxguard.shared.settings import load_settings
from voxguard.shared.telemetry import configure_logging, setup_tracing


def serve(
    service: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}."),
    config: Path | None = typer.Option(None, "--config", help="voxguard.yaml (default: ./voxguard.yaml)."),
) -> None:
    """Run one service; NATS_URL and DATABASE_URL normally point at shared infrastructure."""
    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
    settings = load_settings()
    configure_logging(service, settings.log_level, settings.log_format)
    setup_tracing(service, settings.otlp_endpoint)
    cfg = load_or_exit(resolve_config_path(config, settings))
    var_dir = settings.ensure_var_dir()
    keys = open_keystore(settings)
    with nats_for(settings, var_dir) as (nats_url, _):
        stack = build_stack(ServiceContext(settings, cfg, nats_url), (service,), keys)
        uvicorn.run(stack.app, host=settings.http_host, port=settings.http_port, log_level="info")
