"""Process settings from the environment."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from voxguard.shared.settings import DEFAULT_NATS_URL, Settings, parse_host_port

ENV_NAMES = (
    "DATABASE_URL",
    "NATS_URL",
    "VOXGUARD_CONFIG",
    "VOXGUARD_VAR_DIR",
    "VOXGUARD_HTTP",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "VOXGUARD_LOG_LEVEL",
    "VOXGUARD_LOG_FORMAT",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env / ./var from the developer's tree


def test_defaults_are_the_embedded_mode() -> None:
    s = Settings()
    assert s.database_url is None and s.nats_url is None and s.config_path is None
    assert s.var_dir == Path("var")
    assert (s.http_host, s.http_port) == ("127.0.0.1", 8080)
    assert s.nats_url_or_default == DEFAULT_NATS_URL == "nats://127.0.0.1:4222"
    assert s.otlp_endpoint is None
    assert (s.log_level, s.log_format) == ("INFO", "json")


def test_reads_the_documented_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db/voxguard")
    monkeypatch.setenv("NATS_URL", "nats://bus:4222")
    monkeypatch.setenv("VOXGUARD_CONFIG", "/etc/voxguard/voxguard.yaml")
    monkeypatch.setenv("VOXGUARD_VAR_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("VOXGUARD_HTTP", "0.0.0.0:9090")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318")
    monkeypatch.setenv("VOXGUARD_LOG_LEVEL", "debug")
    monkeypatch.setenv("VOXGUARD_LOG_FORMAT", "Console")
    s = Settings()
    assert s.database_url == "postgresql://u@db/voxguard"
    assert s.nats_url_or_default == "nats://bus:4222"
    assert s.config_path == Path("/etc/voxguard/voxguard.yaml")
    assert s.var_dir == tmp_path / "state"
    assert (s.http_host, s.http_port) == ("0.0.0.0", 9090)
    assert s.otlp_endpoint == "http://otel:4318"
    assert (s.log_level, s.log_format) == ("DEBUG", "console")
    assert s.effective_database_url() == "postgresql://u@db/voxguard"


def test_effective_database_url_defaults_to_sqlite_in_var_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    var = tmp_path / "deep" / "var"
    monkeypatch.setenv("VOXGUARD_VAR_DIR", str(var))
    monkeypatch.setenv("DATABASE_URL", "  ")  # blank means unset
    url = Settings().effective_database_url()
    assert url == f"sqlite:///{var.resolve()}/voxguard.db"
    assert var.is_dir()
    assert stat.S_IMODE(var.stat().st_mode) == 0o700


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:8443", ("::1", 8443)),
        (":9000", ("0.0.0.0", 9000)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_parse_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("bad", ["8080", "host:", "host:0", "host:70000", "::1:80", "[::1]8080", "h:x"])
def test_parse_host_port_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_host_port(bad)


def test_invalid_values_are_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXGUARD_HTTP", "nonsense")
    with pytest.raises(ValidationError, match="VOXGUARD_HTTP"):
        Settings()
    monkeypatch.delenv("VOXGUARD_HTTP")
    monkeypatch.setenv("VOXGUARD_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="VOXGUARD_LOG_FORMAT"):
        Settings()


def test_baseline_grace_reaches_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from voxguard.baseline.engine import DetectionEngine
    from voxguard.baseline.service import default_engine
    from voxguard.shared.config import example_config_path, load_config

    monkeypatch.setenv("VOXGUARD_BASELINE_GRACE_TICKS", "1")
    s = Settings()
    assert s.baseline_grace_ticks == 1.0
    engine = default_engine(load_config(example_config_path()), s.baseline_grace_ticks)
    assert isinstance(engine, DetectionEngine) and engine.grace == 1.0
    monkeypatch.setenv("VOXGUARD_BASELINE_GRACE_TICKS", "0")
    with pytest.raises(ValueError):
        Settings()
