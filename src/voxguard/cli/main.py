"""``voxguard``: the command line. Each command lives in its own module; this wires them."""

from __future__ import annotations

import typer

from voxguard.cli import (
    backfill_cmd,
    config_cmd,
    decode_cmd,
    demo_cmd,
    keys_cmd,
    replay_cmd,
    serve_cmd,
    simulate_cmd,
    up_cmd,
)

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
app.add_typer(keys_cmd.app, name="keys")
app.command("up")(up_cmd.up)
app.command("serve")(serve_cmd.serve)
app.command("simulate")(simulate_cmd.simulate)
app.command("backfill")(backfill_cmd.backfill)
app.command("demo")(demo_cmd.demo)

if __name__ == "__main__":
    app()
