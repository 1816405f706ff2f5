"""E-mail over SMTP: STARTTLS whenever the relay offers it, AUTH when configured, text + HTML.

smtplib runs in a worker thread (no async SMTP client ships with us); the Message-ID is derived
from the idempotency key so mail clients fold a rare duplicate into one.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import smtplib
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from email.utils import formatdate

import httpx

from voxguard.notify import render
from voxguard.notify.channels.base import SendResult
from voxguard.notify.config import EmailChannel
from voxguard.notify.events import Alert


def build_message(alert: Alert, cfg: EmailChannel, link_base: str, key: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = render.title(alert)
    msg["From"] = cfg.sender
    msg["To"] = ", ".join(cfg.to)
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@voxguard>"
    url = render.link(alert, link_base)
    facts = render.facts(alert)
    sources = render.top_sources(alert)
    text = "\n".join(f"{k}: {v}" for k, v in facts)
    if sources:
        text += "\n\nTop sources:\n" + "\n".join(f"  - {s}" for s in sources)
    msg.set_content(f"{render.title(alert)}\n\n{text}\n\n{url}\n")
    rows = "".join(f"<tr><th align='left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    src = "".join(f"<li><code>{html.escape(s)}</code></li>" for s in sources)
    msg.add_alternative(
        f"<html><body><h2>{html.escape(render.title(alert))}</h2><table>{rows}</table>"
        + (f"<h3>Top sources</h3><ul>{src}</ul>" if src else "")
        + f"<p><a href='{html.escape(url)}'>Open in VoxGuard</a></p></body></html>",
        subtype="html",
    )
    return msg


def _send_blocking(cfg: EmailChannel, msg: EmailMessage, timeout_s: float) -> None:
    context = ssl.create_default_context(cafile=cfg.ca_file)
    with smtplib.SMTP(cfg.host, cfg.port, timeout=timeout_s) as smtp:
        smtp.ehlo()
        if cfg.starttls != "never" and smtp.has_extn("starttls"):
            smtp.starttls(context=context)
            smtp.ehlo()
        elif cfg.starttls == "required":
            raise smtplib.SMTPNotSupportedError("the relay does not offer STARTTLS and starttls is 'required'")
        if cfg.username:
            smtp.login(cfg.username, cfg.password.get_secret_value() if cfg.password else "")
        smtp.send_message(msg)


class EmailSender:
    provider = "email"

    def __init__(self, name: str, cfg: EmailChannel, link_base: str) -> None:
        self.name, self.cfg, self.link_base = name, cfg, link_base
        self._pool = ThreadPoolExecutor(max_workers=cfg.concurrency, thread_name_prefix=f"smtp-{name}")

    async def send(self, alert: Alert, key: str, client: httpx.AsyncClient, timeout_s: float) -> SendResult:
        msg = build_message(alert, self.cfg, self.link_base, key)
        started = time.perf_counter()
        try:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._pool, _send_blocking, self.cfg, msg, timeout_s)
            result = SendResult(True, 250)
        except smtplib.SMTPAuthenticationError as exc:
            result = SendResult(False, exc.smtp_code, retryable=False, detail="SMTP authentication failed")
        except smtplib.SMTPNotSupportedError as exc:
            result = SendResult(False, None, retryable=False, detail=str(exc))
        except smtplib.SMTPResponseException as exc:
            # 4xx replies are transient by definition (RFC 5321); 5xx are not.
            result = SendResult(
                False, exc.smtp_code, retryable=400 <= exc.smtp_code < 500, detail=f"SMTP {exc.smtp_code}"
            )
        except smtplib.SMTPRecipientsRefused:
            result = SendResult(False, 550, retryable=False, detail="all recipients refused")
        except (OSError, smtplib.SMTPException) as exc:
            result = SendResult(False, None, retryable=True, detail=f"{type(exc).__name__}: {exc}"[:300])
        result.latency_ms = (time.perf_counter() - started) * 1000
        return result
