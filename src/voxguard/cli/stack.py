"""Assembling services into an app: shared by ``voxguard up`` and ``voxguard serve``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import typer
from fastapi import FastAPI

from voxguard.cli.configload import load_full_config
from voxguard.shared.auth import KeyStore
from voxguard.shared.config import ConfigError, VoxGuardConfig, example_config_path
from voxguard.shared.db import make_engine
from voxguard.shared.http import ServiceSpec, create_combined_app
from voxguard.shared.natsserver import NatsServer
from voxguard.shared.runtime import ServiceContext
from voxguard.shared.settings import Settings

SERVICES = ("ingest", "baseline", "mitigate", "notify")


def resolve_config_path(explicit: Path | None, settings: Settings) -> Path:
    """--config, else VOXGUARD_CONFIG, else ./voxguard.yaml, else the packaged example."""
    for candidate in (explicit, settings.config_path, Path("voxguard.yaml")):
        if candidate is not None and (candidate == explicit or candidate.exists()):
            return candidate
    return example_config_path()


def load_or_exit(path: Path) -> VoxGuardConfig:
    """Load the config or print every error and exit 2."""
    try:
        return load_full_config(path)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@contextlib.contextmanager
def nats_for(settings: Settings, var_dir: Path) -> Iterator[tuple[str, bool]]:
    """NATS_URL when set; otherwise a nats-server from the wheel with its store in the var dir."""
    if settings.nats_url:
        yield settings.nats_url, False
        return
    server = NatsServer(var_dir / "nats")
    url = server.start()
    try:
        yield url, True
    finally:
        server.stop()


def open_keystore(settings: Settings) -> KeyStore:
    """The API-key store on the effective database, migrated."""
    store = KeyStore(make_engine(settings.effective_database_url()))
    store.migrate()
    return store


@dataclass
class Stack:
    """The built app and the service objects a caller may want to inspect."""

    app: FastAPI
    ctx: ServiceContext


def build_stack(ctx: ServiceContext, services: tuple[str, ...], keys: KeyStore) -> Stack:
    """One app serving ``services`` (the bus lifespan runs first); exits 2 on a config error
    found by a service's own section (notifications, bgp, ...), with every error listed."""
    try:
        return _build_stack(ctx, services, keys)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


def _build_stack(ctx: ServiceContext, services: tuple[str, ...], keys: KeyStore) -> Stack:
    specs: list[ServiceSpec] = [
        ServiceSpec(name="bus", lifespans=[ctx.bus_lifespan], readiness={"nats": ctx.bus.ready})
    ]
    for name in services:
        if name == "ingest":
            from voxguard.ingest.service import build as build_ingest

            spec, _ = build_ingest(ctx)
            specs.append(spec)
        elif name == "baseline":
            from voxguard.baseline.service import build as build_baseline

            specs.append(build_baseline(ctx))
        elif name == "mitigate":
            from voxguard.mitigate.service import build as build_mitigate

            specs.append(build_mitigate(ctx))
        elif name == "notify":
            from voxguard.notify.service import build as build_notify

            specs.append(build_notify(ctx))
        else:
            raise typer.BadParameter(f"unknown service {name!r}; one of {', '.join(SERVICES)}")
    app = create_combined_app(specs, keys=keys)
    if "baseline" in services:  # the NOC dashboard at /, served wherever the baseline service is
        from voxguard.baseline.dashboard.routes import router as dashboard

        app.include_router(dashboard)
    return Stack(app, ctx)
