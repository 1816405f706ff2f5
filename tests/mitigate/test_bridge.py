"""The bridge program as ExaBGP runs it: commands out on stdout, acks paired in order, reconnects."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def sock_path() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="vgbr-"))
    try:
        yield d / "b.sock"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def readline(conn: socket.socket) -> str:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            break
        buf += chunk
    return buf.decode().rstrip("\n")


def test_bridge_pairs_acks_forwards_events_and_survives_reconnects(sock_path: Path) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(2)
    server.settimeout(10)
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxguard.mitigate.bridge", "--socket", str(sock_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        conn, _ = server.accept()
        conn.settimeout(10)
        assert readline(conn) == f"HELLO {proc.pid}"
        conn.sendall(b"CMD 1 announce flow route { a }\nCMD 2 announce flow route { b }\n")
        assert proc.stdout.readline().strip() == "announce flow route { a }"
        assert proc.stdout.readline().strip() == "announce flow route { b }"
        proc.stdin.write("done\nerror\nneighbor 127.0.0.2 up\n")
        proc.stdin.flush()
        assert [readline(conn) for _ in range(3)] == ["ACK 1 done", "ACK 2 error", "EVENT neighbor 127.0.0.2 up"]

        conn.sendall(b"CMD 3 announce flow route { c }\n")
        assert proc.stdout.readline().strip() == "announce flow route { c }"
        conn.close()  # the service restarts before ExaBGP acknowledged command 3
        conn, _ = server.accept()
        conn.settimeout(10)
        assert readline(conn) == f"HELLO {proc.pid}"
        conn.sendall(b"CMD 4 announce flow route { d }\n")
        assert proc.stdout.readline().strip() == "announce flow route { d }"
        proc.stdin.write("done\ndone\n")  # ack of 3 (old connection: dropped), then of 4
        proc.stdin.flush()
        assert readline(conn) == "ACK 4 done"

        proc.stdin.close()  # ExaBGP went away
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.close()


def test_bridge_does_not_deadlock_when_both_pipes_fill(sock_path: Path) -> None:
    """ExaBGP blocks writing acks while the bridge blocks writing commands: both must keep flowing."""
    import threading

    n = 20_000
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(1)
    server.settimeout(10)
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxguard.mitigate.bridge", "--socket", str(sock_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    def exabgp() -> None:  # acknowledges each command synchronously, like ExaBGP does
        for _ in range(n):
            stdout.readline()
            stdin.write(b"done\n")
            stdin.flush()

    try:
        conn, _ = server.accept()
        conn.settimeout(30)
        assert readline(conn).startswith("HELLO")
        t = threading.Thread(target=exabgp, daemon=True)
        t.start()
        acks: list[str] = []

        def read_acks() -> None:
            f = conn.makefile("rb")
            while len(acks) < n:
                line = f.readline()
                if not line:
                    return
                acks.append(line.decode())

        r = threading.Thread(target=read_acks, daemon=True)
        r.start()
        pad = "x" * 200
        conn.sendall("".join(f"CMD {i} announce flow route {{ {pad} }}\n" for i in range(n)).encode())
        r.join(60)
        assert len(acks) == n, f"only {len(acks)} of {n} acks: the pipes deadlocked"
        assert acks[-1] == f"ACK {n - 1} done\n"
    finally:
        proc.kill()
        proc.wait()
        server.close()
