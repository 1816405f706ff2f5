"""The program ExaBGP launches through its process API (``process api { run ...; }``).

Why a bridge: ExaBGP only talks to programs it starts itself (their stdout is its command input,
their stdin carries its acknowledgements and neighbor events). The mitigate service is not such a
program, so this small relay connects the two over a local Unix socket that the service listens
on (``--socket``):

    service  --"CMD <seq> <exabgp command>"-->  bridge  --<command>-->   ExaBGP (stdin)
    service  <--"ACK <seq> done|error"--------  bridge  <--done|error--  ExaBGP (stdout)
    service  <--"EVENT <text>"-----------------  bridge  <--other lines-- (neighbor up/down...)
    service  <--"HELLO <pid>"------------------  bridge   on every (re)connect

ExaBGP executes commands in order and acknowledges each once, so acks are paired with the
sequence numbers in FIFO order. When the service goes away the bridge keeps reconnecting; acks
for commands sent over an earlier connection are dropped (the service re-announces everything
on a new connection anyway). The bridge exits when ExaBGP closes its stdin.

Standard library only: it runs in ExaBGP's environment and must start fast.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import socket
import sys
import threading
import time
from typing import TextIO

ACK_WORDS = ("done", "error")


class Bridge:
    """Relay between one Unix socket (the service) and ExaBGP's pipes."""

    def __init__(self, path: str, out: TextIO | None = None) -> None:
        self.path = path
        self.out = out if out is not None else sys.stdout
        self.lock = threading.Lock()
        self.pending: collections.deque[tuple[int, str]] = collections.deque()  # (generation, seq)
        self.generation = 0
        self.sock: socket.socket | None = None
        self.closing = False

    def send_to_service(self, line: str) -> None:
        """Best effort: a lost line is recovered by the service's reconcile on reconnect."""
        sock = self.sock
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.sendall((line + "\n").encode())

    def connect_loop(self) -> None:
        """Keep one connection to the service; read its commands and forward them to ExaBGP."""
        delay = 0.05
        while not self.closing:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(self.path)
            except OSError:
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            delay = 0.05
            with self.lock:
                self.generation += 1
                self.sock = sock
            self.send_to_service(f"HELLO {os.getpid()}")
            self.read_commands(sock)
            with self.lock:
                if self.sock is sock:
                    self.sock = None
            sock.close()

    def read_commands(self, sock: socket.socket) -> None:
        """Forward ``CMD <seq> <text>`` lines; register the seq before writing so acks pair up."""
        buf = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            out: list[str] = []
            with self.lock:  # register before writing, so an ack can never arrive first
                for raw in lines:
                    parts = raw.decode(errors="replace").split(" ", 2)
                    if len(parts) == 3 and parts[0] == "CMD":
                        self.pending.append((self.generation, parts[1]))
                        out.append(parts[2])
            if out:
                # Outside the lock: this write blocks while ExaBGP's pipe is full, and ExaBGP only
                # drains it once its acks (read by the other thread, which takes the lock) flow.
                self.out.write("\n".join(out) + "\n")
                self.out.flush()

    def on_exabgp_line(self, line: str) -> None:
        """An ack pairs with the oldest pending command; anything else is an event."""
        word = line.strip()
        if word in ACK_WORDS:
            with self.lock:
                if not self.pending:
                    return
                gen, seq = self.pending.popleft()
                current = gen == self.generation
            if current:
                self.send_to_service(f"ACK {seq} {word}")
        elif word == "shutdown":
            self.closing = True
        elif word:
            self.send_to_service(f"EVENT {word}")


def main(argv: list[str] | None = None) -> int:
    """Entry point ExaBGP runs: ``python -m voxguard.mitigate.bridge --socket PATH``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--socket", required=True, help="the mitigate service's Unix socket")
    args = parser.parse_args(argv)
    bridge = Bridge(args.socket)
    threading.Thread(target=bridge.connect_loop, name="bridge-service", daemon=True).start()
    for line in sys.stdin:  # ExaBGP's acknowledgements and events; EOF = ExaBGP is gone
        bridge.on_exabgp_line(line)
        if bridge.closing:
            break
    bridge.closing = True
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
