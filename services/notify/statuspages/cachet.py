"""Cachet 2.x API (integrations.md section 3): integer statuses, ``X-Cachet-Token``.

Always sends ``enabled: true`` on component PUTs (one 2.x revision disables a component when it
is missing); an incident carries one component, and resolving takes an update plus a PUT.
"""

from __future__ import annotations

from dataclasses import dataclass

from voxguard.notify.config import ComponentStatus
from voxguard.notify.statuspages.base import Adapter, HttpCall, IncidentText

STATUS = {"operational": 1, "degraded_performance": 2, "partial_outage": 3, "major_outage": 4}
INVESTIGATING, FIXED = 1, 4


@dataclass
class CachetAdapter(Adapter):
    token: str = ""
    provider: str = "cachet"

    def _h(self) -> dict[str, str]:
        return {"X-Cachet-Token": self.token, "Content-Type": "application/json"}

    def set_component(self, key: str, status: ComponentStatus) -> list[HttpCall]:
        cid = self.component_id(key)
        if cid is None:
            return []
        body = {"status": STATUS[status], "enabled": True}
        return [HttpCall("PUT", f"{self.base_url}/components/{cid}", self._h(), body)]

    def open_incident(self, key: str, status: ComponentStatus, text: IncidentText, ref: str) -> list[HttpCall]:
        cid = self.component_id(key)
        if cid is None:
            return []
        body = {
            "name": text.title,
            "message": text.message,
            "status": INVESTIGATING,
            "visible": 1,
            "component_id": int(cid),
            "component_status": STATUS[status],
            "notify": True,
        }
        return [HttpCall("POST", f"{self.base_url}/incidents", self._h(), body, creates_incident=True)]

    def resolve_incident(self, key: str, external_id: str | None, message: str) -> list[HttpCall]:
        calls = []
        if external_id is not None:
            body = {"status": FIXED, "message": message}
            calls.append(HttpCall("POST", f"{self.base_url}/incidents/{external_id}/updates", self._h(), body))
        return calls + self.set_component(key, "operational")
