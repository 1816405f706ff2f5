"""Status-page providers behind one adapter interface, and the engine that drives them."""

from __future__ import annotations

from voxguard.notify.config import CachetProvider, GenericProvider, InstatusProvider, Provider, StatuspageProvider
from voxguard.notify.statuspages.base import Adapter, HttpCall, IncidentText
from voxguard.notify.statuspages.cachet import CachetAdapter
from voxguard.notify.statuspages.generic import GenericAdapter
from voxguard.notify.statuspages.instatus import InstatusAdapter
from voxguard.notify.statuspages.statuspage import StatuspageAdapter

__all__ = ["Adapter", "HttpCall", "IncidentText", "make_adapter"]


def make_adapter(name: str, cfg: Provider) -> Adapter:
    ids = dict(cfg.component_ids)
    if isinstance(cfg, StatuspageProvider):
        return StatuspageAdapter(name, cfg.base_url, ids, page_id=cfg.page_id, api_key=cfg.api_key.get_secret_value())
    if isinstance(cfg, InstatusProvider):
        return InstatusAdapter(name, cfg.base_url, ids, page_id=cfg.page_id, api_key=cfg.api_key.get_secret_value())
    if isinstance(cfg, CachetProvider):
        return CachetAdapter(name, cfg.base_url, ids, token=cfg.token.get_secret_value())
    if isinstance(cfg, GenericProvider):
        return GenericAdapter(name, cfg.base_url, ids, secret=cfg.secret.get_secret_value() if cfg.secret else None)
    raise TypeError(f"unknown status-page provider {type(cfg).__name__}")
