"""Make what ExaBGP announces equal to what the database desires.

``announced`` is what the *current* ExaBGP acknowledged: it is emptied whenever a new bridge
connects (ExaBGP or the service restarted) and when the BGP session comes back, so the next pass
re-announces everything desired. A pass also retires rules whose TTL ran out or whose hold-down
ended. Ordering keeps whitelisted sources safe at every instant: ``accept`` guards are announced
(and acknowledged) before the rules they guard, and withdrawn after them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from voxguard.mitigate.flowspec import FlowRoute, batch_command
from voxguard.mitigate.store import DesiredRule, RuleRow, Store

log = logging.getLogger("voxguard.mitigate.reconcile")

Notify = Callable[[list[RuleRow], str], Awaitable[None]]
BATCH = 50  # routes per ExaBGP command (see flowspec.batch_command)
MAX_ROUTES_PER_PASS = 1000  # ~3 s of ExaBGP work: a mass re-announce never delays a new rule longer
PER_ROUTE_S = 0.01  # ExaBGP needs ~2-4 ms per flow route; the ack wait grows with the work sent


class Speaker(Protocol):
    """What the reconciler needs from the ExaBGP bridge."""

    @property
    def connected(self) -> bool: ...

    async def send_many(self, commands: list[str], timeout: float) -> list[bool | None]: ...


@dataclass
class PassResult:
    """What one reconcile pass did (for logs, metrics and the benchmark)."""

    desired: int = 0
    announced: int = 0
    withdrawn: int = 0
    failed: int = 0
    unacked: int = 0
    expired: int = 0
    seconds: float = 0.0
    connected: bool = False
    more: bool = False  # work was left for the next pass (MAX_ROUTES_PER_PASS)
    failed_ids: list[str] = field(default_factory=list)


class Reconciler:
    """Desired rules (database) -> announced routes (ExaBGP), one pass at a time."""

    def __init__(self, store: Store, speaker: Speaker, notify: Notify, *, ack_timeout: float = 10.0) -> None:
        self.store = store
        self.speaker = speaker
        self.notify = notify
        self.ack_timeout = ack_timeout
        self.announced: dict[str, str] = {}  # route key -> route body, as acked by ExaBGP
        self._routes: dict[str, list[FlowRoute]] = {}  # rule id -> routes (a rule's match never changes)
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.passes = 0
        self.on_pass: Callable[[PassResult], Awaitable[None]] | None = None  # e.g. refresh gauges
        self.last: PassResult | None = None

    def reset(self) -> None:
        """ExaBGP's RIB is empty (new process or session): re-announce everything."""
        self.announced.clear()
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    async def run_forever(self, interval: float) -> None:
        """Pass on every wake-up and at least every ``interval`` seconds (TTL, hold-down, drift)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconcile pass failed")
                await asyncio.sleep(min(interval, 1.0))

    async def run_once(self) -> PassResult:
        async with self._lock:
            started = time.perf_counter()
            res = await self._pass()
            res.seconds = time.perf_counter() - started
            self.passes += 1
            if self.on_pass is not None:
                await self.on_pass(res)
            self.last = res
            return res

    async def _pass(self) -> PassResult:
        res = PassResult(connected=self.speaker.connected)
        retired = await asyncio.to_thread(self.store.due_for_withdrawal)
        res.expired = len(retired)
        if retired:
            await self.notify(retired, "withdrawn")
        rows = await asyncio.to_thread(self.store.desired)
        routes: dict[str, tuple[DesiredRule, FlowRoute]] = {}
        cache: dict[str, list[FlowRoute]] = {}
        for row in rows:
            built = cache[row.id] = self._routes.get(row.id) or row.routes()
            for r in built:
                routes.setdefault(r.key, (row, r))
        self._routes = cache
        res.desired = len(routes)
        if not self.speaker.connected:
            return res

        stale = [k for k in self.announced if k not in routes]
        # withdraw guarded rules before their accept guards
        stale.sort(key=lambda k: self.announced[k].endswith("then { accept; } }"))
        wanted = [(k, r) for k, (_, r) in routes.items() if self.announced.get(k) != r.body()]
        guards = [(k, r) for k, r in wanted if r.action == "accept"]
        others = [(k, r) for k, r in wanted if r.action != "accept"]
        others.sort(key=lambda kr: routes[kr[0]][0].state != "proposed")  # new rules before re-announces
        if len(stale) > MAX_ROUTES_PER_PASS or len(others) > MAX_ROUTES_PER_PASS:
            stale, others = stale[:MAX_ROUTES_PER_PASS], others[:MAX_ROUTES_PER_PASS]
            res.more = True
            self.wake()  # the rest in the next pass, after anything new that arrived meanwhile

        if stale:
            acks = await self._send("withdraw", [(k, self.announced[k]) for k in stale])
            for k, ok in acks.items():
                if ok is None:
                    res.unacked += 1
                else:  # "error" on withdraw: ExaBGP does not hold it; either way it is gone
                    self.announced.pop(k, None)
                    res.withdrawn += 1

        failed_rows: dict[str, DesiredRule] = {}
        failed_groups: set[str] = set()
        for batch in (guards, others):
            batch = [(k, r) for k, r in batch if routes[k][0].group_id not in failed_groups]
            if not batch:
                continue
            acks = await self._send("announce", [(k, r.body()) for k, r in batch])
            for k, r in batch:
                ok = acks.get(k)
                row = routes[k][0]
                if ok:
                    self.announced[k] = r.body()
                    res.announced += 1
                elif ok is False:
                    failed_rows[row.id] = row
                    if row.group_id:
                        failed_groups.add(row.group_id)
                else:
                    res.unacked += 1
        for row in rows:  # a guarded rule whose guard failed must not stay out there either
            if row.group_id in failed_groups:
                failed_rows.setdefault(row.id, row)

        if failed_rows:
            res.failed = len(failed_rows)
            res.failed_ids = list(failed_rows)
            changed = []
            for rid in failed_rows:
                row_t = await asyncio.to_thread(
                    self.store.transition,
                    rid,
                    "failed",
                    from_states=("proposed", "announced"),
                    reason="ExaBGP refused the command",
                )
                if row_t is not None:
                    changed.append(row_t)
            if changed:
                await self.notify(changed, "failed")
            self.wake()  # next pass withdraws what of them did get out

        done = [
            row.id
            for row in rows
            if row.state == "proposed"
            and row.id not in failed_rows
            and all(r.key in self.announced for r in cache[row.id])
        ]
        if done:
            newly = await asyncio.to_thread(self.store.mark_announced, done)
            if newly:
                await self.notify(newly, "announced")
        if res.unacked:
            self.wake()
        return res

    async def _send(self, verb: str, items: list[tuple[str, str]]) -> dict[str, bool | None]:
        """Batched commands; a refused batch is retried route by route to find the bad one."""
        batches = [items[i : i + BATCH] for i in range(0, len(items), BATCH)]
        timeout = self.ack_timeout + len(items) * PER_ROUTE_S
        acks = await self.speaker.send_many([batch_command(verb, [body for _, body in b]) for b in batches], timeout)
        out: dict[str, bool | None] = {}
        retry: list[tuple[str, str]] = []
        for b, ok in zip(batches, acks, strict=True):
            if ok is False and len(b) > 1:
                retry += b
            else:
                out.update({k: ok for k, _ in b})
        if retry:
            single = await self.speaker.send_many([batch_command(verb, [body]) for _, body in retry], self.ack_timeout)
            out.update({k: ok for (k, _), ok in zip(retry, single, strict=True)})
        return out
