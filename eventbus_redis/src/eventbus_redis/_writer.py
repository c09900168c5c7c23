"""`BatchWriter`: the bounded buffer and background thread behind both Redis backends' publish().

`publish()` appends to a deque and returns; it only wakes the writer when the writer sleeps
after a quiet spell or when the buffer passes half full (waking a thread per event would cost
more than the append). The writer takes everything buffered, up to `max_batch`, and hands it to
the backend's sink: one round trip per batch, with the next batch encoded while Redis works on
the previous one. While Redis is down the writer keeps
its batch, waits with capped exponential backoff and jitter, and retries; meanwhile the buffer
fills and further events are refused and counted, so publish() stays as cheap as ever.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Final

import redis

from eventbus_core import Event, get_logger
from eventbus_redis._client import TRANSIENT_ERRORS, Backoff, safe_error
from eventbus_redis._sink import Prepared, ScriptSink

__all__ = ["BatchWriter"]

log = get_logger("eventbus.redis")

_DEEP_SLEEP_AFTER: Final = 0.05  # seconds of silence before the writer needs a publisher's wake


class BatchWriter:
    """Bounded, non-blocking buffer drained in batches by one daemon thread.

    Args:
        sink: Encodes and writes batches (one round trip each); a failed batch is retried.
        buffer_size: Events held before `publish()` refuses (and counts) more.
        max_batch: Most events per round trip.
        linger: Seconds the writer waits for more events while traffic flows. Long on purpose:
            every wake-up of this thread takes the GIL from the application's event loop, and
            next to a busy server each one cost far more than the write (measured, with the
            other changes: 5 ms cost the middleware benchmark's server 28% of its
            throughput, 50 ms 18-22%). A quiet
            writer is woken by the first publish, and flush() and stop() wake it at once.
        backoff: Reconnect delays after a failed write.
        name: Thread name.
    """

    def __init__(
        self,
        sink: ScriptSink,
        *,
        buffer_size: int,
        max_batch: int = 500,
        linger: float = 0.05,
        backoff: Backoff | None = None,
        name: str = "eventbus-redis-writer",
    ) -> None:
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
            raise ValueError(
                f"buffer_size must be a positive int, got {buffer_size!r} "
                "(OBSERVABILITY_BUFFER_SIZE when built from settings)"
            )
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch!r}")
        self._sink = sink
        self.buffer_size = buffer_size
        # Up to two batches are out of the buffer at once (one in Redis, one being encoded):
        # keep them to half the bound, so publishers always have room while Redis works.
        self._max_batch = max(1, min(max_batch, buffer_size // 4))
        self._linger = linger
        self._backoff = backoff or Backoff()
        self._buffer: deque[Event] = deque()
        self._high_water = max(1, buffer_size // 2)
        self._closed = False
        self._abort = threading.Event()  # stop's deadline passed: give up on what is left
        self._wake = threading.Event()
        self._sleeping = False
        self._kicked = False
        self._lock = threading.Lock()  # guards the counters below and taking from the buffer
        self._refused = 0
        self._taken = 0
        self._done = 0  # taken events whose fate is settled (written or lost)
        self._written = 0
        self._lost = 0
        self._batches = 0
        self._failures = 0
        self.state = "idle"
        self.last_error: str | None = None
        self._done_cond = threading.Condition(threading.Lock())
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------ hot path

    def publish(self, event: Event) -> None:
        """Buffer `event` and return at once; count it as dropped if the buffer is full."""
        buf = self._buffer
        depth = len(buf)
        # The batch being written counts too: at most `buffer_size` events wait in memory.
        if self._closed or depth + self._taken - self._done >= self.buffer_size:
            with self._lock:
                self._refused += 1
            return
        buf.append(event)
        if self._sleeping or (depth >= self._high_water and not self._kicked):
            self._kick()

    def _kick(self) -> None:
        self._kicked = True
        self._sleeping = False
        self._wake.set()

    # ---------------------------------------------------------------------------- the thread

    def _run(self) -> None:
        last_activity = time.monotonic()
        sent: tuple[list[Event], Prepared] | None = None  # sent, reply not read yet
        while True:
            batch = self._take()
            prepared = self._prepare(batch) if batch else None
            if sent is not None:
                self._finish(*sent)
                sent = None
            if batch and prepared is not None:
                sent = self._send(batch, prepared)
                last_activity = time.monotonic()
                continue
            if self._closed:
                self._sink.reset()
                self._notify_done()
                return
            self._notify_done()
            if time.monotonic() - last_activity >= _DEEP_SLEEP_AFTER:
                self._deep_sleep()
                last_activity = time.monotonic()
                continue
            self._wake.clear()
            self._kicked = False
            if not self._buffer and not self._closed:
                self._wake.wait(self._linger)

    def _prepare(self, batch: list[Event]) -> Prepared | None:
        try:
            return self._sink.prepare(batch)
        except Exception:  # an event that cannot be encoded must not stop the writer
            log.exception("eventbus redis writer could not encode a batch; dropping it")
            self._settle(batch, written=False)
            return None

    def _send(self, batch: list[Event], prepared: Prepared) -> tuple[list[Event], Prepared] | None:
        if self.state == "connected":
            try:
                self._sink.send(prepared)
                return batch, prepared
            except Exception:  # the synchronous path below retries and reports
                pass
        self._deliver(batch, prepared)
        return None

    def _finish(self, batch: list[Event], prepared: Prepared) -> None:
        try:
            self._sink.receive(prepared)
        except Exception:  # unknown outcome: retry; the script skips a batch it applied
            self._deliver(batch, prepared)
            return
        self._settle(batch, written=True)

    def _deep_sleep(self) -> None:
        # publish() appends first and checks _sleeping after: one side always sees the other.
        self._wake.clear()
        self._sleeping = True
        if self._buffer or self._closed:
            self._sleeping = False
            return
        self._wake.wait()
        self._sleeping = False

    def _take(self) -> list[Event]:
        buf = self._buffer
        if not buf:
            return []
        popleft = buf.popleft
        with self._lock:
            batch = [popleft() for _ in range(min(len(buf), self._max_batch))]
            self._taken += len(batch)
        return batch

    def _deliver(self, batch: list[Event], prepared: Prepared) -> None:
        """Write `batch` synchronously, retrying through outages until written or given up."""
        while True:
            if self._abort.is_set():
                self._settle(batch, written=False)
                return
            try:
                self._sink.write(prepared)
            except Exception as exc:  # any failure keeps the batch; publish() never sees it
                self._failures += 1
                message = safe_error(exc)
                # Unreachable or slow Redis is "reconnecting"; anything else (a wrong password,
                # a key of the wrong type, a read-only replica, out of memory) is "failing":
                # both retry. redis-py's AuthenticationError is a ConnectionError: not an outage.
                outage = isinstance(exc, TRANSIENT_ERRORS) and not isinstance(
                    exc, redis.AuthenticationError
                )
                state = "reconnecting" if outage else "failing"
                if self.state != state or message != self.last_error:
                    log.warning("eventbus redis writer cannot write (%s); retrying", message)
                self.state = state
                self.last_error = message
                self._abort.wait(self._backoff.next())
                continue
            if self.state in ("reconnecting", "failing"):
                log.info("eventbus redis writer reconnected; writing buffered events")
            self.state = "connected"
            self._backoff.reset()
            self._settle(batch, written=True)
            return

    def _settle(self, batch: list[Event], *, written: bool) -> None:
        with self._lock:
            self._done += len(batch)
            if written:
                self._written += len(batch)
                self._batches += 1
            else:
                self._lost += len(batch)

    def _notify_done(self) -> None:
        with self._done_cond:
            self._done_cond.notify_all()

    # ----------------------------------------------------------------------------- lifecycle

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event accepted so far is written; False if `timeout` ran out.

        Events given up on at stop count as settled, so this never waits for them.
        """
        with self._lock:
            target = self._taken + len(self._buffer)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._done_cond:
            while self._done < target:
                if not self._thread.is_alive():
                    break
                self._kick()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                # Short waits: the writer's notify can race with our check.
                self._done_cond.wait(0.01 if remaining is None else min(remaining, 0.01))
        return self._done >= target

    def close(self, timeout: float) -> None:
        """Refuse new events, write what was accepted within `timeout`, count the rest lost."""
        self._closed = True
        self._kick()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        if self._thread.is_alive():
            self._abort.set()
            self._thread.join(1.0)
        # Whatever a racing publish() slipped in after the writer's last look is not written.
        with self._lock:
            leftover = len(self._buffer)
            self._buffer.clear()
            self._lost += leftover
            self._taken += leftover
            self._done += leftover
        if self._lost:
            log.warning("eventbus redis writer stopped with %d event(s) unwritten", self._lost)
        self.state = "stopped"

    @property
    def closed(self) -> bool:
        """True once `close()` was called."""
        return self._closed

    def counts(self) -> tuple[int, int]:
        """`(published, dropped)`: accepted and kept, and refused or lost (never both)."""
        with self._lock:
            accepted = self._taken + len(self._buffer)
            return accepted - self._lost, self._refused + self._lost

    def figures(self) -> dict[str, Any]:
        """Writer figures for `stats().extra`."""
        return {
            "state": self.state,
            "connected": self.state == "connected",
            "last_error": self.last_error,
            "written": self._written,
            "batches": self._batches,
            "write_failures": self._failures,
            "lost": self._lost,
            **self._sink.figures(),
        }

    def queue_depth(self) -> int:
        """Accepted events not yet written."""
        return len(self._buffer) + self._taken - self._done
