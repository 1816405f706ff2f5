"""Entry point of the ``voxguard/exabgp`` image: ExaBGP in its own container, driven by mitigate.

Why a separate container: the BGP speaker can then be placed, restarted and networked (host
networking towards the routers) apart from the service. The link stays the one the mitigate
service already speaks: ExaBGP's API process is the bridge (``voxguard.mitigate.bridge``),
which connects to mitigate's Unix socket ``<var>/mitigate/exabgp.sock`` on a volume both
containers mount, and mitigate runs with ``VOXGUARD_EXABGP=external`` so it starts no ExaBGP
of its own.

    exabgp_entrypoint.py [run] [--config FILE] [--socket PATH] [--workdir DIR]
        render ExaBGP's config from the ``bgp:`` section of voxguard.yaml (the file mitigate
        reads: peers and ASNs are written once), then become ExaBGP
    exabgp_entrypoint.py check [--socket PATH] [--mitigate URL]
        health: our bridge runs, and mitigate (ready only once its bridge is connected) is ready
    exabgp_entrypoint.py bridge --socket PATH
        the API process ExaBGP starts (not run by hand)

ExaBGP lives as long as the service it serves, as it does when mitigate starts it as a child:
when mitigate's connection ends, the bridge asks ExaBGP to shut down (the BGP session closes,
the router drops the rules) and the container restarts. A restarted mitigate thus always meets a
fresh ExaBGP with an empty RIB and re-announces the desired set; no rule withdrawn meanwhile can
linger in a speaker that outlived its owner.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import urllib.request
from pathlib import Path

DEFAULT_CONFIG = "/etc/voxguard/voxguard.yaml"
DEFAULT_SOCKET = "/var/lib/voxguard/mitigate/exabgp.sock"
DEFAULT_WORKDIR = "/var/lib/exabgp"
DEFAULT_MITIGATE = "http://mitigate:8080"


def run(config: Path, sock: Path, workdir: Path) -> int:
    """Write exabgp.conf for the configured peers and exec ExaBGP (signals go straight to it)."""
    from voxguard.cli.configload import load_full_config
    from voxguard.mitigate.exabgp import ExaBGPProcess, exabgp_binary, render_config
    from voxguard.mitigate.settings import parse_bgp
    from voxguard.shared.config import ConfigError

    try:
        bgp = parse_bgp(load_full_config(config).bgp)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not bgp.peers:
        print("bgp.peers is empty: mitigate runs dry-run and ExaBGP has nobody to announce to", file=sys.stderr)
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    conf = workdir / "exabgp.conf"
    bridge = f"{sys.executable} {Path(__file__).resolve()} bridge --socket {sock}"
    conf.write_text(render_config(bgp, bridge))
    env = ExaBGPProcess(bgp, workdir, sock)._env()  # the settings mitigate gives its own child
    env["exabgp.api.cli"] = "false"  # no named pipes in the image; the health check asks mitigate
    exabgp = exabgp_binary(bgp)
    print(f"ExaBGP {exabgp} for {len(bgp.peers)} peer(s), bridge to {sock}", file=sys.stderr, flush=True)
    os.chdir(workdir)
    os.execve(exabgp, [exabgp, str(conf)], env)
    return 1  # not reached


def bridge(sock: Path) -> int:
    """The mitigate bridge, serving one connection: when mitigate goes, ExaBGP is shut down."""
    from voxguard.mitigate.bridge import Bridge

    class OneServiceBridge(Bridge):
        def read_commands(self, conn: socket.socket) -> None:
            super().read_commands(conn)
            self.closing = True  # the service is gone: no reconnect to a later one
            self.out.write("shutdown\n")
            self.out.flush()

    relay = OneServiceBridge(str(sock))
    threading.Thread(target=relay.connect_loop, name="bridge-service", daemon=True).start()
    for line in sys.stdin:  # ExaBGP's acknowledgements and events; EOF = ExaBGP is gone
        relay.on_exabgp_line(line)
    relay.closing = True
    return 0


def check(sock: Path, mitigate: str) -> int:
    """0 when this container's bridge runs and mitigate reports ready (its bridge connected)."""
    mine = f"bridge --socket {sock}".encode()
    running = False
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            running = running or mine in proc.joinpath("cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
    if not running:
        print("no bridge process: ExaBGP is not running its API process", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(f"{mitigate.rstrip('/')}/readyz", timeout=3) as r:
            return 0 if r.status == 200 else 1
    except OSError as exc:
        print(f"mitigate not ready: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("mode", nargs="?", default="run", choices=("run", "bridge", "check"))
    parser.add_argument("--config", type=Path, default=Path(os.environ.get("VOXGUARD_CONFIG") or DEFAULT_CONFIG))
    parser.add_argument("--socket", type=Path, default=Path(os.environ.get("VOXGUARD_EXABGP_SOCKET") or DEFAULT_SOCKET))
    parser.add_argument("--workdir", type=Path, default=Path(DEFAULT_WORKDIR))
    parser.add_argument("--mitigate", default=os.environ.get("VOXGUARD_MITIGATE_URL") or DEFAULT_MITIGATE)
    args = parser.parse_args(argv)
    if args.mode == "bridge":
        return bridge(args.socket)
    if args.mode == "check":
        return check(args.socket, args.mitigate)
    return run(args.config, args.socket, args.workdir)


if __name__ == "__main__":
    raise SystemExit(main())
