"""The operator config: the example expresses the reference deployment; bad config is explained."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from voxguard.shared.config import (
    ConfigError,
    Monitor,
    PortRange,
    Protocol,
    Tier,
    example_config_path,
    load_config,
    parse_config,
)

EXAMPLE = example_config_path()


def _example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_example_expresses_reference_deployment() -> None:
    cfg = load_config(EXAMPLE)
    assert set(cfg.tiers) == {Tier.SBC, Tier.MEDIA, Tier.REGISTRAR, Tier.API, Tier.TURN}
    sbc = cfg.tiers[Tier.SBC]
    assert sbc.exporters == ["edge-sbc-01"]
    assert {m.label() for m in sbc.monitors} == {"udp/5060", "tcp/5061", "icmp"}
    assert sbc.mitigation.mode == "flowspec" and "registered_endpoints" in sbc.mitigation.preserve
    media = cfg.tiers[Tier.MEDIA]
    assert media.monitors[0].ports == PortRange(low=10000, high=20000)
    assert media.per_host and media.exporters == ["edge-media-01"]
    reg = cfg.tiers[Tier.REGISTRAR]
    assert reg.internal and reg.mitigation.mode == "alert_only" and reg.exporters == ["sw-core-01"]
    api = cfg.tiers[Tier.API]
    assert {m.label() for m in api.monitors} == {"tcp/443", "tcp/8443"}
    assert api.mitigation.action == "rate_limit"
    for tc in cfg.tiers.values():
        assert tc.baseline.window_days == 7


def test_target_ids_are_stable_and_distinct() -> None:
    a = [t.id for t in load_config(EXAMPLE).iter_targets()]
    b = [t.id for t in load_config(EXAMPLE).iter_targets()]
    assert a == b and len(set(a)) == len(a)
    assert all(t.split("-", 1)[0] in {x.value for x in Tier} for t in a)


def test_role_inference() -> None:
    assert Monitor(protocol=Protocol.UDP, ports=PortRange.parse("5060")).effective_role == "signalling"
    assert Monitor(protocol=Protocol.UDP, ports=PortRange.parse("10000-20000")).effective_role == "media"
    assert Monitor(protocol=Protocol.TCP, ports=PortRange.parse(5061)).effective_role == "tls"
    assert Monitor(protocol=Protocol.ICMP).effective_role == "icmp"


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [
        (
            lambda d: d["tiers"]["sbc"]["monitors"].append({"protocol": "udp", "ports": "20000-10000"}),
            "tiers.sbc.monitors[3].ports",
            "inverted",
        ),
        (
            lambda d: d["tiers"]["sbc"]["components"][0].update(addresses=["203.0.113.10/8"]),
            "tiers.sbc.components[0].addresses",
            "host bits",
        ),
        (
            lambda d: d["tiers"]["sbc"]["components"][0].update(addresses=["not-an-ip"]),
            "tiers.sbc.components[0].addresses",
            "not an IP",
        ),
        (lambda d: d["tiers"]["media"].update(exporters=["nope"]), "(top level)", "nope"),
        (
            lambda d: d["tiers"]["registrar"]["mitigation"].update(mode="flowspec"),
            "tiers.registrar",
            "internal",
        ),
        (
            lambda d: d["tiers"]["sbc"]["detection"]["vectors"].update(sip_floood={"ratio": 5}),
            "tiers.sbc.detection.vectors",
            "sip_floood",
        ),
        (
            lambda d: d["tiers"]["sbc"]["detection"]["vectors"]["sip_flood"].update(ratio=0.5),
            "tiers.sbc.detection.vectors.sip_flood.ratio",
            "greater than 1",
        ),
        (lambda d: d["ingest"].update(sflow_port=70000), "ingest.sflow_port", "65535"),
        (lambda d: d.update(colour="blue"), "colour", "Extra inputs"),
        (lambda d: d["tiers"].update(pbx={}), "tiers.pbx", "sbc"),
        (
            lambda d: d["tiers"]["sbc"]["monitors"].append({"protocol": "icmp", "ports": 5}),
            "tiers.sbc.monitors[3]",
            "icmp has no ports",
        ),
    ],
)
def test_invalid_config_names_key_and_reason(mutate, path: str, fragment: str) -> None:  # type: ignore[no-untyped-def]
    data = _example()
    mutate(data)
    with pytest.raises(ConfigError) as info:
        parse_config(data, "test.yaml")
    hits = [(p, r) for p, r in info.value.errors if p.startswith(path) and fragment in r]
    assert hits, info.value.errors


def test_every_error_reported_at_once() -> None:
    data = _example()
    data["tiers"]["sbc"]["monitors"][0]["ports"] = "abc"
    data["ingest"]["tick_seconds"] = -1
    data["exporters"][0]["address"] = "999.1.1.1"
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    paths = [p for p, _ in info.value.errors]
    assert any(p.startswith("tiers.sbc.monitors[0].ports") for p in paths)
    assert any(p.startswith("ingest.tick_seconds") for p in paths)
    assert any(p.startswith("exporters[0].address") for p in paths)


def test_unreadable_and_non_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tiers: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)


def test_cli_config_check(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "voxguard.cli.main", "config", "check", str(EXAMPLE)],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "valid" in ok.stdout and "14 configured targets" in ok.stdout
    data = _example()
    data["tiers"]["media"]["monitors"][0]["ports"] = "20000-10000"
    data["ingest"]["netflow_port"] = -5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    res = subprocess.run(
        [sys.executable, "-m", "voxguard.cli.main", "config", "check", str(bad)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1
    assert "2 error(s)" in res.stderr
    assert "tiers.media.monitors[0].ports" in res.stderr and "inverted" in res.stderr
    assert "ingest.netflow_port" in res.stderr
