"""Runbooks as data: defaults from the product's origin, config overrides, regulatory checklist."""

from __future__ import annotations

import pytest

from voxguard.shared.config import ConfigError
from voxguard.shared.runbooks import (
    DEFAULT_RUNBOOKS,
    EMERGENCY_TAG,
    REGULATORY_CHECKLIST,
    checklist_for,
    load_runbooks,
    runbook_for,
)


def test_the_three_origin_runbooks_match_their_attacks() -> None:
    books = load_runbooks({})
    assert [b.name for b in books] == [b.name for b in DEFAULT_RUNBOOKS]
    sip = runbook_for(books, "sbc", ["sip_flood"])
    assert sip is not None and sip.name == "sip-flood-sbc"
    assert sip.actions[0].kind == "block_top_prefixes" and sip.actions[0].count == 5
    rtp = runbook_for(books, "media", ["rtp_flood"])
    assert rtp is not None and {a.kind for a in rtp.actions} >= {"accept_preserved", "source_block", "notify"}
    tdos = runbook_for(books, "sbc", ["tdos"])
    assert tdos is not None and tdos.actions[0].kind == "rate_limit_top_networks"
    assert runbook_for(books, "registrar", ["register_storm"]) is None


def test_emergency_trunks_get_the_regulatory_checklist() -> None:
    tdos = runbook_for(load_runbooks({}), "sbc", ["tdos"])
    plain = checklist_for(tdos, [])
    assert plain and not set(REGULATORY_CHECKLIST) & set(plain)
    assert checklist_for(tdos, [EMERGENCY_TAG])[-len(REGULATORY_CHECKLIST) :] == REGULATORY_CHECKLIST
    assert checklist_for(None, [EMERGENCY_TAG]) == REGULATORY_CHECKLIST


def test_config_overrides_and_adds() -> None:
    books = load_runbooks(
        {
            "sip-flood-sbc": {"title": "ours", "trigger": {"tier": "sbc", "vectors": ["sip_flood"], "min_ratio": 8}},
            "register-storm": {
                "title": "REGISTER storm",
                "trigger": {"tier": "registrar", "vectors": ["register_storm"]},
                "noc_checklist": ["call the registrar team"],
            },
        }
    )
    assert runbook_for(books, "sbc", ["sip_flood"], ratio=6) is None  # the override raised the bar
    assert runbook_for(books, "sbc", ["sip_flood"], ratio=9).title == "ours"  # type: ignore[union-attr]
    assert runbook_for(books, "registrar", ["register_storm"]).noc_checklist == ["call the registrar team"]  # type: ignore[union-attr]


def test_bad_runbooks_are_explained() -> None:
    with pytest.raises(ConfigError) as info:
        load_runbooks(
            {
                "x": {
                    "title": "t",
                    "trigger": {"tier": "pbx", "vectors": ["sip_floood"]},
                    "actions": [{"kind": "nuke"}],
                },
                "y": "not a mapping",
            }
        )
    paths = " ".join(p for p, _ in info.value.errors)
    assert "runbooks.x.trigger.tier" in paths and "runbooks.x.trigger.vectors" in paths
    assert "runbooks.x.actions.0.kind" in paths and "runbooks.y" in paths
