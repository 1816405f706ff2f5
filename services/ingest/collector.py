"""The UDP collector: a dedicated thread in a tight ``recvfrom_into`` loop.

Receiving stays outside the asyncio event loop so HTTP and NATS work never delays the
sockets; each wake-up drains up to ``batch_size`` datagrams per socket into one batch
for the pipeline, and closed ticks are handed to ``sink`` (called from this thread:
the service passes a thread-safe hand-off to its event loop).
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from voxguard.ingest.closedtick import ClosedTick
from voxguard.ingest.pipeline import Pipeline
from voxguard.ingest.udpstats import kernel_drops, socket_inode
from voxguard.shared.config import VoxGuardConfig

log = logging.getLogger("voxguard.ingest.collector")

MAX_DATAGRAM = 65_535
TickSink = Callable[[ClosedTick], None]


@dataclass(slots=True)
class Listener:
    """One bound UDP socket."""

    name: str  # netflow | ipfix | sflow
    sock: socket.socket
    inode: int
    drops_at_start: int = 0

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        return int(self.sock.getsockname()[1])


class Collector:
    """Owns the listeners and the receive thread; inert until ``start``."""

    def __init__(
        self,
        config: VoxGuardConfig,
        sink: TickSink,
        *,
        pipeline: Pipeline | None = None,
        batch_size: int = 256,
        max_batch_wait: float = 0.005,
        host: str | None = None,
    ):
        self.config = config
        self.sink = sink
        self.pipeline = pipeline or Pipeline(config)
        self.batch_size = batch_size
        self.max_batch_wait = max_batch_wait
        self.host = host if host is not None else config.ingest.host
        self.listeners: list[Listener] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.failed_batches = 0
        self._last_failure_log = 0.0
        self._drops_reported: dict[str, int] = {}

    def _bind(self, name: str, port: int) -> Listener:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):  # capped by net.core.rmem_max: the kernel keeps its maximum
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.config.ingest.receive_buffer_bytes)
        sock.bind((self.host, port))
        sock.setblocking(False)
        return Listener(name, sock, socket_inode(sock))

    def start(self) -> None:
        """Bind the configured ports and start receiving."""
        ing = self.config.ingest
        wanted = [("netflow", ing.netflow_port), ("ipfix", ing.ipfix_port), ("sflow", ing.sflow_port)]
        seen: set[int] = set()
        try:
            for name, port in wanted:
                if port and port in seen:
                    continue
                seen.add(port)
                self.listeners.append(self._bind(name, port))
        except OSError:
            self.close()
            raise
        drops = kernel_drops({lst.inode for lst in self.listeners})
        for lst in self.listeners:
            lst.drops_at_start = drops.get(lst.inode, 0)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="voxguard-collector", daemon=True)
        self._thread.start()
        log.info("collector listening on %s", ", ".join(f"{x.name} udp/{x.port}" for x in self.listeners))

    def ports(self) -> dict[str, int]:
        """Listener name -> bound port."""
        return {x.name: x.port for x in self.listeners}

    def kernel_drops(self) -> dict[str, int]:
        """Datagrams the kernel dropped per listener since start."""
        drops = kernel_drops({x.inode for x in self.listeners})
        return {x.name: drops.get(x.inode, 0) - x.drops_at_start for x in self.listeners}

    def stop(self, timeout: float = 5.0) -> None:
        """Stop receiving, flush the last tick to the sink, close the sockets."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.close()

    def close(self) -> None:
        """Close the sockets."""
        for lst in self.listeners:
            lst.sock.close()
        self.listeners = []

    @property
    def running(self) -> bool:
        """Whether the receive thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        for lst in self.listeners:
            sel.register(lst.sock, selectors.EVENT_READ, lst)
        buf = bytearray(MAX_DATAGRAM)
        view = memoryview(buf)
        pipeline = self.pipeline
        batch_size = self.batch_size
        last_drop_check = 0.0
        batch: list[tuple[bytes, str]] = []
        deadline = 0.0  # when the batch being gathered must be processed, full or not
        max_wait = self.max_batch_wait
        try:
            while not self._stop.is_set():
                wait = 0.05 if not batch else max(0.0, deadline - time.monotonic())
                events = sel.select(timeout=wait)
                for key, _ in events:
                    recv = key.fileobj.recvfrom_into  # type: ignore[union-attr]
                    for _ in range(batch_size):
                        try:
                            n, addr = recv(buf)
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError as exc:  # e.g. ICMP errors surfacing on the socket
                            log.debug("recv error: %s", exc)
                            break
                        if not batch:
                            deadline = time.monotonic() + max_wait
                        batch.append((view[:n].tobytes(), addr[0]))
                now = time.time()
                # per-batch costs are fixed, so a batch is processed full or after max_wait
                if batch and (len(batch) >= batch_size or time.monotonic() >= deadline):
                    started = time.perf_counter()
                    try:
                        pipeline.process(batch, now)
                    except Exception:  # a bug must cost one batch, never the collector
                        self.failed_batches += 1
                        if now - self._last_failure_log > 10:
                            self._last_failure_log = now
                            log.exception("batch of %d datagrams failed (%d so far)", len(batch), self.failed_batches)
                    pipeline.metrics.batch_seconds.observe(time.perf_counter() - started)
                    batch = []
                if pipeline.tick_due(now):
                    self._emit(pipeline.flush(now))
                if now - last_drop_check >= 1.0:
                    last_drop_check = now
                    self._update_drop_metrics()
            if batch:
                pipeline.process(batch, time.time())
            self._emit(pipeline.flush(time.time()))
        except BaseException as exc:  # the thread must not die silently
            self.error = exc
            log.exception("collector thread stopped on an error")
        finally:
            sel.close()

    def _emit(self, ticks: ClosedTick) -> None:
        if not ticks:
            return
        try:
            self.sink(ticks)
        except Exception:
            self.pipeline.metrics.publish_failures.inc(len(ticks))
            log.exception("tick sink failed; %d ticks lost", len(ticks))

    def _update_drop_metrics(self) -> None:
        for name, dropped in self.kernel_drops().items():
            delta = dropped - self._drops_reported.get(name, 0)
            if delta > 0:
                self.pipeline.metrics.socket_drops.labels(name).inc(delta)
                self._drops_reported[name] = dropped
