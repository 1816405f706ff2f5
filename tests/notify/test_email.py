"""E-mail through a real local SMTP server (aiosmtpd) with STARTTLS and AUTH."""

from __future__ import annotations

import email
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from vghelpers import need_tool
from voxguard.notify.config import NotifyConfig
from voxguard.notify.store import Store

from .conftest import FAST_RETRY, incident_event, make_config, running

aiosmtpd = pytest.importorskip("aiosmtpd", reason="aiosmtpd is in the test extra")
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402

USER, PASSWORD = "noc", "s3cret-pass"


@dataclass
class Inbox:
    messages: list[Message] = field(default_factory=list)
    tls: list[bool] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.original_content or envelope.content))
        self.tls.append(session.ssl is not None)
        return "250 OK"


def _auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == USER.encode() and data.password == PASSWORD.encode()
    return AuthResult(success=ok)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = str(need_tool("openssl"))  # makes the SMTP server's test certificate
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(d / "key.pem"),
            "-out",
            str(d / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return d / "cert.pem", d / "key.pem"


@pytest.fixture
def smtp(cert: tuple[Path, Path]) -> Iterator[tuple[Inbox, int]]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    inbox, port = Inbox(), _free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=ctx,
        require_starttls=True,
        authenticator=_auth,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def _cfg(port: int, cert: Path, **extra: Any) -> NotifyConfig:
    channel = {
        "type": "email",
        "host": "127.0.0.1",
        "port": port,
        "from": "voxguard@example.net",
        "to": ["noc@example.net", "oncall@example.net"],
        "username": USER,
        "password": PASSWORD,
        "ca_file": str(cert),
        "retry": FAST_RETRY,
        **extra,
    }
    return make_config(
        "http://x", notifications={"channels": {"mail": channel}, "routes": [{"name": "r", "channels": ["mail"]}]}
    )


async def test_mail_goes_out_over_starttls_with_auth_text_and_html(
    smtp: tuple[Inbox, int], cert: tuple[Path, Path], store: Store
) -> None:
    inbox, port = smtp
    async with running(_cfg(port, cert[0]), store) as svc:
        await svc.on_incident(incident_event(severity="critical"))
        await svc.dispatcher.drain()
    [row] = store.list()
    assert row.status == "sent", row.last_detail
    [msg] = inbox.messages
    assert inbox.tls == [True]
    assert "sip_flood" in msg["Subject"] and msg["To"] == "noc@example.net, oncall@example.net"
    parts = {
        p.get_content_type(): bytes(p.get_payload(decode=True)).decode() for p in msg.walk() if not p.is_multipart()
    }
    assert set(parts) == {"text/plain", "text/html"}
    assert "198.51.100.7" in parts["text/plain"] and "<table>" in parts["text/html"]
    assert "/v1/incidents/inc-1" in parts["text/html"]


async def test_starttls_required_but_not_offered(store: Store, cert: tuple[Path, Path]) -> None:
    inbox, port = Inbox(), _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        async with running(_cfg(port, cert[0], starttls="required", username=None, password=None), store) as svc:
            await svc.on_incident(incident_event())
            await svc.dispatcher.drain()
    finally:
        controller.stop()
    [row] = store.list()
    assert row.status == "dead_letter" and "STARTTLS" in (row.last_detail or "")
    assert inbox.messages == []
