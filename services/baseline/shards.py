"""Who owns which baseline partition: leases in a JetStream key-value bucket.

Each worker writes a heartbeat key ``w.<worker>`` and holds leases ``p.<partition>`` whose value
names it. The bucket's TTL (``ttl_s``) removes keys that are not rewritten, so a killed worker's
heartbeat and leases vanish within the TTL and the survivors claim its partitions. Every
``renew_s`` a worker:

1. rewrites its heartbeat and renews its leases with a revision-checked update (a lease that was
   lost, i.e. expired and taken by another worker, fails the check and is given up at once);
2. reads the bucket once and computes its fair share: P partitions over the W live workers
   (sorted by id, the first ``P mod W`` get one more);
3. above its share it hands partitions back (``on_lose(k, True)`` saves their state first, then
   the lease is deleted so the next owner can take it at once); below it, it claims free ones
   (create-if-absent, then ``on_gain(k)`` loads their state before anything is decided for them).

A lease counts as held only until ``ttl_s - margin_s`` after its last successful renewal by the
local clock (``holds``), so a worker cut off from NATS stops deciding for its partitions
before anyone else can have claimed them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats.js.errors
from nats.js import api
from nats.js.kv import KeyValue

from voxguard.shared.bus import Bus

log = logging.getLogger("voxguard.baseline.shards")

BUCKET = "VOXGUARD_BASELINE_SHARDS"
LEASE_TTL_S = 5.0
RENEW_S = 1.0
MARGIN_S = 1.0

GainHook = Callable[[int], Awaitable[None]]
LoseHook = Callable[[int, bool], Awaitable[None]]


def new_worker_id() -> str:
    """Host name (the pod name under Kubernetes), process id and a random suffix."""
    raw = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    return re.sub(r"[^A-Za-z0-9_-]", "-", raw)[:100]


def fair_share(shards: int, workers: list[str], me: str) -> int:
    """Partitions ``me`` should hold: P // W, plus one for the first P mod W workers by id."""
    live = sorted(set(workers) | {me})
    base, extra = divmod(shards, len(live))
    return base + (1 if live.index(me) < extra else 0)


@dataclass
class Lease:
    revision: int
    valid_until: float  # monotonic


class ShardLeases:
    """This worker's partition leases; inert until ``start``."""

    def __init__(
        self,
        bus: Bus,
        shards: int,
        worker: str,
        *,
        on_gain: GainHook,
        on_lose: LoseHook,
        ttl_s: float = LEASE_TTL_S,
        renew_s: float = RENEW_S,
        margin_s: float = MARGIN_S,
    ) -> None:
        if shards < 1:
            raise ValueError("shards must be >= 1")
        if not ttl_s > renew_s + margin_s:
            raise ValueError("the lease TTL must exceed the renew interval plus the margin")
        self.bus = bus
        self.shards = shards
        self.worker = worker
        self.on_gain = on_gain
        self.on_lose = on_lose
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self.margin_s = margin_s
        self.leases: dict[int, Lease] = {}
        self.view: dict[int, str] = {}  # partition -> owner, as last read
        self.workers: list[str] = []
        self._kv: KeyValue | None = None
        self._task: asyncio.Task[None] | None = None
        self._mutex = asyncio.Lock()
        self.rounds = 0
        self.errors = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._kv = await self._bucket()
        self._task = asyncio.create_task(self._run(), name="baseline-shard-leases")

    async def stop(self) -> None:
        """Hand every partition back (state saved by ``on_lose``), then leave."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        async with self._mutex:
            for k in sorted(self.leases):
                await self._release(k)
            if self._kv is not None:
                with contextlib.suppress(Exception):
                    await self._kv.delete(self._worker_key())

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def owned(self) -> list[int]:
        return sorted(self.leases)

    def holds(self, k: int) -> bool:
        """Whether partition ``k`` is ours by a lease renewed recently enough to trust."""
        lease = self.leases.get(k)
        return lease is not None and time.monotonic() < lease.valid_until

    async def _drop_expired(self) -> None:
        """Give up (without saving: another worker may own them now) every lapsed lease."""
        now = time.monotonic()
        for k in [k for k, lease in self.leases.items() if now >= lease.valid_until]:
            self.leases.pop(k, None)
            log.warning("lease on partition %d lapsed; giving it up", k)
            await self.on_lose(k, False)

    # -- one round ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                async with self._mutex:
                    await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.errors += 1
                log.warning("shard lease round failed: %r", exc)
            await asyncio.sleep(max(0.05, self.renew_s - (time.monotonic() - started)))

    async def round(self) -> None:
        """Heartbeat, renew, read the bucket, then release or claim towards the fair share."""
        kv = self._require_kv()
        await kv.put(self._worker_key(), self._payload())
        await self._renew_all()
        await self._drop_expired()
        entries = await self._snapshot()
        self.workers = sorted({k[2:] for k in entries if k.startswith("w.")} | {self.worker})
        self.view = {}
        for key, value in entries.items():
            if key.startswith("p."):
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    self.view[int(key[2:])] = str(json.loads(value)["worker"])
        for k in list(self.leases):
            if self.view.get(k) not in (None, self.worker):
                log.warning("partition %d is held by %s; giving it up", k, self.view.get(k))
                self.leases.pop(k, None)
                await self.on_lose(k, False)
        quota = fair_share(self.shards, self.workers, self.worker)
        mine = self.owned
        if len(mine) > quota:
            for k in mine[quota:]:
                await self._release(k)
        elif len(mine) < quota:
            free = [k for k in range(self.shards) if k not in self.view]
            for k in free[: quota - len(mine)]:
                await self._claim(k)
        self.rounds += 1

    async def _renew_all(self) -> None:
        kv = self._require_kv()
        for k in list(self.leases):
            lease = self.leases.get(k)
            if lease is None:
                continue
            sent = time.monotonic()
            try:
                rev = await kv.update(self._lease_key(k), self._payload(), last=lease.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                if self.leases.pop(k, None) is not None:
                    log.warning("lease on partition %d was lost; giving it up", k)
                    await self.on_lose(k, False)
                continue
            if k in self.leases:
                self.leases[k] = Lease(rev, sent + self.ttl_s - self.margin_s)

    async def _claim(self, k: int) -> None:
        kv = self._require_kv()
        sent = time.monotonic()
        try:
            rev = await kv.create(self._lease_key(k), self._payload())
        except nats.js.errors.KeyWrongLastSequenceError:
            return  # someone was faster
        self.leases[k] = Lease(rev, sent + self.ttl_s - self.margin_s)
        try:
            await self.on_gain(k)
        except Exception:
            log.exception("taking partition %d failed; handing it back", k)
            lease = self.leases.pop(k)
            with contextlib.suppress(Exception):
                await kv.delete(self._lease_key(k), last=lease.revision)
            return
        log.info("partition %d claimed by %s", k, self.worker)
        await self._renew_all()  # loading may have taken a while

    async def _release(self, k: int) -> None:
        lease = self.leases.pop(k, None)
        if lease is None:
            return
        try:
            await self.on_lose(k, True)
        finally:
            with contextlib.suppress(Exception):
                await self._require_kv().delete(self._lease_key(k), last=lease.revision)
        log.info("partition %d released by %s", k, self.worker)

    # -- bucket ---------------------------------------------------------------------------

    async def _bucket(self) -> KeyValue:
        name = self.bus.stream_name(BUCKET)
        try:
            return await self.bus.js.key_value(name)
        except nats.js.errors.BucketNotFoundError:
            pass
        cfg = api.KeyValueConfig(bucket=name, history=1, ttl=self.ttl_s, storage=api.StorageType.MEMORY,
                                 description="baseline partition leases and worker heartbeats")  # fmt: skip
        try:
            return await self.bus.js.create_key_value(cfg)
        except nats.js.errors.BadRequestError:  # created meanwhile by another worker
            return await self.bus.js.key_value(name)

    async def _snapshot(self) -> dict[str, bytes]:
        """Every live key and its value (deleted and expired keys are absent)."""
        watcher = await self._require_kv().watchall(ignore_deletes=True)
        out: dict[str, bytes] = {}
        try:
            async with asyncio.timeout(max(2.0, self.ttl_s - self.margin_s)):
                async for entry in watcher:
                    if entry is None:
                        break
                    out[entry.key] = entry.value or b""
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()
        return out

    def _require_kv(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("ShardLeases not started")
        return self._kv

    def _worker_key(self) -> str:
        return f"w.{self.worker}"

    @staticmethod
    def _lease_key(k: int) -> str:
        return f"p.{k}"

    def _payload(self) -> bytes:
        return json.dumps({"worker": self.worker, "at": time.time()}).encode()


__all__ = ["BUCKET", "LEASE_TTL_S", "RENEW_S", "Lease", "ShardLeases", "fair_share", "new_worker_id"]
