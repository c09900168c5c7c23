"""A sink worker: batches one sink's queue by size and time, sends with retries, dead-letters.

Part of the dispatcher (see `_lane.py` for the lane that feeds it). One task per sink,
so one `send()` at a time per sink, and sinks never wait for each other. In a shared lane, a
worker whose queue stays full too long is *stalled*: the lane dead-letters its share (`shed`)
until its queue has drained to half.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shlex
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from eventbus_core._errors import (
    PermanentSinkError,
    RaisedBaseException,
    SinkError,
    TransientSinkError,
    clipped,
    error_type_of,
    failure_name,
    message_of,
    refused_alone,
    send_failure,
    stored_before_cut,
    stored_before_failing,
)
from eventbus_core._log import get_logger
from eventbus_core._sink import Sink, sink_figures
from eventbus_core.dispatch._deadletter import DeadLetter
from eventbus_core.dispatch._lane import Item, Lane
from eventbus_core.dispatch._retry import RetryPolicy
from eventbus_core.dispatch._stats import SinkStats

__all__ = ["SinkWorker"]

log = get_logger("eventbus.dispatcher")


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
        # What a send cut off by the stop had stored (`mark_delivered`): counted as sent, for
        # the stop to settle before it hands `current` back (see `Dispatcher._hand_back`).
        self.cut_sent: list[Item] = []
        self.current_attempts = 0  # sends of `current` begun so far (the last may be in flight)
        self._warned_count = False  # a SinkError count beyond its batch, said once
        # The failure `current` waits out a retry's delay after (None while it is being sent).
        self.retrying_after: Exception | None = None
        self.wake = asyncio.Event()
        self.space = asyncio.Event()
        self.space.set()
        self.draining = False
        self.input_done = False
        self._shed_at_stall = 0
        # A failure of the lane's inline attempt (see `_lane.py`), for the next batch sent:
        # that batch is the one that failed, and this counts as its first attempt.
        self._carried: Exception | None = None
        # When its current send() began (None: none in progress), and the longest that ended
        # since `LoopLagWatch` last asked: what it blames for a loop held meanwhile.
        self._send_began: float | None = None
        self._longest_send = 0.0

    def take_longest_send(self) -> float:
        """Seconds of the longest send() that ended since the last call, or of the one in
        progress so far if longer; the next call starts afresh."""
        longest, self._longest_send = self._longest_send, 0.0
        began = self._send_began
        return longest if began is None else max(longest, time.monotonic() - began)

    def put(self, items: list[Item]) -> None:
        """Queue items (from the lane's reader)."""
        self.queue.extend(items)
        self.stats.received += len(items)
        if len(self.queue) >= self.queue_size:
            self.space.clear()
        self.wake.set()

    @property
    def idle(self) -> bool:
        """True while nothing is queued or being sent (the lane may then store inline)."""
        return not self.queue and not self.current and self._carried is None

    def record_inline(self, sent: int, seconds: float, error: Exception | None) -> None:
        """Account a batch the lane stored inline: `sent` events stored in `seconds`; with
        `error`, the rest failed and comes next through `put()` (retried as its attempt 2)."""
        self.stats.received += sent
        if sent:
            self.stats.record_sent(sent, batch=error is None)
        if error is None:
            self.stats.record_latency(seconds)
            return
        self.stats.record_failure(error_type_of(error))
        self._carried = error

    def take_back_inline(self, batch: list[Item]) -> None:
        """A batch its lane's thread was storing inline (`send_blocking()`) when a stop's
        deadline gave it up: in hand, as a send the deadline cut off (the sink may have it),
        for the stop to dead-letter or leave for redelivery as any such batch."""
        self.stats.received += len(batch)
        self.current, self.current_attempts, self.retrying_after = batch, 1, None

    @property
    def stalled(self) -> bool:
        """True while the lane dead-letters this sink's share instead of waiting for it."""
        return self.stats.stalled

    def mark_stalled(self, waited: float) -> None:
        """The lane waited `waited` seconds for room in the queue: stop holding it back."""
        self.stats.stalled = True
        self.stats.stalls += 1
        self._shed_at_stall = self.stats.shed
        # The dead letters hold what the sink would have got: `eventbus replay --dead-letters`
        # sends it again, from any backend (trial 201). A command to paste: the file's path
        # absolute and quoted for a shell, and the dead letters' sink named apart from the
        # plugin to send to, which a sink built in code may not be called (trial 203).
        path = getattr(self.dead_letter, "path", None)
        file = shlex.quote(os.path.abspath(path)) if path is not None else "FILE"
        name = shlex.quote(self.name)
        plugin = name if _is_sink_plugin(self.name) else "SINK"
        again = f"`eventbus replay --dead-letters {file} --from-sink {name} --sink {plugin}`"
        if self.dead_letter is not None and self.lane.replayable:
            fate = f"dead-lettered (replay them to it with {again}, or from the log by LogID)"
        elif self.dead_letter is not None:
            # A memory bus keeps no log to replay from (helper-107: the hint pointed at
            # `eventbus replay`'s log range, which refuses such a backend): the file does.
            fate = f"dead-lettered (replay them to it with {again}; this backend keeps no log)"
        elif self.lane.durable:
            fate = "left unacknowledged, for redelivery (no dead-letter destination configured)"
        else:
            fate = "dropped and counted (no dead-letter destination configured)"
        log.warning(
            "sink %s: its queue (%d events) stayed full for %.1f s; it is stalled: its share of "
            "new events is %s while the other sinks go on, until its queue drains to half",
            self.name,
            self.queue_size,
            waited,
            fate,
        )

    def resume_if_drained(self) -> None:
        """Take events again once the queue has drained to half."""
        if len(self.queue) <= self.queue_size // 2:
            self.stats.stalled = False
            log.info(
                "sink %s: caught up, receiving events again; %d events were dead-lettered "
                "while it was stalled",
                self.name,
                self.stats.shed - self._shed_at_stall,
            )

    async def shed(self, items: list[Item]) -> None:
        """Dead-letter this sink's share of `items` at once (the sink is stalled)."""
        self.stats.received += len(items)
        self.stats.shed += len(items)
        reason = (
            f"sink {self.name} stalled: its queue of {self.queue_size} events stayed full "
            "(shared consumer mode, EVENTBUS_STALL_TIMEOUT); not sent to this sink"
        )
        ok = await self.dead_letter_batch(items, reason, 0, error_type="Stalled", quiet=True)
        await self.lane.settle(items, ok=ok)

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
        """A copy of the counters, with the queue length and lag filled in."""
        waiting = [*self.current, *self.queue]
        oldest = min((i.received_at for i in waiting), default=None)
        return dataclasses.replace(
            self.stats,
            queued=len(waiting),
            lag_seconds=0.0 if oldest is None else time.monotonic() - oldest,
            failed_by_type=dict(self.stats.failed_by_type),  # a copy: later failures add to it
            figures=sink_figures(self.sink),
        )

    async def run(self) -> None:
        """Batch and send until the input is finished and the queue is empty."""
        while True:
            if not self.queue:
                if self.input_done:
                    return
                self.wake.clear()
                await self.wake.wait()
                continue
            if not self.draining and self._carried is None and len(self.queue) < self.batch_size:
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
            self.current_attempts = 0
            await self._deliver(batch)

    async def _deliver(self, batch: list[Item]) -> None:
        payloads = [i.payload for i in batch]
        started = time.monotonic()
        # A batch that failed inline (counted there) starts at its retry, after its delay.
        attempt, exc = (0, None) if self._carried is None else (1, self._carried)
        self._carried = None
        while True:
            if exc is None:
                attempt += 1
                self.current_attempts = attempt
                exc, stored = await self._try_send(batch, payloads)
                if exc is None:
                    ok = True
                    break
                batch, payloads = batch[stored:], payloads[stored:]  # only the rest is retried
                if not batch:  # the sink stored all of it, and said so with its error
                    ok = True
                    break
            if isinstance(exc, PermanentSinkError) or attempt > self.retry.retries:
                refused = refused_alone(exc, len(batch))
                if not refused:
                    ok = await self.dead_letter_batch(batch, exc, attempt)
                    break
                # The error is about its first events alone (one event's request refused):
                # those are dead-lettered, the rest, never tried, goes on as a new batch.
                gone, batch, payloads = batch[:refused], batch[refused:], payloads[refused:]
                ok = await self.dead_letter_batch(gone, exc, attempt)
                # `gone` is accounted for (as at the end of a batch): a cancellation from here
                # on hands back only the rest.
                self.current = batch
                await self.lane.settle(gone, ok=ok)
                attempt, exc = 0, None
                continue
            retry_after = exc.retry_after if isinstance(exc, TransientSinkError) else None
            delay = self.retry.delay(attempt, retry_after)
            log.info(
                "sink %s: batch of %d failed (attempt %d, %s: %s); retrying in %.3f s",
                self.name,
                len(batch),
                attempt,
                failure_name(exc),
                clipped(message_of(exc), self.scrub),
                delay,
            )
            # Kept while it waits, and when a stop's deadline cancels the wait: the batch's dead
            # letter then says why it was not sent, rather than that the sink may have it.
            self.retrying_after, exc = exc, None
            await asyncio.sleep(delay)
            self.retrying_after = None
            # Counted as it is sent again: a stop during the delay hands the batch back unsent.
            self.stats.retried += len(batch)
        self.stats.record_latency(time.monotonic() - started)
        self.current = []  # accounted for: a cancellation from here on must not requeue it
        await self.lane.settle(batch, ok=ok)

    async def _try_send(
        self, batch: list[Item], payloads: list[dict[str, Any]]
    ) -> tuple[Exception | None, int]:
        """One attempt at `batch`: (None, all) if the sink stored it, else (the error, how many
        of the first events the sink says it stored: `SinkError.delivered`, settled here)."""
        sending = asyncio.current_task()
        began = self._send_began = time.monotonic()
        try:
            try:
                await self.sink.send(payloads)
            except asyncio.CancelledError as cancelled:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    # The dispatcher stops this worker: the batch is handed back, but for what
                    # the sink said it stored (one request per event: trial 234 had 6 of 10
                    # logged twice after a restart).
                    done = stored_before_cut(cancelled, len(batch))
                    if done:
                        self.cut_sent, self.current = batch[:done], batch[done:]
                        self.stats.record_sent(done, batch=False)
                    self._warn_cut_beyond_batch(cancelled, len(batch))
                    raise
                # Raised by the sink itself (a library's own timeout, say), not a stop: a failed
                # attempt like any other, where it once ended the worker without a word.
                raise RaisedBaseException(
                    f"send() raised CancelledError ({message_of(cancelled) or 'no message'}) "
                    "though the dispatcher did not cancel it",
                    error_type="CancelledError",
                    # What it said it stored is not retried (review 237).
                    delivered=stored_before_cut(cancelled, len(batch)),
                ) from None
            except Exception:
                raise
            except GeneratorExit:
                if _being_closed(sending):
                    raise  # this coroutine is closed (its task collected): not the sink's doing
                raise send_failure(GeneratorExit()) from None
            except BaseException as ending:
                # A plugin's doing (the dispatcher's SIGINT never raises in its loop): SystemExit
                # ended `eventbus dispatch` with "Task exception was never retrieved"
                # (helper-92); GeneratorExit or gevent's Timeout ended the worker alone, its
                # events held until the stop (trial 201).
                raise send_failure(ending) from None
            finally:
                took = time.monotonic() - began
                self._send_began, self._longest_send = None, max(self._longest_send, took)
        except Exception as exc:
            self.stats.record_failure(error_type_of(exc))
            done = stored_before_failing(exc, len(batch))
            if not done:
                self._warn_count_beyond_batch(exc, len(batch))
                return exc, 0
            self.current = batch[done:]
            await self._settle_sent(batch[:done], batch=False)
            return exc, done
        self.stats.record_sent(len(batch))
        return None, len(batch)

    def _warn_cut_beyond_batch(self, cancelled: BaseException, size: int) -> None:
        """Say once per sink that a cut-off send marked more payloads stored than its batch
        held (`mark_delivered`): read as none, as `SinkError` counts are (trial 241)."""
        count = getattr(cancelled, "delivered", 0)
        if self._warned_count or not isinstance(count, int) or count <= size:
            return
        self._warned_count = True
        log.warning(
            "sink %s marked %d payloads stored for a batch of %d when the stop cut it off: a "
            "count beyond the batch is ignored (all of it is handed back); a bug of the sink",
            self.name,
            count,
            size,
        )

    def _warn_count_beyond_batch(self, exc: Exception, size: int) -> None:
        """Say once per sink that its `SinkError` named more payloads stored or refused than the
        batch held: a plugin's bug, read as "none of them" (the whole batch is retried)."""
        if self._warned_count or not isinstance(exc, SinkError):
            return
        for name in ("delivered", "refused"):
            count = getattr(exc, name, 0)
            if isinstance(count, int) and count > size:
                self._warned_count = True
                log.warning(
                    "sink %s raised %s(%s=%d) for a batch of %d: a count beyond the batch is "
                    "ignored (the error is taken to be about every payload); a bug of the sink",
                    self.name,
                    type(exc).__name__,
                    name,
                    count,
                    size,
                )
                return

    async def _settle_sent(self, items: list[Item], *, batch: bool) -> None:
        self.stats.record_sent(len(items), batch=batch)
        await self.lane.settle(items, ok=True)

    async def dead_letter_batch(
        self,
        batch: list[Item],
        exc: BaseException | str,
        attempts: int,
        *,
        error_type: str | None = None,
        quiet: bool = False,
    ) -> bool:
        """Dead-letter `batch`; return False if it could not be stored (then it is counted).

        `error_type` defaults to the exception's label, as the failure metric counts it
        (`error_type_of`: a `SinkError`'s own, else its class name; `Shutdown` for a text reason);
        `quiet` skips the log line per batch (the caller logs once for many); a dead letter
        that cannot be written is logged all the same.
        """
        if error_type is None:
            error_type = "Shutdown" if isinstance(exc, str) else error_type_of(exc)
        message = clipped(message_of(exc), self.scrub) or error_type
        n = len(batch)
        if not isinstance(exc, str):
            self.stats.failed_since_sent += n  # a shutdown cut-off is not the sink failing
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
                    clipped(message_of(dl_exc), self.scrub),
                    message,
                )
            else:
                self.stats.dead_lettered += n
                if quiet:
                    return True
                log.warning(
                    "sink %s: %d event(s) dead-lettered after %d attempt(s): %s: %s",
                    self.name,
                    n,
                    attempts,
                    error_type,
                    message,
                )
                return True
        elif not quiet:
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


def _being_closed(sending: asyncio.Task[Any] | None) -> bool:
    """True when a GeneratorExit comes from the coroutine being closed (its task collected,
    from whatever thread and loop) rather than from the sink's send(), which raises it in the
    task `sending` that awaited the send. Counted as the sink's failure, it showed as one
    (review 202)."""
    try:
        return asyncio.current_task() is not sending
    except RuntimeError:  # no running event loop
        return True


def _is_sink_plugin(name: str) -> bool:
    """True if an installed plugin registers a sink `name` (what `eventbus replay --sink`
    takes); a sink built in code may have a name of its own."""
    from eventbus_core._plugins import get_registry

    try:
        return name in get_registry().sinks
    except Exception:  # a hint only: a plugin that fails to load says so elsewhere
        return False
