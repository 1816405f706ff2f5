"""Standard Webhooks 1.0 signatures (integrations.md section 6): one HMAC over id, time and body.

Binding the id and the timestamp into the signature is what makes a captured request useless
to replay later: the receiver rejects stale timestamps and remembers ids it has seen.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

PREFIX = "whsec_"
TOLERANCE_S = 300


class SignatureError(ValueError):
    """The request is not one we signed (bad signature, stale or future timestamp)."""


def decode_secret(secret: str) -> bytes:
    """The HMAC key inside ``whsec_<base64>``; ValueError when malformed."""
    raw = secret[len(PREFIX) :] if secret.startswith(PREFIX) else secret
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("webhook secret must be 'whsec_' + base64") from exc
    if len(key) < 16:
        raise ValueError("webhook secret is too short (at least 16 bytes of key)")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256(key, id.timestamp.body)>``."""
    mac = hmac.new(decode_secret(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def headers(secret: str, msg_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt (timestamp changes per attempt)."""
    ts = int(now if now is not None else time.time())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
        "content-type": "application/json",
    }


def verify(secret: str, hdrs: dict[str, str], body: bytes, now: float | None = None) -> None:
    """What a receiver does (docs/webhooks.md); raises SignatureError."""
    lower = {k.lower(): v for k, v in hdrs.items()}
    try:
        msg_id, ts_s, sigs = lower["webhook-id"], lower["webhook-timestamp"], lower["webhook-signature"]
        ts = int(ts_s)
    except (KeyError, ValueError) as exc:
        raise SignatureError("missing or malformed webhook headers") from exc
    current = now if now is not None else time.time()
    if abs(current - ts) > TOLERANCE_S:
        raise SignatureError("timestamp outside the tolerance window")
    expected = sign(secret, msg_id, ts, body).split(",", 1)[1]
    for candidate in sigs.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return
    raise SignatureError("no matching signature")
