"""Atlassian Statuspage manage API v1 (integrations.md section 1).

Component changes ride inside the incident call (the ``components`` map) to stay within the
1 request/s budget; the alert reference goes in ``metadata`` for reconciliation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voxguard.notify.config import ComponentStatus
from voxguard.notify.statuspages.base import Adapter, HttpCall, IncidentText

_IMPACT = {"degraded_performance": "minor", "partial_outage": "major", "major_outage": "critical"}


@dataclass
class StatuspageAdapter(Adapter):
    page_id: str = ""
    api_key: str = ""
    provider: str = "statuspage"

    def _h(self) -> dict[str, str]:
        return {"Authorization": f"OAuth {self.api_key}", "Content-Type": "application/json"}

    def set_component(self, key: str, status: ComponentStatus) -> list[HttpCall]:
        cid = self.component_id(key)
        if cid is None:
            return []
        url = f"{self.base_url}/pages/{self.page_id}/components/{cid}"
        return [HttpCall("PATCH", url, self._h(), {"component": {"status": status}})]

    def open_incident(self, key: str, status: ComponentStatus, text: IncidentText, ref: str) -> list[HttpCall]:
        cid = self.component_id(key)
        if cid is None:
            return []
        body = {
            "incident": {
                "name": text.title[:255],
                "status": "investigating",
                "body": text.message[:25000],
                "impact_override": _IMPACT.get(status, "minor"),
                "components": {cid: status},
                "component_ids": [cid],
                "deliver_notifications": True,
                "metadata": {"voxguard": {"ref": ref}},
            }
        }
        url = f"{self.base_url}/pages/{self.page_id}/incidents"
        return [HttpCall("POST", url, self._h(), body, creates_incident=True)]

    def find_incident(self, ref: str) -> HttpCall | None:
        url = f"{self.base_url}/pages/{self.page_id}/incidents/unresolved?page=1&per_page=100"
        return HttpCall("GET", url, {"Authorization": f"OAuth {self.api_key}"})

    def match_incident(self, answer: Any, ref: str) -> str | None:
        for inc in answer if isinstance(answer, list) else []:
            meta = inc.get("metadata") if isinstance(inc, dict) else None
            if isinstance(meta, dict) and isinstance(meta.get("voxguard"), dict) and meta["voxguard"].get("ref") == ref:
                return str(inc.get("id"))
        return None

    def resolve_incident(self, key: str, external_id: str | None, message: str) -> list[HttpCall]:
        cid = self.component_id(key)
        if cid is None:
            return []
        if external_id is None:
            return self.set_component(key, "operational")
        body = {"incident": {"status": "resolved", "body": message, "components": {cid: "operational"}}}
        url = f"{self.base_url}/pages/{self.page_id}/incidents/{external_id}"
        return [HttpCall("PATCH", url, self._h(), body)]
