"""Instatus API v1 (integrations.md section 2): upper-case statuses, ``statuses`` sets components."""

from __future__ import annotations

from dataclasses import dataclass

from voxguard.notify.config import ComponentStatus
from voxguard.notify.statuspages.base import Adapter, HttpCall, IncidentText

STATUS = {
    "operational": "OPERATIONAL",
    "degraded_performance": "DEGRADEDPERFORMANCE",
    "partial_outage": "PARTIALOUTAGE",
    "major_outage": "MAJOROUTAGE",
}


def started(iso: str) -> str:
    """The documented ``YYYY-MM-DD HH:MM:SS.mmm`` form (ISO 8601 acceptance is unconfirmed)."""
    return iso.replace("T", " ")[:23]


@dataclass
class InstatusAdapter(Adapter):
    page_id: str = ""
    api_key: str = ""
    provider: str = "instatus"

    def _h(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}

    def set_component(self, key: str, status: ComponentStatus) -> list[HttpCall]:
        cid = self.component_id(key)
        if cid is None:
            return []
        url = f"{self.base_url}/v1/{self.page_id}/components/{cid}"
        return [HttpCall("PUT", url, self._h(), {"status": STATUS[status]})]

    def open_incident(self, key: str, status: ComponentStatus, text: IncidentText, ref: str) -> list[HttpCall]:
        cid = self.component_id(key)
        if cid is None:
            return []
        body = {
            "name": text.title,
            "message": text.message,
            "components": [cid],
            "started": started(text.started),
            "status": "INVESTIGATING",
            "notify": True,
            "statuses": [{"id": cid, "status": STATUS[status]}],
        }
        return [
            HttpCall("POST", f"{self.base_url}/v1/{self.page_id}/incidents", self._h(), body, creates_incident=True)
        ]

    def resolve_incident(self, key: str, external_id: str | None, message: str) -> list[HttpCall]:
        cid = self.component_id(key)
        if cid is None:
            return []
        if external_id is None:
            return self.set_component(key, "operational")
        body = {
            "message": message,
            "status": "RESOLVED",
            "notify": True,
            "components": [cid],
            "statuses": [{"id": cid, "status": "OPERATIONAL"}],
        }
        url = f"{self.base_url}/v1/{self.page_id}/incidents/{external_id}/incident-updates"
        return [HttpCall("POST", url, self._h(), body)]
