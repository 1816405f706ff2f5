"""docs/webhooks.md's verification sample must accept what we send and refuse tampering."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from voxguard.notify import signing

DOC = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _sample() -> Any:
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert code, "docs/webhooks.md has no python sample"
    ns: dict[str, Any] = {}
    exec(code.group(1), ns)
    return ns["verify"]


def test_documented_verifier_accepts_our_signature_and_refuses_replays() -> None:
    verify = _sample()
    body = b'{"type": "webhook.test"}'
    headers = signing.headers(SECRET, "msg_abc", body, time.time())
    verify(SECRET, headers, body)
    with pytest.raises(ValueError):
        verify(SECRET, headers, body + b" ")
    old = signing.headers(SECRET, "msg_abc", body, time.time() - 600)
    with pytest.raises(ValueError, match="replay"):
        verify(SECRET, old, body)
