"""Loading a config for a command: the schema in ``shared.config`` plus the sections that
other modules own (runbooks), so every error is reported at once, at start."""

from __future__ import annotations

from pathlib import Path

from voxguard.shared.config import ConfigError, VoxGuardConfig, load_config
from voxguard.shared.runbooks import load_runbooks


def load_full_config(path: str | Path) -> VoxGuardConfig:
    """``load_config`` and the runbooks section; raises ConfigError listing every problem."""
    cfg = load_config(path)
    try:
        load_runbooks(cfg.runbooks)
    except ConfigError as exc:
        raise ConfigError(str(path), exc.errors) from None
    return cfg
