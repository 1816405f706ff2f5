"""One adapter interface for every status-page provider: plan the HTTP calls, parse the answer.

Adapters only *plan* requests (method, URL, headers, JSON); the sender executes them through
the outbox, and the dry-run preview shows the same plans with the credentials masked, so what
the preview shows is exactly what would be sent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from voxguard.notify.config import ComponentStatus

OPERATIONAL: ComponentStatus = "operational"
RANK: dict[str, int] = {"operational": 0, "degraded_performance": 1, "partial_outage": 2, "major_outage": 3}
SECRET_HEADERS = {"authorization", "x-cachet-token", "webhook-signature"}


@dataclass
class HttpCall:
    method: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any] | None = None
    creates_incident: bool = False  # its answer carries the new incident id

    def redacted(self) -> dict[str, Any]:
        hdrs = {k: ("***" if k.lower() in SECRET_HEADERS else v) for k, v in self.headers.items()}
        return {"method": self.method, "url": self.url, "headers": hdrs, "body": self.body}


@dataclass
class IncidentText:
    title: str
    message: str
    started: str  # ISO 8601


@dataclass
class Adapter(ABC):
    """Subclasses map our status names and write the vendor's request shapes."""

    name: str
    base_url: str
    component_ids: dict[str, str] = field(default_factory=dict)
    provider: str = "generic"
    echo_ref: bool = False
    secret: str | None = None

    def component_id(self, key: str) -> str | None:
        return self.component_ids.get(key)

    @abstractmethod
    def set_component(self, key: str, status: ComponentStatus) -> list[HttpCall]: ...

    @abstractmethod
    def open_incident(self, key: str, status: ComponentStatus, text: IncidentText, ref: str) -> list[HttpCall]: ...

    @abstractmethod
    def resolve_incident(self, key: str, external_id: str | None, message: str) -> list[HttpCall]: ...

    def find_incident(self, ref: str) -> HttpCall | None:
        """A read that lists open incidents, to reconcile a create whose outcome is unknown."""
        return None

    def match_incident(self, answer: Any, ref: str) -> str | None:
        """The id of the incident carrying our ``ref`` in a ``find_incident`` answer."""
        return None

    def incident_id(self, answer: Any) -> str | None:
        """The vendor's incident id in a create answer (``{"id": ...}`` by default)."""
        if isinstance(answer, dict):
            value = answer.get("id")
            if value is None and isinstance(answer.get("data"), dict):
                value = answer["data"].get("id")
            return str(value) if value is not None else None
        return None
