"""``voxguard keys create NAME --scope SCOPE``: API keys, printed once."""

from __future__ import annotations

import typer

from voxguard.cli.stack import open_keystore
from voxguard.shared.auth import Scope
from voxguard.shared.settings import load_settings

app = typer.Typer(help="Manage API keys.", no_args_is_help=True)


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Who or what the key is for."),
    scope: Scope = typer.Option(Scope.READ, "--scope", help="read, operate or admin."),
) -> None:
    """Create a key and print it once: only its hash is stored."""
    store = open_keystore(load_settings())
    typer.echo(store.create_key(name, scope))


@app.command("list")
def list_keys() -> None:
    """List keys (names, scopes, prefixes; never the secrets)."""
    store = open_keystore(load_settings())
    for k in store.list_keys():
        typer.echo(f"{k.prefix}\t{k.scope}\t{'revoked' if k.revoked else 'active'}\t{k.name}")


@app.command("revoke")
def revoke(key: str = typer.Argument(..., help="Key id or prefix.")) -> None:
    """Revoke a key."""
    store = open_keystore(load_settings())
    if not store.revoke(key):
        typer.echo(f"no key {key!r}", err=True)
        raise typer.Exit(1)
    typer.echo("revoked")
