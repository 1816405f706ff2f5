"""Helpers for tests that run voxguard as a user does (imported as ``vghelpers``; a module
name no conftest.py can shadow)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest


def in_ci() -> bool:
    """CI=true: every service, tool and the shared folder must be there."""
    return os.environ.get("CI", "").strip().lower() == "true"


def require(condition: object, reason: str) -> None:
    """Skip the test with ``reason`` unless ``condition`` holds; under CI=true, fail instead."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"CI=true and a required component is missing: {reason}", pytrace=False)
    pytest.skip(reason)


def need_tool(name: str) -> Path:
    """The path of a Debian tool (tshark, softflowd, gobgpd, sipp...), or skip/fail."""
    found = shutil.which(name)
    require(found, f"{name} is not installed (apt-get install the package that provides it)")
    assert found is not None
    return Path(found)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nobody listens on right now (TCP by default, or SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def example_config_on_free_ports(path: Path) -> Path:
    """The example config with the collector on free loopback ports, written to ``path``."""
    import yaml

    from voxguard.shared.config import example_config_path

    cfg = yaml.safe_load(example_config_path().read_text())
    cfg["ingest"].update(
        host="127.0.0.1",
        netflow_port=free_port(socket.SOCK_DGRAM),
        ipfix_port=free_port(socket.SOCK_DGRAM),
        sflow_port=free_port(socket.SOCK_DGRAM),
    )
    path.write_text(yaml.safe_dump(cfg))
    return path


def wait_http_ready(base: str, proc: subprocess.Popen[Any] | None = None, timeout: float = 90) -> Any:
    """Poll ``base/readyz`` until 200; fail early if ``proc`` exits. Returns the last response."""
    import httpx

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"process exited with {proc.returncode}: {out}")
        try:
            last = httpx.get(f"{base}/readyz", timeout=2)
            if last.status_code == 200:
                return last
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{base} not ready in {timeout}s: {last.text if last is not None else 'no answer'}")


def stop_process(proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    """Ctrl-C, as a user stops voxguard; kill if it does not stop in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def ethernet_frame(
    src: str, dst: str, sport: int, dport: int, size: int = 200, proto: int = 17, flags: int = 0
) -> bytes:
    """An Ethernet/IPv4 UDP datagram of ``size`` IP bytes, or a bare TCP segment with ``flags``."""
    import dpkt

    l4: dpkt.Packet
    if proto == 17:
        l4 = dpkt.udp.UDP(sport=sport, dport=dport, data=b"x" * (size - 28))
        l4.ulen = len(l4)
    else:
        l4 = dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, data=b"")
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=proto, data=l4, ttl=64)
    ip.len = len(ip)
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=0x0800, data=ip))
