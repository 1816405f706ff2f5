"""``voxguard``: the command line. Each command lives in its own module; this wires them."""

from __future__ import annotations

import typer

from voxguard.cli import config_cmd, decode_cmd, replay_cmd

app = typer.Typer(
    name="voxguard",
    help="DDoS detection and mitigation for VoIP platforms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(config_cmd.app, name="config")
app.command("decode")(decode_cmd.decode)
app.command("replay")(replay_cmd.replay)


def _register_optional() -> None:
    """Commands whose modules pull in the service stack are imported lazily where possible."""
    from voxguard.cli import keys_cmd, serve_cmd, simulate_cmd, up_cmd

    app.add_typer(keys_cmd.app, name="keys")
    app.command("up")(up_cmd.up)
    app.command("serve")(serve_cmd.serve)
    app.command("simulate")(simulate_cmd.simulate)


try:
    _register_optional()
except ImportError as exc:  # pragma: no cover - only while a module is being written
    import sys

    print(f"warning: some commands unavailable: {exc}", file=sys.stderr)

if __name__ == "__main__":
    app()
