"""The README's first command on a fresh checkout: it creates its own ``.venv``, starts every
service, and stops cleanly on Ctrl-C.

The command is read from README.md (the first line of its first code block), so the test
follows the README when it changes. The checkout is a copy of the repository's files without
``.venv`` or ``var/``; pip installs into the new virtual environment (its cache, when present,
keeps this to well under a minute).
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from vghelpers import example_config_on_free_ports, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ingest", "baseline", "mitigate", "notify")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def readme_first_command(readme: Path) -> list[str]:
    """The first command of the README's first code block, comment stripped."""
    block = re.search(r"^```[a-z]*\n(.*?)^```", readme.read_text(), re.M | re.S)
    assert block, "README.md has no code block"
    line = next(ln for ln in block[1].splitlines() if ln.strip() and not ln.lstrip().startswith("#"))
    return shlex.split(line, comments=True)


def fresh_checkout(dest: Path) -> None:
    """The repository's files (tracked, plus new ones not ignored) as a clone would have them:
    no ``.venv``, no ``var/``, symlinks kept."""
    listed = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = REPO_ROOT / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the work tree, not committed yet
        dst = dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, dst)
    assert not (dest / ".venv").exists() and (dest / "scripts" / "ensure-venv").exists()


def read_lines(proc: subprocess.Popen[str], into: queue.Queue[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        into.put(line)


def test_readme_up_from_a_fresh_checkout(tmp_path: Path) -> None:
    checkout = tmp_path / "voxguard"
    fresh_checkout(checkout)
    cmd = readme_first_command(checkout / "README.md")
    assert cmd[:2] == ["./voxguard", "up"], cmd
    # ./voxguard.yaml is the example config; its collector ports are moved to free ones so the
    # test cannot collide with anything else listening on 2055/4739/6343
    (checkout / "voxguard.yaml").unlink()
    example_config_on_free_ports(checkout / "voxguard.yaml")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NATS_URL", "DATABASE_URL", "VIRTUAL_ENV", "PYTHONPATH") and not k.startswith("VOXGUARD_")
    }
    env["VOXGUARD_HTTP"] = f"127.0.0.1:{port}"  # the README's documented setting for the listen address

    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=read_lines, args=(proc, lines), daemon=True).start()
    out: list[str] = []
    try:
        # install into the new .venv, then the banner names the HTTP address
        deadline = started + 300
        while not any(f"http://127.0.0.1:{port}" in ln for ln in out):
            assert time.monotonic() < deadline, "no banner in 300 s:\n" + "".join(out)
            assert proc.poll() is None or not lines.empty(), "exited early:\n" + "".join(out)
            try:
                out.append(lines.get(timeout=1))
            except queue.Empty:
                continue
        installed = time.monotonic() - started
        ready = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, "exited:\n" + "".join(out)
            try:
                ready = httpx.get(f"{base}/readyz", timeout=3)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        assert ready is not None and ready.status_code == 200, ready.text if ready is not None else "no answer"
        body = ready.json()
        assert body["status"] == "ready" and set(SERVICES) <= set(body["services"]), body
        for svc in SERVICES:
            own = {name: c for name, c in body["checks"].items() if name.startswith(f"{svc}.")}
            assert own, f"{svc} has no readiness check: {body['checks']}"
            assert all(c["ok"] for c in own.values()), own
        assert all(c["ok"] for c in body["checks"].values()), body["checks"]
        # it runs from the checkout's own new virtual environment
        exe = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert any(part.startswith(str(checkout / ".venv").encode()) for part in exe), exe
        assert (checkout / "var" / "admin.key").exists()
        print(f"fresh venv install + start: {installed:.0f} s, ready after {time.monotonic() - started:.0f} s")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    time.sleep(0.2)
    while not lines.empty():
        out.append(lines.get())
    assert proc.returncode == 0, "".join(out[-40:])
    assert "Traceback" not in "".join(out), "".join(out)
    leftovers = subprocess.run(["pgrep", "-f", str(checkout)], capture_output=True, text=True).stdout.split()
    assert not leftovers, f"processes left running from {checkout}: {leftovers}"
