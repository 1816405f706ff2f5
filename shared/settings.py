"""Process settings from the environment (design.md sections 4-5).

The names are the ones operators and container platforms already use (``DATABASE_URL``,
``NATS_URL``, ``OTEL_EXPORTER_OTLP_ENDPOINT``) plus ``VOXGUARD_*`` for our own knobs, so a
``docker run -e DATABASE_URL=...`` works without learning a prefix. Unset values mean the
embedded defaults of ``voxguard up``: SQLite under the var dir, a nats-server from the wheel.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_HTTP = "127.0.0.1:8080"


def parse_host_port(value: str) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port`` / ``:port``; ValueError naming the problem."""
    text = value.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"{value!r}: IPv6 addresses are written [addr]:port")
        ipaddress.IPv6Address(host)
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:8080)")
        if ":" in host:
            raise ValueError(f"{value!r}: IPv6 addresses are written [addr]:port")
        host = host or "0.0.0.0"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r}: port must be 1-65535")
    return host, int(port)


class Settings(BaseSettings):
    """Everything a VoxGuard process reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="",
        case_sensitive=False,
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
    )

    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    nats_url: str | None = Field(default=None, validation_alias="NATS_URL")
    config_path: Path | None = Field(default=None, validation_alias="VOXGUARD_CONFIG")
    var_dir: Path = Field(default=Path("./var"), validation_alias="VOXGUARD_VAR_DIR")
    http: str = Field(default=DEFAULT_HTTP, validation_alias="VOXGUARD_HTTP")
    otlp_endpoint: str | None = Field(default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", validation_alias="VOXGUARD_LOG_LEVEL"
    )
    log_format: Literal["json", "console"] = Field(default="json", validation_alias="VOXGUARD_LOG_FORMAT")
    # Partitions of the per-host targets across baseline workers (1 = one worker takes all);
    # ingest and baseline must agree, so set it once for both (see shared/partition.py).
    baseline_shards: int = Field(default=1, ge=1, le=1024, validation_alias="VOXGUARD_BASELINE_SHARDS")
    # How long (in ticks) the detection engine waits for a tick's late messages before deciding it:
    # the floor of the tick-to-incident latency; lower it on a fast, lightly loaded bus.
    baseline_grace_ticks: float = Field(default=2.0, ge=0.2, le=10.0, validation_alias="VOXGUARD_BASELINE_GRACE_TICKS")
    # Prefix of stream names and subjects, so two deployments can share one nats-server.
    nats_namespace: str = Field(
        default="", pattern=r"^[A-Za-z0-9_-]{0,32}$", validation_alias="VOXGUARD_NATS_NAMESPACE"
    )

    @field_validator("database_url", "nats_url", "otlp_endpoint", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `FOO=` in a compose file means "unset", not "connect to the empty string".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("http")
    @classmethod
    def _http(cls, value: str) -> str:
        parse_host_port(value)
        return value

    @property
    def http_host(self) -> str:
        return parse_host_port(self.http)[0]

    @property
    def http_port(self) -> int:
        return parse_host_port(self.http)[1]

    @property
    def nats_url_or_default(self) -> str:
        """Where to connect when a process does not start its own nats-server."""
        return self.nats_url or DEFAULT_NATS_URL

    def ensure_var_dir(self) -> Path:
        """Create the var dir (0700: it holds the admin key and the database) and return it."""
        self.var_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self.var_dir

    def effective_database_url(self) -> str:
        """``DATABASE_URL`` when set, else the SQLite file under the var dir (created)."""
        if self.database_url:
            return self.database_url
        db = self.ensure_var_dir().resolve() / "voxguard.db"
        return f"sqlite:///{db}"


def load_settings() -> Settings:
    """Read the settings from the environment now (no caching: tests change the env)."""
    return Settings()


__all__ = ["DEFAULT_HTTP", "DEFAULT_NATS_URL", "Settings", "load_settings", "parse_host_port"]
