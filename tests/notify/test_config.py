"""Config refusals name the key path and the reason; secrets never show in a repr."""

from __future__ import annotations

from typing import Any

import pytest

from voxguard.notify.config import load_notify_config
from voxguard.shared.config import ConfigError, VoxGuardConfig

from .conftest import PD_KEY, WH_SECRET, make_config, routes

BASE = "http://127.0.0.1:9"


def _errors(notifications: dict[str, Any] | None = None, status_pages: dict[str, Any] | None = None) -> str:
    raw = VoxGuardConfig.model_validate(
        {
            "regions": ["eu"],
            "tiers": {
                "sbc": {
                    "components": [{"name": "s", "addresses": ["192.0.2.1/32"]}],
                    "monitors": [{"protocol": "udp", "ports": "5060"}],
                }
            },
            "notifications": notifications or {},
            "status_pages": status_pages or {},
        }
    )
    with pytest.raises(ConfigError) as exc:
        load_notify_config(raw)
    return str(exc.value)


def test_the_test_config_is_valid() -> None:
    cfg = make_config(BASE)
    assert set(cfg.notifications.channels) == {"oncall", "noc", "hook"}
    assert set(cfg.components()) == {"sip_signaling", "voice_quality", "api", "region-eu"}


def test_bad_url_names_the_channel_key() -> None:
    msg = _errors({"channels": {"noc": {"type": "slack", "url": "hooks.slack.com/services/T/B/SECRETPART"}}})
    assert "notifications.channels.noc.url" in msg
    assert "absolute http(s) URL" in msg
    assert "SECRETPART" not in msg  # the Slack URL is a credential


def test_route_to_a_missing_channel_is_refused() -> None:
    msg = _errors({"channels": {}, "routes": routes()[:1]})
    assert "notifications" in msg and "'oncall'" in msg and "not defined" in msg


def test_bad_pagerduty_key_and_webhook_secret() -> None:
    msg = _errors(
        {
            "channels": {
                "pd": {"type": "pagerduty", "routing_key": "short"},
                "wh": {"type": "webhook", "url": "https://example.com/h", "secret": "whsec_!!notbase64"},
            }
        }
    )
    assert "notifications.channels.pd.routing_key" in msg and "32-character" in msg
    assert "notifications.channels.wh.secret" in msg


def test_status_page_provider_errors_have_paths() -> None:
    msg = _errors(status_pages={"providers": {"sp": {"type": "statuspage", "page_id": "p"}}, "affect_after_s": -1})
    assert "status_pages.providers.sp.api_key" in msg
    assert "status_pages.affect_after_s" in msg


def test_unknown_channel_type_and_extra_keys() -> None:
    msg = _errors({"channels": {"x": {"type": "fax", "url": "https://e.com"}}, "bogus": 1})
    assert "notifications.channels.x" in msg and "notifications.bogus" in msg


def test_secrets_never_in_repr() -> None:
    cfg = make_config(BASE)
    text = repr(cfg) + str(cfg.model_dump())
    assert PD_KEY not in text and WH_SECRET not in text and "XXXXSECRET" not in text
