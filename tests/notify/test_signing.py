"""Standard Webhooks signatures: the spec's test vector, tolerance and tampering."""

from __future__ import annotations

import pytest

from voxguard.notify import signing

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID, TS, BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'


def test_reference_vector() -> None:
    assert signing.sign(SECRET, MSG_ID, TS, BODY) == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_verify_accepts_ours_and_rotated_lists() -> None:
    h = signing.headers(SECRET, MSG_ID, BODY, now=TS)
    signing.verify(SECRET, h, BODY, now=TS + 10)
    h["webhook-signature"] = "v1,AAAA " + h["webhook-signature"]
    signing.verify(SECRET, h, BODY, now=TS)


@pytest.mark.parametrize(
    ("change", "now"),
    [("body", TS), ("id", TS), ("none", TS + 301), ("none", TS - 301)],
)
def test_verify_rejects_tampering_and_replays(change: str, now: int) -> None:
    h = signing.headers(SECRET, MSG_ID, BODY, now=TS)
    body = BODY + b" " if change == "body" else BODY
    if change == "id":
        h["webhook-id"] = "msg_other"
    with pytest.raises(signing.SignatureError):
        signing.verify(SECRET, h, body, now=now)


def test_bad_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="base64"):
        signing.decode_secret("whsec_***")
