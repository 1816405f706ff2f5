"""The mitigate tests' BGP lab: a real ``gobgpd`` upstream on loopback, read back with ``gobgp``.

Every gobgpd gets its own free BGP and gRPC ports (pprof off), so parallel runs never collide;
processes are always ended by their own pid.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from voxguard.mitigate.settings import BgpSettings, parse_bgp

GOBGP_ADDR = "127.0.0.2"
EXABGP_ADDR = "127.0.0.1"
_NLRI = re.compile(r"^\*>?\s+((?:\[[^\]]*\])+)\s+(.*)$")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class GoBGP:
    """One gobgpd peering passively with ExaBGP on 127.0.0.1."""

    def __init__(self, workdir: Path, gobgpd: Path, gobgp: Path) -> None:
        self.workdir = workdir
        self.gobgpd = gobgpd
        self.gobgp = gobgp
        self.bgp_port = free_port(GOBGP_ADDR)
        self.api_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        return f"""[global.config]
  as = 65001
  router-id = "{GOBGP_ADDR}"
  port = {self.bgp_port}
  local-address-list = ["{GOBGP_ADDR}"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "{EXABGP_ADDR}"
    peer-as = 65000
  [neighbors.transport.config]
    passive-mode = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-flowspec"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-flowspec"
"""

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "gobgpd.toml"
        conf.write_text(self.config())
        log = open(self.workdir / "gobgpd.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [str(self.gobgpd), "-f", str(conf), "--api-hosts", f"127.0.0.1:{self.api_port}", "--pprof-disable"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._cli("neighbor").returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("gobgpd did not start: " + (self.workdir / "gobgpd.log").read_text()[-2000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.gobgp), "-u", "127.0.0.1", "-p", str(self.api_port), *args],
            capture_output=True,
            text=True,
            timeout=10,
        )

    def rib(self, family: str = "ipv4-flowspec") -> dict[str, str]:
        """NLRI text -> attributes text, as ``gobgp global rib -a <family>`` prints them."""
        out = self._cli("global", "rib", "-a", family)
        routes: dict[str, str] = {}
        for line in out.stdout.splitlines():
            m = _NLRI.match(line.strip())
            if m:
                routes[m.group(1)] = m.group(2)
        return routes

    def established(self) -> bool:
        return "Establ" in self._cli("neighbor").stdout

    def bgp(self, **extra: object) -> BgpSettings:
        """The ``bgp`` section pointing ExaBGP at this gobgpd."""
        data: dict[str, object] = {
            "local_as": 65000,
            "router_id": EXABGP_ADDR,
            "local_address": EXABGP_ADDR,
            "peers": [{"address": GOBGP_ADDR, "asn": 65001, "port": self.bgp_port}],
            "hold_down_seconds": 0,
            "reconcile_interval_seconds": 0.5,
        }
        data.update(extra)
        return parse_bgp(data)


async def wait_for(predicate: Callable[[], object], timeout: float = 15.0, interval: float = 0.05) -> float:
    """Seconds until ``predicate()`` is truthy (run in a thread); AssertionError on timeout."""
    started = time.monotonic()
    while True:
        if await asyncio.to_thread(predicate):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
