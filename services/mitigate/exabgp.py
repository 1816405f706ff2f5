"""ExaBGP beside the service: its generated config, the supervised child process, and the socket
the bridge (``voxguard.mitigate.bridge``) connects to.

Why a Unix socket and not NATS: the bridge is a child of ExaBGP that must keep working when
NATS is down (withdrawing a rule must not depend on the bus), and a socket in the service's var
dir (mode 0600) is reachable by nobody else. A new bridge connection means a new ExaBGP (or a
restarted service), i.e. an empty RIB: the reconciler re-announces everything desired.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from voxguard.mitigate.settings import BgpSettings

log = logging.getLogger("voxguard.mitigate.exabgp")

MAX_UNIX_PATH = 100  # sun_path is 108 bytes on Linux; stay clear of it
EXTERNAL_ENV = "VOXGUARD_EXABGP"


def external_speaker() -> bool:
    """``VOXGUARD_EXABGP=external``: ExaBGP runs in its own container (the compose ``exabgp``
    service, a Kubernetes sidecar) and its bridge connects to our socket on a shared volume, so
    the service listens on the socket but starts no ExaBGP of its own."""
    return os.environ.get(EXTERNAL_ENV, "").strip().lower() == "external"


def exabgp_binary(bgp: BgpSettings) -> str:
    """The configured ExaBGP, else the one installed next to this Python (the ``bgp`` extra)."""
    if bgp.exabgp:
        return bgp.exabgp
    beside = Path(sys.executable).with_name("exabgp")
    if beside.exists():
        return str(beside)
    found = shutil.which("exabgp")
    if not found:
        raise FileNotFoundError("exabgp is not installed (pip install 'voxguard[bgp]') and bgp.exabgp is not set")
    return found


def render_config(bgp: BgpSettings, bridge_cmd: str) -> str:
    """ExaBGP's config: one ``api`` process (the bridge) and one neighbor per configured peer."""
    lines = ["process voxguard {", f"    run {bridge_cmd};", "    encoder text;", "}", ""]
    for peer in bgp.peers:
        fams = " ".join(f"{f} flow;" for f in peer.families)
        lines += [
            f"neighbor {peer.address} {{",
            f"    router-id {bgp.router_id};",
            f"    local-address {bgp.local_address};",
            f"    local-as {bgp.local_as};",
            f"    peer-as {peer.asn};",
            f"    connect {peer.port};",
            f"    family {{ {fams} }}",
            "    api { processes [ voxguard ]; neighbor-changes; }",
            "}",
            "",
        ]
    return "\n".join(lines)


def socket_path(var_dir: Path) -> Path:
    """``<var>/mitigate/exabgp.sock``, or a private temp dir when that path is too long for AF_UNIX."""
    path = var_dir / "mitigate" / "exabgp.sock"
    if len(str(path.resolve())) <= MAX_UNIX_PATH:
        return path.resolve()
    return Path(tempfile.mkdtemp(prefix="vgmit-")) / "exabgp.sock"


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the service dies, so no orphan ExaBGP keeps announcing."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class BridgeServer:
    """The service end of the bridge: pipelined commands with acknowledgements."""

    def __init__(self, path: Path, on_hello: Callable[[], None], on_event: Callable[[str], None]) -> None:
        self.path = path
        self.on_hello = on_hello
        self.on_event = on_event
        self._server: asyncio.AbstractServer | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[str, asyncio.Future[bool]] = {}
        self._seq = itertools.count(1)
        self.hellos = 0

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing() and self.hellos > 0

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._client, path=str(self.path))
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        self._fail_pending()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self.path.parent.name.startswith("vgmit-"):  # the private fallback dir of socket_path()
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()

    def _fail_pending(self) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        self._pending.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        old, self._writer = self._writer, writer
        if old is not None:
            old.close()
        self._fail_pending()
        try:
            while True:
                raw = await reader.readline()
                if not raw:
                    break
                self._line(raw.decode(errors="replace").rstrip("\n"))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if self._writer is writer:
                self._writer = None
                self._fail_pending()
            writer.close()

    def _line(self, line: str) -> None:
        kind, _, rest = line.partition(" ")
        if kind == "ACK":
            seq, _, word = rest.partition(" ")
            fut = self._pending.pop(seq, None)
            if fut is not None and not fut.done():
                fut.set_result(word == "done")
        elif kind == "HELLO":
            self.hellos += 1
            log.info("ExaBGP bridge connected (pid %s)", rest)
            self.on_hello()
        elif kind == "EVENT":
            self.on_event(rest)

    async def send_many(self, commands: list[str], timeout: float) -> list[bool | None]:
        """Send commands in order; per command True (done), False (error) or None (no ack)."""
        writer = self._writer
        if writer is None or not commands:
            return [None] * len(commands)
        loop = asyncio.get_running_loop()
        futs: list[asyncio.Future[bool]] = []
        lines = []
        for cmd in commands:
            seq = str(next(self._seq))
            fut: asyncio.Future[bool] = loop.create_future()
            self._pending[seq] = fut
            futs.append(fut)
            lines.append(f"CMD {seq} {cmd.replace(chr(10), ' ')}\n")
        try:
            writer.write("".join(lines).encode())
            await writer.drain()
        except (ConnectionError, RuntimeError):
            pass
        await asyncio.wait(futs, timeout=timeout)
        out: list[bool | None] = []
        for f in futs:
            out.append(f.result() if f.done() and not f.cancelled() else None)
            if not f.done():
                f.cancel()
        return out


class ExaBGPProcess:
    """The ExaBGP child: config in the var dir, restarted with back-off when it dies."""

    def __init__(self, bgp: BgpSettings, workdir: Path, sock: Path) -> None:
        self.bgp = bgp
        self.workdir = workdir.resolve()  # ExaBGP runs with this as its cwd: no relative paths
        self.sock = sock
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "exabgp.conf"

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        bridge = f"{sys.executable} -m voxguard.mitigate.bridge --socket {self.sock}"
        self.config_path.write_text(render_config(self.bgp, bridge))
        return self.config_path

    def _env(self) -> dict[str, str]:
        import getpass

        env = dict(os.environ)
        env.update(
            {
                "exabgp.daemon.user": getpass.getuser(),
                "exabgp.daemon.drop": "false",
                "exabgp.api.ack": "true",
                "exabgp.log.destination": "stdout",
                # per-route INFO lines cost more than parsing the command: 10k rules need them off
                "exabgp.log.level": "WARNING",
                "exabgp.log.processes": "false",
                "exabgp.log.rib": "false",
                "exabgp.log.message": "false",
                "exabgp.log.packets": "false",
            }
        )
        if self.bgp.peers:
            env["exabgp.tcp.port"] = str(self.bgp.peers[0].port)
        return env

    async def _spawn(self) -> None:
        self.write_config()
        logf = open(self.workdir / "exabgp.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = await asyncio.create_subprocess_exec(
                exabgp_binary(self.bgp),
                str(self.config_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logf,
                stderr=asyncio.subprocess.STDOUT,
                env=self._env(),
                cwd=str(self.workdir),
                preexec_fn=_die_with_parent,
                start_new_session=True,
            )
        finally:
            logf.close()
        (self.workdir / "exabgp.pid").write_text(f"{self.proc.pid}\n")
        log.info("ExaBGP started (pid %d)", self.proc.pid)

    def kill_stale(self) -> None:
        """An ExaBGP left by a crashed service would keep announcing stale rules: end it."""
        pidfile = self.workdir / "exabgp.pid"
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            return
        if str(self.config_path) in cmdline:
            log.warning("ending a stale ExaBGP (pid %d) from an earlier run", pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    async def start(self) -> None:
        """Spawn ExaBGP and keep it running until ``stop``."""
        self._stopping = False
        self.kill_stale()
        await self._spawn()
        self._task = asyncio.create_task(self._supervise(), name="exabgp-supervisor")

    async def _supervise(self) -> None:
        delay = 0.2
        while not self._stopping:
            assert self.proc is not None
            rc = await self.proc.wait()
            if self._stopping:
                return
            log.warning("ExaBGP exited with %s; restarting in %.1fs", rc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
            if self._stopping:
                return
            self.restarts += 1
            try:
                await self._spawn()
                delay = 0.2
            except Exception:
                log.exception("cannot restart ExaBGP")

    async def stop(self) -> None:
        """Stop supervising, then terminate ExaBGP (and its bridge: they share a session)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / "exabgp.pid").unlink()

    def kill(self) -> None:
        """Test hook: SIGKILL ExaBGP as a crash would (the supervisor restarts it)."""
        if self.proc is not None and self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)
