"""The dispatcher's moving parts: a lane (one source feeding some sinks) and a sink worker.

A lane reads deliveries from its source in a worker thread (reading blocks, and transforming
there keeps the event loop free), and appends each batch to the queue of every sink it feeds.
Each sink has its own worker task, so a slow or failing sink only ever waits for itself. A
delivery is acknowledged once every sink of its lane has sent or dead-lettered it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from eventbus_core._deadletter import DeadLetter
from eventbus_core._dispatch_stats import SinkStats
from eventbus_core._errors import PermanentSinkError, TransientSinkError
from eventbus_core._event import Event
from eventbus_core._retry import RetryPolicy
from eventbus_core._secrets import redact_url
from eventbus_core._sink import Sink
from eventbus_core._source import AckableSource

__all__ = ["AckState", "Item", "Lane", "SinkWorker"]

log = logging.getLogger("eventbus.dispatcher")


@dataclass(eq=False, slots=True)
class AckState:
    """How many sinks of the lane still owe an outcome for one delivery."""

    token: Any
    remaining: int
    keep_pending: bool = False  # some sink could neither send nor dead-letter it


@dataclass(eq=False, slots=True)
class Item:
    """One event on its way to one sink (the payload is shared by the lane's sinks)."""

    payload: dict[str, Any]
    ack: AckState
    received_at: float


class Lane:
    """One source and the sinks it feeds (see the module docstring)."""

    def __init__(
        self,
        name: str,
        source: AckableSource,
        prepare: Callable[[Event], dict[str, Any]],
        *,
        durable: bool,
    ) -> None:
        self.name = name
        self.source = source
        self.prepare = prepare
        # One thread per source: sources are single-threaded (a Redis consumer's reads and
        # acknowledgements share state), and a blocked read must not hold other lanes up.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"eventbus-{name}")
        self.durable = durable
        self._acks: set[asyncio.Future[None]] = set()
        self.workers: list[SinkWorker] = []
        self.read = 0
        self.acked = 0
        self.ack_errors = 0

    def _read(self, max_items: int, timeout: float) -> list[tuple[Any, dict[str, Any]]]:
        return [(d.token, self.prepare(d.event)) for d in self.source.read(max_items, timeout)]

    def figures(self) -> dict[str, Any]:
        """This lane's counters, with the source's own figures if it offers `figures()`."""
        out: dict[str, Any] = {
            "source": self.source.name,
            "read": self.read,
            "acked": self.acked,
            "ack_errors": self.ack_errors,
        }
        figures = getattr(self.source, "figures", None)
        if callable(figures):
            try:
                out.update(figures())
            except Exception as exc:  # figures are informative; never fail stats() for them
                out["figures_error"] = str(exc)
        return out

    def exhausted(self) -> bool:
        """True once the source will deliver nothing more (a stopped memory bus)."""
        return bool(getattr(self.source, "exhausted", False))

    async def read_loop(self, stopping: asyncio.Event, max_items: int, poll: float) -> None:
        """Read and distribute until the source ends, or stop is requested.

        On stop, a durable source is left at once (what is unread stays in it); a memory
        subscription is drained first, since its buffered events exist nowhere else.
        """
        loop = asyncio.get_running_loop()
        try:
            while not (stopping.is_set() and self.durable):
                for worker in self.workers:
                    await worker.space.wait()  # back-pressure: leave events in the source
                timeout = 0.0 if stopping.is_set() else poll
                got = await loop.run_in_executor(self.executor, self._read, max_items, timeout)
                if got:
                    self._distribute(got)
                elif self.exhausted() or stopping.is_set():
                    return
        finally:
            for worker in self.workers:
                worker.finish_input()

    def _distribute(self, got: list[tuple[Any, dict[str, Any]]]) -> None:
        self.read += len(got)
        now = time.monotonic()
        n = len(self.workers)
        items = [Item(payload, AckState(token, n), now) for token, payload in got]
        for worker in self.workers:
            worker.put(items)

    async def settle(self, items: Sequence[Item], *, ok: bool) -> None:
        """Record one sink's outcome for `items`; acknowledge those every sink is done with."""
        tokens = []
        for item in items:
            state = item.ack
            state.remaining -= 1
            if not ok:
                state.keep_pending = True
            if state.remaining == 0 and not state.keep_pending:
                tokens.append(state.token)
        if not tokens or not self.durable:
            self.acked += len(tokens)
            return
        # Not awaited: the sink worker goes on with its next batch while the ack waits for
        # the source's thread (which may be blocked in a read for up to the poll interval).
        future = asyncio.get_running_loop().run_in_executor(self.executor, self._ack, tokens)
        self._acks.add(future)
        future.add_done_callback(self._acks.discard)

    def _ack(self, tokens: list[Any]) -> None:
        try:
            self.source.ack(tokens)
        except Exception as exc:
            # Not fatal: unacknowledged entries are delivered again, and LogIDs de-duplicate.
            self.ack_errors += 1
            log.warning(
                "lane %s: acknowledging %d deliveries failed: %s",
                self.name,
                len(tokens),
                redact_url(str(exc)),
            )
        else:
            self.acked += len(tokens)

    async def close(self) -> None:
        """Wait for pending acknowledgements, then close the source (in its own thread)."""
        if self._acks:
            await asyncio.gather(*self._acks, return_exceptions=True)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.executor, self.source.close)
        except Exception as exc:
            log.warning("closing source of lane %s failed: %s", self.name, exc)
        self.executor.shutdown(wait=False)


class SinkWorker:
    """Batches one sink's queue by size and time and sends with retries (one task)."""

    def __init__(
        self,
        sink: Sink,
        lane: Lane,
        *,
        batch_size: int,
        flush_interval: float,
        queue_size: int,
        retry: RetryPolicy,
        dead_letter: DeadLetter | None,
        scrub: Callable[[str], str],
    ) -> None:
        self.name: str = sink.name
        self.sink = sink
        self.lane = lane
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.queue_size = queue_size
        self.retry = retry
        self.dead_letter = dead_letter
        self.scrub = scrub
        self.stats = SinkStats()
        self.queue: deque[Item] = deque()
        self.current: list[Item] = []
        self.wake = asyncio.Event()
        self.space = asyncio.Event()
        self.space.set()
        self.draining = False
        self.input_done = False

    def put(self, items: list[Item]) -> None:
        """Queue items (from the lane's reader)."""
        self.queue.extend(items)
        self.stats.received += len(items)
        if len(self.queue) >= self.queue_size:
            self.space.clear()
        self.wake.set()

    def finish_input(self) -> None:
        """No more items will come: send what is queued, then end."""
        self.input_done = True
        self.draining = True
        self.wake.set()

    def start_draining(self) -> None:
        """Send queued items now, without waiting for a full batch or the flush interval."""
        self.draining = True
        self.wake.set()

    def snapshot(self) -> SinkStats:
        """The counters, with the queue length and lag filled in."""
        waiting = [*self.current, *self.queue]
        self.stats.queued = len(waiting)
        oldest = min((i.received_at for i in waiting), default=None)
        self.stats.lag_seconds = 0.0 if oldest is None else time.monotonic() - oldest
        return self.stats

    async def run(self) -> None:
        """Batch and send until the input is finished and the queue is empty."""
        while True:
            if not self.queue:
                if self.input_done:
                    return
                self.wake.clear()
                await self.wake.wait()
                continue
            if not self.draining and len(self.queue) < self.batch_size:
                remaining = self.queue[0].received_at + self.flush_interval - time.monotonic()
                if remaining > 0:
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), remaining)
                    continue
            n = min(len(self.queue), self.batch_size)
            batch = [self.queue.popleft() for _ in range(n)]
            if len(self.queue) < self.queue_size:
                self.space.set()
            self.current = batch
            await self._deliver(batch)

    async def _deliver(self, batch: list[Item]) -> None:
        payloads = [i.payload for i in batch]
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.sink.send(payloads)
            except PermanentSinkError as exc:
                self.stats.failures += 1
                ok = await self.dead_letter_batch(batch, exc, attempt)
                break
            except Exception as exc:
                self.stats.failures += 1
                if attempt > self.retry.retries:
                    ok = await self.dead_letter_batch(batch, exc, attempt)
                    break
                retry_after = exc.retry_after if isinstance(exc, TransientSinkError) else None
                delay = self.retry.delay(attempt, retry_after)
                self.stats.retried += len(batch)
                log.info(
                    "sink %s: batch of %d failed (attempt %d, %s: %s); retrying in %.3f s",
                    self.name,
                    len(batch),
                    attempt,
                    type(exc).__name__,
                    self.scrub(str(exc)),
                    delay,
                )
                await asyncio.sleep(delay)
            else:
                self.stats.sent += len(batch)
                self.stats.batches += 1
                ok = True
                break
        self.stats.record_latency(time.monotonic() - started)
        self.current = []  # accounted for: a cancellation from here on must not requeue it
        await self.lane.settle(batch, ok=ok)

    async def dead_letter_batch(
        self, batch: list[Item], exc: BaseException | str, attempts: int
    ) -> bool:
        """Dead-letter `batch`; return False if it could not be stored (then it is counted)."""
        error_type = "Shutdown" if isinstance(exc, str) else type(exc).__name__
        message = self.scrub(str(exc)) or error_type
        n = len(batch)
        if self.dead_letter is not None:
            try:
                await self.dead_letter.write(
                    self.name, [i.payload for i in batch], message, error_type, attempts
                )
            except Exception as dl_exc:
                log.error(
                    "sink %s: could not dead-letter %d events (%s); original error: %s",
                    self.name,
                    n,
                    dl_exc,
                    message,
                )
            else:
                self.stats.dead_lettered += n
                log.warning(
                    "sink %s: %d events dead-lettered after %d attempt(s): %s: %s",
                    self.name,
                    n,
                    attempts,
                    error_type,
                    message,
                )
                return True
        else:
            log.error(
                "sink %s: %d events failed (%s: %s) and no dead-letter destination is configured",
                self.name,
                n,
                error_type,
                message,
            )
        if self.lane.durable:
            self.stats.requeued += n  # left pending: the source delivers them again
        else:
            self.stats.dropped += n
        return False
