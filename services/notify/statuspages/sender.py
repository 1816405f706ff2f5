"""Executes one planned status-page action from the outbox (an outbox "channel" per provider).

The incident id a create returns is stored before the next call, so a retry of a half-done
action never creates a second incident, and the later resolve finds what to resolve.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson

from voxguard.notify import signing
from voxguard.notify.channels.base import SendResult, default_classify, http_send, json_or_none
from voxguard.notify.statuspages.base import Adapter, HttpCall, IncidentText
from voxguard.notify.store import Store


def plan(adapter: Adapter, action: dict[str, Any], external_id: str | None) -> list[HttpCall]:
    """The calls for an outbox action: ``component``, ``open`` or ``resolve``."""
    kind, key = action["action"], action["component"]
    if kind == "component":
        return adapter.set_component(key, action["status"])
    if kind == "open":
        text = IncidentText(action["title"], action["message"], action["started"])
        return adapter.open_incident(key, action["status"], text, action["ref"])
    if kind == "resolve":
        return adapter.resolve_incident(key, external_id, action["message"])
    raise ValueError(f"unknown status-page action {kind!r}")


class StatusPageSender:
    """Runs the planned calls of one action; see the module docstring."""

    def __init__(self, channel: str, adapter: Adapter, store: Store, *, dry_run: bool = False) -> None:
        self.name = channel
        self.provider = adapter.provider
        self.adapter = adapter
        self.store = store
        self.dry_run = dry_run

    async def _reconciled(self, ref: str, client: httpx.AsyncClient, timeout_s: float) -> bool:
        """After a create timed out, look for it (integrations.md 1.5) before creating again."""
        if await self.store.run(self.store.get_ref, self.name, f"{ref}#unknown") is None:
            return False
        find = self.adapter.find_incident(ref)
        if find is None:
            return False
        holder: dict[str, Any] = {}

        def keep(resp: httpx.Response) -> SendResult:
            holder["json"] = json_or_none(resp)
            return default_classify(resp)

        res = await http_send(
            client, "GET", find.url, body=b"", headers=find.headers, timeout_s=timeout_s, classify=keep
        )
        found = self.adapter.match_incident(holder.get("json"), ref) if res.ok else None
        if found is None:
            return False
        await self.store.run(self.store.set_ref, self.name, ref, found)
        return True

    async def send_payload(
        self, payload: dict[str, Any], key: str, client: httpx.AsyncClient, timeout_s: float
    ) -> SendResult:

        ref = payload.get("ref") or ""
        ext = await self.store.run(self.store.get_ref, self.name, ref) if ref else None
        calls = plan(self.adapter, payload, ext)
        if payload["action"] == "open" and ext is not None:
            calls = [c for c in calls if not c.creates_incident]  # created on an earlier attempt
        if self.dry_run:
            return SendResult(True, None, detail="dry run: " + "; ".join(f"{c.method} {c.url}" for c in calls))
        started = time.perf_counter()
        last = SendResult(True, None, detail="nothing to send (component not mapped on this provider)")
        for call in calls:
            if call.creates_incident and ref and await self._reconciled(ref, client, timeout_s):
                continue  # an earlier attempt did create it: never open a second incident
            body = orjson.dumps(call.body) if call.body is not None else b""
            headers = dict(call.headers)
            if self.adapter.secret:
                headers.update(signing.headers(self.adapter.secret, "msg_" + key.replace(":", "_")[-60:], body))
            resp_holder: dict[str, Any] = {}

            def classify(resp: httpx.Response, holder: dict[str, Any] = resp_holder) -> SendResult:
                holder["json"] = json_or_none(resp)
                return default_classify(resp)

            last = await http_send(
                client, call.method, call.url, body=body, headers=headers, timeout_s=timeout_s, classify=classify
            )
            if not last.ok:
                if call.creates_incident and last.code is None and ref:  # timeout: it may exist anyway
                    await self.store.run(self.store.set_ref, self.name, f"{ref}#unknown", "1")
                break
            if call.creates_incident:
                new_id = self.adapter.incident_id(resp_holder.get("json")) or (ref if self.adapter.echo_ref else None)
                if new_id is None:
                    last = SendResult(
                        True, last.code, detail="incident created but the answer carried no id; resolve will reset"
                    )
                else:
                    await self.store.run(self.store.set_ref, self.name, ref, new_id)
                    last.external_id = new_id
        last.latency_ms = (time.perf_counter() - started) * 1000
        return last
