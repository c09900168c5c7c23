"""`BatchWriter`: the bounded buffer and background thread behind both Redis backends' publish().

`publish()` appends to a deque and returns; it only wakes the writer when the writer sleeps
after a quiet spell or when the buffer passes half full (waking a thread per event would cost
more than the append). The writer takes everything buffered, up to `max_batch`, and hands it to
the backend's sink: one round trip per batch, with the next batch encoded while Redis works on
the previous one. While Redis is down the writer keeps its batch, waits with capped exponential
backoff and jitter, and retries; meanwhile the buffer fills and further events are refused and
counted, so publish() stays as cheap as ever.

Accounting: every event `publish()` accepted is, in the end, written or lost (given up at
`close()`'s deadline), never both: `written + lost == published` once closed. `written` is what
Redis confirmed. Of the lost, `in_doubt` were in a batch Redis may have received without the
writer reading its reply (frozen or unreachable Redis at the deadline): Redis may have applied
those, so it holds between `written` and `written + in_doubt` of this writer's events. Nobody
can know more by the deadline: the reply is exactly what did not arrive. A forked child
leaves what the parent had not written yet to the parent (`left_to_parent`, see
`after_fork_in_child`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Final

import redis

from eventbus_core import Event, get_logger
from eventbus_redis._appender import Prepared, ScriptAppender
from eventbus_redis._client import TRANSIENT_ERRORS, Backoff, safe_error
from eventbus_redis._config_errors import is_wrong_type

__all__ = ["BatchWriter"]

log = get_logger("eventbus.redis")

_DEEP_SLEEP_AFTER: Final = 0.05  # seconds of silence before the writer needs a publisher's wake
_CUT_BEFORE: Final = 0.1  # seconds before close()'s deadline at which a blocked write is cut
# What a failed write or reply may raise that the synchronous path retries and reports. Anything
# else is a bug: logged (once) with its traceback, then retried the same way.
_EXPECTED: Final = (redis.RedisError, OSError)


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
        wrong_type: Added to the error a key of the wrong type causes (names the key setting).
    """

    def __init__(
        self,
        sink: ScriptAppender,
        *,
        buffer_size: int,
        max_batch: int = 500,
        linger: float = 0.05,
        backoff: Backoff | None = None,
        name: str = "eventbus-redis-writer",
        wrong_type: str = "",
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
        self._name = name
        self._wrong_type = wrong_type
        self._buffer: deque[Event] = deque()
        self._high_water = max(1, buffer_size // 2)
        self._closed = False
        self._final = False  # close() settled everything: the thread's late results adjust
        self._refused = 0
        self._taken = 0
        self._done = 0  # taken events whose fate is settled (written, lost, or the parent's)
        self._written = 0
        self._lost = 0
        self._in_doubt = 0  # of the lost: in a batch Redis may have applied (reply never read)
        self._in_flight: list[Event] | None = None  # the batch Redis may have, outcome unknown
        self._left_to_parent = 0
        self._batches = 0
        self._failures = 0
        self._unexpected_logged = False
        self.state = "idle"
        self.last_error: str | None = None
        self._new_thread_state()
        self._thread.start()

    def _new_thread_state(self) -> None:
        self._lock = threading.Lock()  # guards the counters below and taking from the buffer
        self._abort = threading.Event()  # close()'s deadline is near: give up what is left
        self._wake = threading.Event()
        self._sleeping = False
        self._kicked = False
        self._done_cond = threading.Condition(threading.Lock())
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)

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
            log.exception("eventbus redis writer could not encode a batch; it is lost")
            self._settle(batch, written=False)
            return None

    def _send(self, batch: list[Event], prepared: Prepared) -> tuple[list[Event], Prepared] | None:
        if self.state == "connected" and not self._abort.is_set():
            try:
                self._in_flight = batch  # before any byte leaves: conservative
                self._sink.send(prepared)
                return batch, prepared
            except _EXPECTED:
                pass  # the synchronous path below retries and reports
            except Exception as exc:
                self._unexpected(exc)
        self._deliver(batch, prepared)
        return None

    def _finish(self, batch: list[Event], prepared: Prepared) -> None:
        try:
            self._sink.receive(prepared)
        except Exception as exc:  # unknown outcome: retry; the script skips a batch it applied
            if not isinstance(exc, _EXPECTED):
                self._unexpected(exc)
            self._deliver(batch, prepared)
            return
        self._settle(batch, written=True)

    def _unexpected(self, exc: Exception) -> None:
        """A failure that is not Redis's (a bug): say so once, with its traceback."""
        if not self._unexpected_logged:
            self._unexpected_logged = True
            log.error(
                "eventbus redis writer: unexpected %s; writing synchronously instead (logged once)",
                safe_error(exc),
                exc_info=exc,
            )

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
            if self._final:
                return []
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
                self._in_flight = batch
                self._sink.write(prepared)
            except Exception as exc:  # any failure keeps the batch; publish() never sees it
                if not isinstance(exc, _EXPECTED):
                    self._unexpected(exc)
                self._failures += 1
                message = safe_error(exc)
                if self._wrong_type and is_wrong_type(exc):
                    message += f" ({self._wrong_type})"
                # Unreachable or slow Redis is "reconnecting"; anything else (a wrong password,
                # a key of the wrong type, a read-only replica, out of memory) is "failing":
                # both retry. redis-py's AuthenticationError is a ConnectionError: not an outage.
                outage = isinstance(exc, TRANSIENT_ERRORS) and not isinstance(
                    exc, redis.AuthenticationError
                )
                state = "reconnecting" if outage else "failing"
                if (self.state != state or message != self.last_error) and not self._abort.is_set():
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
        n = len(batch)
        with self._lock:
            doubt = batch is self._in_flight
            if doubt:
                self._in_flight = None
            if self._final:
                # close() already counted this batch as lost (and in doubt, as it was in
                # flight): its reply came in after all.
                if written:
                    self._lost -= n
                    self._in_doubt -= n if doubt else 0
                    self._written += n
                    self._batches += 1
                return
            self._done += n
            if written:
                self._written += n
                self._batches += 1
            else:
                self._lost += n
                self._in_doubt += n if doubt else 0

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
            while self._done < target and not self._final:
                if not self._thread.is_alive():
                    break
                self._kick()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                # Short waits: the writer's notify can race with our check.
                self._done_cond.wait(0.01 if remaining is None else min(remaining, 0.01))
        return self._done >= target or self._final

    def close(self, deadline: float) -> None:
        """Refuse new events; write what was accepted until `deadline` (`time.monotonic()`);
        then count what is left as lost. Returns by the deadline (no network I/O here).

        Batches sent from now on cannot be applied by Redis after the deadline (the lease). A
        write still blocked shortly before it has its connection cut, so the thread ends.
        """
        self._closed = True
        self._sink.lease.deadline = deadline
        self._kick()
        if threading.current_thread() is not self._thread:
            cut_at = deadline - min(_CUT_BEFORE, max(0.0, deadline - time.monotonic()) / 4)
            self._thread.join(max(0.0, cut_at - time.monotonic()))
            if self._thread.is_alive():
                self._abort.set()
                self._sink.cut()
                self._thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._final = True
            self._taken += len(self._buffer)
            self._buffer.clear()
            self._lost += self._taken - self._done
            # A batch still in flight: Redis may have applied it before it stopped answering.
            self._in_doubt += len(self._in_flight) if self._in_flight is not None else 0
            self._done = self._taken
            lost, in_doubt = self._lost, self._in_doubt
        self._notify_done()
        if lost:
            log.warning(
                "eventbus redis writer stopped with %d event(s) not confirmed written (counted "
                "in lost; %d of them in a batch Redis may have applied: extra['in_doubt'])",
                lost,
                in_doubt,
            )
        self.state = "stopped"

    @property
    def closed(self) -> bool:
        """True once `close()` was called."""
        return self._closed

    def counts(self) -> tuple[int, int, int]:
        """`(published, dropped, lost)`: accepted, refused, and accepted but given up."""
        with self._lock:
            # After close(), an event a racing publish() slipped in is given up as well.
            late = len(self._buffer) if self._final else 0
            return self._taken + len(self._buffer), self._refused, self._lost + late

    def figures(self) -> dict[str, Any]:
        """Writer figures for `stats().extra`."""
        return {
            "state": self.state,
            "connected": self.state == "connected",
            "last_error": self.last_error,
            "written": self._written,
            "in_doubt": self._in_doubt,
            "batches": self._batches,
            "write_failures": self._failures,
            "left_to_parent": self._left_to_parent,
            **self._sink.figures(),
        }

    def queue_depth(self) -> int:
        """Accepted events not yet written (nor given up)."""
        return 0 if self._final else len(self._buffer) + self._taken - self._done

    # ---------------------------------------------------------------------------------- fork

    def before_fork(self) -> None:
        """Hold the counters' lock across `fork()`, so the child never sees a batch half taken
        from the buffer (and not yet counted). Bounded: a fork never waits long for it."""
        self._fork_locked = self._lock.acquire(timeout=1.0)

    def after_fork_in_parent(self) -> None:
        """Release what `before_fork()` took."""
        if getattr(self, "_fork_locked", False):
            self._fork_locked = False
            self._lock.release()

    def after_fork_in_child(self) -> None:
        """Give a forked child (gunicorn --preload, multiprocessing) a writer of its own.

        Only the forking thread survives a fork: the writer thread is gone, and any lock held
        at the fork stays locked. Both are rebuilt, and the connection is forgotten (it is the
        parent's). What the parent had accepted and not written yet (its buffer, the batch it
        was writing) is the parent's to write: the child drops its copies, so nothing is written
        twice, and counts them in `written` (the parent's figures account for them) and in
        `left_to_parent`, so `written + lost == published` holds in the child too.
        """
        self._fork_locked = False
        parent_held = len(self._buffer) + self._taken - self._done
        self._taken += len(self._buffer)
        self._buffer.clear()
        self._done = self._taken
        self._in_flight = None  # the parent's
        self._written += parent_held
        self._left_to_parent += parent_held
        self._sink.after_fork_in_child()
        self._new_thread_state()
        if not self._closed:
            self.state = "idle"
            self._thread.start()
