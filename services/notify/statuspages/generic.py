"""A generic JSON webhook for custom status pages: one POST per change, our own status names.

Signed like our notification webhooks when a secret is configured, so the receiver can trust it.
"""

from __future__ import annotations

from dataclasses import dataclass

from voxguard.notify.config import ComponentStatus
from voxguard.notify.statuspages.base import Adapter, HttpCall, IncidentText


@dataclass
class GenericAdapter(Adapter):
    provider: str = "generic"
    secret: str | None = None  # whsec_..., signs each POST like our webhooks
    echo_ref: bool = True  # no vendor id: our ref identifies the incident

    def component_id(self, key: str) -> str | None:
        return self.component_ids.get(key, key)  # custom pages may use our keys as they are

    def _post(self, body: dict[str, object], creates: bool = False) -> list[HttpCall]:
        return [HttpCall("POST", self.base_url, {"Content-Type": "application/json"}, body, creates_incident=creates)]

    def set_component(self, key: str, status: ComponentStatus) -> list[HttpCall]:
        return self._post({"type": "component.status", "component": self.component_id(key), "status": status})

    def open_incident(self, key: str, status: ComponentStatus, text: IncidentText, ref: str) -> list[HttpCall]:
        return self._post(
            {
                "type": "incident.opened",
                "ref": ref,
                "component": self.component_id(key),
                "status": status,
                "title": text.title,
                "message": text.message,
                "started": text.started,
            },
            creates=True,
        )

    def resolve_incident(self, key: str, external_id: str | None, message: str) -> list[HttpCall]:
        return self._post(
            {
                "type": "incident.resolved",
                "ref": external_id,
                "component": self.component_id(key),
                "status": "operational",
                "message": message,
            }
        )

    def incident_id(self, answer: object) -> str | None:
        return None  # the receiver keys on our ref
