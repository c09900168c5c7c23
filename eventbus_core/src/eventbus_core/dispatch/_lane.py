"""A lane of the dispatcher: one source feeding some sinks.

A lane reads deliveries from its source in a worker thread (reading blocks, and transforming
there keeps the event loop free), and appends each batch to the queue of every sink it feeds.
Each sink has its own worker task, so a slow or failing sink only ever waits for itself. A
delivery is acknowledged once every sink of its lane has sent or dead-lettered it.

Reading pauses while a sink's queue is full (back-pressure). A lane that feeds several sinks
(shared consumer mode) waits so at most `stall_timeout` seconds for one sink: after that the
sink is *stalled*, and its share of what is read next is dead-lettered (to be replayed to it
later) while the other sinks go on; once its queue has drained to half, it receives events
again. A lane of one sink (per-sink mode) waits as long as it takes: nothing is lost, since its
source keeps what is not read.

A lane of one sink that offers `BlockingSend` (the `jsonl` sink) takes a shortcut while that
sink keeps up: a full batch read while the sink's worker is idle is stored by the lane's thread
itself, right after being prepared, and acknowledged there (*inline*). That saves each batch
its trips between threads (the loop, the sink worker, a thread for the write, the source's
thread for the acknowledgement), which cost a chat event about a fifth of its CPU time. A batch
that fails inline goes to the worker, whose retries, dead letters and figures are as for any
batch; until the worker is idle again, batches take the usual way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eventbus_core._backoff import backoff_delay
from eventbus_core._errors import (
    SettingsError,
    clipped,
    message_of,
    send_failure,
    stored_before_failing,
)
from eventbus_core._event import Event
from eventbus_core._log import get_logger, scrub
from eventbus_core._source import AckableSource, SubscriptionSource
from eventbus_core.capabilities import (
    BlockingSend,
    Exhaustible,
    KeepAlive,
    ReadAhead,
    Releasable,
    SourceFigures,
    capability,
)
from eventbus_core.dispatch._source_thread import SourceThread

if TYPE_CHECKING:
    from eventbus_core.dispatch._worker import SinkWorker

__all__ = ["AckState", "InlineOutcome", "Item", "Lane"]

log = get_logger("eventbus.dispatcher")


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


_Got = list[tuple[Any, dict[str, Any]]]  # (source token, payload) per delivery read


@dataclass(eq=False, slots=True)
class InlineOutcome:
    """What became of a batch stored inline, told by the lane's thread to the loop."""

    sent: int  # stored by the sink (and acknowledged, for a durable source)
    seconds: float  # the sink's call
    unsent: _Got  # what the sink did not store: for the worker to retry
    error: Exception | None


class Lane:
    """One source and the sinks it feeds (see the module docstring)."""

    def __init__(
        self,
        name: str,
        source: AckableSource,
        prepare: Callable[[Event], dict[str, Any]],
        *,
        durable: bool,
        stall_timeout: float = 0.0,
        replayable: bool = False,
    ) -> None:
        self.name = name
        # `eventbus replay` can send what this lane dead-letters again (a log other processes
        # read): what the stalled-sink warning may suggest.
        self.replayable = replayable
        self.stall_timeout = stall_timeout  # 0: wait for a full queue as long as it takes
        self.source = source
        # What the figures and the start-up line call the source: its `name`, or the lane's
        # for a third-party source without one (the dispatcher stopped at start-up on it).
        given = getattr(source, "name", None)
        self.source_name: str = given if isinstance(given, str) and given else name
        self.prepare = prepare
        # One thread per source: sources are single-threaded (a Redis consumer's reads and
        # acknowledgements share state), and a blocked read must not hold other lanes up. A
        # daemon (see `SourceThread`): a call blocked on a frozen server must not keep a
        # stopped dispatcher's process alive.
        self.executor = SourceThread(f"eventbus-{name}")
        # Sources with `KeepAlive` (consumer groups) refresh what they hold (see `_keep_alive`);
        # the others have nothing to refresh. Looked up once: the capabilities of a source
        # do not change.
        alive = capability(source, KeepAlive)
        self._source_keep_alive: Callable[[], None] | None = (
            alive.keep_alive if alive is not None else None
        )
        self._figures = capability(source, SourceFigures)
        self._handed_back: dict[Any, None] = {}  # tokens left pending at shutdown (hand_back)
        self._read_ahead = capability(source, ReadAhead)
        self._exhaustible = capability(source, Exhaustible)
        self.durable = durable
        # Acknowledgements on their way to the source, with the deliveries each covers.
        self._acks: dict[asyncio.Future[None], int] = {}
        # Deliveries read and not yet settled by every sink, and a signal for each settling:
        # while some are out, a durable lane reads without waiting (see `read_loop`).
        self._unsettled = 0
        self._settled = asyncio.Event()
        # A read going on in the lane's thread: when the reader is cancelled at a stop's
        # deadline meanwhile, its events are still taken (`take_unread`), not dropped with it.
        self._reading: asyncio.Future[_Got] | None = None
        self.workers: list[SinkWorker] = []  # set by the dispatcher
        self.read = 0
        self.acked = 0
        self.ack_errors = 0
        self.read_errors = 0  # consecutive failed reads
        self.redelivered = 0  # deliveries the source had handed out before (attempts > 1)
        # Events a memory subscription buffered that the dispatcher never read: published
        # after its stop had taken what was unread (counted at its close).
        self.never_read = 0
        # Its source could not say, at its close, how many events it left unread (a Redis list
        # whose server did not answer): what it left is in no figure.
        self.uncounted_at_close = False
        # Batches stored inline, as the lane's thread reports them (appended there, taken on
        # the loop): kept apart from the call's result so that none goes uncounted if the
        # read is given up at a stop while its thread finishes the batch.
        self._outcomes: deque[InlineOutcome] = deque()
        # The batch the lane's thread is storing inline, under `_inline_lock`: a stop whose
        # deadline passed while `send_blocking()` had not returned accounts for it from here
        # and leaves the thread to the sink, and no inline send starts after that
        # (`give_up_inline`). A memory bus's stop waited on that send for ever, and its events
        # were in no figure (trial 255).
        self._inline_lock = threading.Lock()
        self._inline_held: _Got | None = None
        self._inline_given_up = False

    def _inline_target(self) -> tuple[SinkWorker, BlockingSend] | None:
        """The worker of this lane's one sink and that sink, if it offers `BlockingSend`."""
        if len(self.workers) != 1:
            return None
        worker = self.workers[0]
        sink = capability(worker.sink, BlockingSend)
        return None if sink is None else (worker, sink)

    def _read(self, max_items: int, timeout: float, inline: BlockingSend | None = None) -> _Got:
        """Read and prepare up to `max_items` deliveries (in the source's thread). With
        `inline`, a full batch is stored by it here and reported in `_outcomes` instead."""
        if self._source_keep_alive is not None:
            self._source_keep_alive()  # in the read's own trip to the source thread
        deliveries = self.source.read(max_items, timeout)
        self.redelivered += sum(1 for d in deliveries if d.attempts > 1)
        full = len(deliveries) >= max_items
        if inline is not None and full and self._read_ahead is not None:
            # A full batch: more is likely waiting. Asked for now, the next batch is made
            # ready by the backend while this one is prepared and stored.
            self._read_ahead.read_ahead(max_items)
        got = [(d.token, self.prepare(d.event)) for d in deliveries]
        if inline is None or not full or not self._send_inline(inline, got):
            return got
        return []

    def _send_inline(self, sink: BlockingSend, got: _Got) -> bool:
        """Store `got` with `sink.send_blocking()`, report it in `_outcomes`, then acknowledge
        what was stored (in the source's thread). Reported first: an acknowledgement can block
        on a frozen server until the dispatcher gives the read up, and what the file holds must
        be counted all the same (an outside trial found the last batch counted nowhere).
        False, with nothing sent, once a stop gave the inline way up: the read's result is
        then `got`, accounted as any read the stop finds."""
        with self._inline_lock:
            if self._stop_gave_inline_up():
                return False
            self._inline_held = got
        started = time.monotonic()
        try:
            sink.send_blocking([payload for _, payload in got])
        except BaseException as raised:  # GeneratorExit, gevent's Timeout: a failure too
            exc = send_failure(raised, "send_blocking()")
            # As the worker reads a failure (`stored_before_failing`): the stored part is done.
            done = stored_before_failing(exc, len(got))
            stored, unsent = got[:done], got[done:]
            error: Exception | None = exc
        else:
            stored, unsent, error = got, [], None
        seconds = time.monotonic() - started
        with self._inline_lock:
            self._inline_held = None
            if self._stop_gave_inline_up():  # while the sink had the batch
                return True  # a stop accounted for this batch meanwhile (`give_up_inline`)
            self._outcomes.append(InlineOutcome(len(stored), seconds, unsent, error))
        if stored and self.durable:
            self._ack([token for token, _ in stored])
        return True

    def _stop_gave_inline_up(self) -> bool:
        """Under `_inline_lock`: True once `give_up_inline` ran."""
        return self._inline_given_up

    def inline_busy(self) -> bool:
        """True while the lane's thread is in its sink's `send_blocking()`."""
        return self._inline_held is not None

    def give_up_inline(self) -> list[Item]:
        """At a stop, once its deadline has passed: no inline send starts from now on, and the
        batch a sink's `send_blocking()` still holds, if any, is returned as items to account
        for (the sink may have them); the lane then goes on with a thread of its own, the old
        one being the sink's until it returns (a daemon: it does not hold the process)."""
        with self._inline_lock:
            self._inline_given_up = True  # a read that turns inline now returns its batch
            got, self._inline_held = self._inline_held, None
        if got is None:
            return []
        self._reading = None  # that read's result, if it ever comes, is accounted here
        # Its queued calls (a keep-alive, say) are cancelled: the source has one thread at a
        # time, the new one.
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor = SourceThread(f"eventbus-{self.name}-after-stop")
        self.read += len(got)
        self._unsettled += len(got)  # settled by whoever accounts for them (`hand_back`)
        now = time.monotonic()
        return [Item(payload, AckState(token, len(self.workers)), now) for token, payload in got]

    async def _take_outcomes(self, worker: SinkWorker) -> bool:
        """Account for the batches stored inline; hand what failed to `worker`. True if some
        batch was reported."""
        taken = False
        while self._outcomes:
            outcome = self._outcomes.popleft()
            taken = True
            self.read += outcome.sent
            if not self.durable:
                self.acked += outcome.sent  # nothing to acknowledge: done once stored
            worker.record_inline(outcome.sent, outcome.seconds, outcome.error)
            if outcome.unsent:
                await self._distribute(outcome.unsent)
        return taken

    def figures(self) -> dict[str, Any]:
        """A copy of this lane's counters, with the source's own figures if it offers
        `figures()`."""
        out: dict[str, Any] = {
            "source": self.source_name,
            "read": self.read,
            "acked": self.acked,
            "ack_errors": self.ack_errors,
            "read_errors": self.read_errors,
            "redelivered": self.redelivered,
            "never_read": self.never_read,
            "uncounted_at_close": self.uncounted_at_close,
        }
        if self._figures is not None:
            try:
                # A plain-data copy: not the live dicts, and nothing the stats line, `--json`
                # or a scrape cannot write (a plugin's datetime made every stop exit 1).
                figures = json.loads(json.dumps(dict(self._figures.figures()), default=str))
            except Exception as exc:  # figures are informative; never fail stats() for them
                out["figures_error"] = clipped(message_of(exc), scrub)
            else:
                # A source's figure named like the lane's own (a Redis consumer's `acked`: what
                # Redis confirmed) goes beside it as `source_<name>`, never over it.
                for key, value in figures.items():
                    out[f"source_{key}" if key in out else key] = value
        return out

    def exhausted(self) -> bool:
        """True once the source will deliver nothing more (a stopped memory bus)."""
        return self._exhaustible is not None and bool(self._exhaustible.exhausted)

    def source_ended(self) -> bool:
        """True once nothing more will be added to the source (a stopped memory bus), though
        it may still buffer events for this lane to read."""
        source = self.source
        return isinstance(source, SubscriptionSource) and source.subscription.finished

    async def read_loop(self, stopping: asyncio.Event, max_items: int, poll: float) -> None:
        """Read and distribute until the source ends, or stop is requested.

        On stop, a durable source is left at once (what is unread stays in it); a memory
        subscription is drained first, since its buffered events exist nowhere else.
        """
        loop = asyncio.get_running_loop()
        target = self._inline_target()
        inline_worker, inline_sink = (None, None) if target is None else target
        try:
            while not (stopping.is_set() and self.durable):
                for worker in self.workers:
                    if worker.stalled:
                        worker.resume_if_drained()
                    if not worker.stalled:
                        await self._wait_for_space(worker, poll)
                # A read waits for new entries at most `poll` seconds, in the source's thread. An
                # acknowledgement goes through that thread too, so it would wait behind such a
                # read: the last batches of a burst would stay unacknowledged until the wait
                # ended. So while deliveries are out, a durable lane only takes what is there.
                waiting = self.durable and self._unsettled > 0
                timeout = 0.0 if stopping.is_set() or waiting else poll
                if waiting:
                    self._settled.clear()
                # Inline only while the sink's worker has nothing of its own: the sink is then
                # called by one thread at a time, and a batch that failed is retried first.
                inline = inline_sink if inline_worker is not None and inline_worker.idle else None
                try:
                    reading = self._reading = loop.run_in_executor(
                        self.executor, self._read, max_items, timeout, inline
                    )
                    # Shielded: a cancelled reader leaves the read to finish, for take_unread.
                    got = await asyncio.shield(reading)
                    self._reading = None
                except SettingsError:
                    # The source is set up wrong (a key of another type, say): retrying cannot
                    # help, and the dispatcher ends with this error (`eventbus dispatch`: exit 2).
                    raise
                except Exception as exc:
                    # The source's own retries failed (or it has a bug): keep the lane alive,
                    # back off, and try again; nothing was taken from the source.
                    self.read_errors += 1
                    delay = backoff_delay(self.read_errors, 0.1, 5.0, jitter=False)
                    log.warning(
                        "lane %s: reading failed (%s: %s); retrying in %.1f s",
                        self.name,
                        type(exc).__name__,
                        exc,
                        delay,
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), delay)
                    continue
                self.read_errors = 0
                if inline_worker is not None and await self._take_outcomes(inline_worker):
                    continue
                if got:
                    await self._distribute(got)
                elif self.exhausted() or stopping.is_set():
                    return
                elif waiting:
                    # Nothing new: wait for a sink to settle (its acknowledgement is then queued
                    # before the next read), or for `poll`, before reading again.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._settled.wait(), poll)
        finally:
            for worker in self.workers:
                worker.finish_input()

    async def take_unread(self) -> list[Item]:
        """After a stop's deadline: what a memory subscription still buffers (back-pressure
        left it there while the sinks were slow or failing), read and prepared, as items for
        every sink of the lane to dead-letter. It exists nowhere else, so it must not be
        counted as merely dropped. In the lane's thread, after any read still going on there;
        at most what was buffered when asked (publishers may go on). Nothing for a durable
        source: what is unread stays in it."""
        if self.durable:
            return []  # (a read cut off by the deadline is not acknowledged: it comes again)
        got: _Got = []
        reading, self._reading = self._reading, None
        if reading is not None:
            # The reader was cancelled during a read: what that read took is this lane's still.
            with contextlib.suppress(Exception):
                got += await reading
        got += await asyncio.get_running_loop().run_in_executor(self.executor, self._read_all)
        self.read += len(got)
        now = time.monotonic()
        n = len(self.workers)
        return [Item(payload, AckState(token, n), now) for token, payload in got]

    def _read_all(self) -> _Got:
        left = self.qsize()
        got: _Got = []
        while left > 0:
            deliveries = self.source.read(min(left, 1000), 0.0)
            if not deliveries:
                break
            left -= len(deliveries)
            got.extend((d.token, self.prepare(d.event)) for d in deliveries)
        return got

    def qsize(self) -> int:
        """Events a memory subscription buffers for this lane (0 for a durable source)."""
        source = self.source
        return source.subscription.qsize() if isinstance(source, SubscriptionSource) else 0

    async def take_late_outcomes(self) -> None:
        """Account for batches stored inline whose read was given up (at a stop's deadline),
        if the lane's thread has finished them meanwhile."""
        target = self._inline_target()
        if target is not None:
            await self._take_outcomes(target[0])

    async def _wait_for_space(self, worker: SinkWorker, poll: float) -> None:
        """Back-pressure: leave events in the source while `worker`'s queue is full.

        Meanwhile the source is kept alive every `poll` seconds (see `_keep_alive`). If other
        sinks of the lane are flowing, the wait ends after `stall_timeout` seconds with
        `worker` stalled (see the module docstring).
        """
        if worker.space.is_set():
            return
        others_flowing = any(w is not worker and not w.stalled for w in self.workers)
        deadline = (
            time.monotonic() + self.stall_timeout
            if self.stall_timeout > 0 and others_flowing
            else None
        )
        while not worker.space.is_set():
            wait = poll
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    worker.mark_stalled(self.stall_timeout)
                    return
                wait = min(poll, left)
            try:
                await asyncio.wait_for(worker.space.wait(), wait)
            except TimeoutError:
                await self._keep_alive()

    async def _keep_alive(self) -> None:
        """Tell a durable source that what it handed over is still being worked on (sources
        with `keep_alive()`: Redis streams consumers), so it is not reclaimed meanwhile. Each
        read does it too, in `_read`."""
        if self._source_keep_alive is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self.executor, self._source_keep_alive)

    async def _distribute(self, got: list[tuple[Any, dict[str, Any]]]) -> None:
        self.read += len(got)
        self._unsettled += len(got)
        now = time.monotonic()
        n = len(self.workers)
        items = [Item(payload, AckState(token, n), now) for token, payload in got]
        stalled = []
        for worker in self.workers:
            if worker.stalled:
                stalled.append(worker)
            else:
                worker.put(items)
        for worker in stalled:
            await worker.shed(items)

    async def hand_back(self, items: Sequence[Item]) -> None:
        """Leave `items` unacknowledged for the next reader: the shutdown deadline cut them off.
        A `Releasable` source is told at `close()`, so that it does not count this delivery
        toward its poison-entry limit (five rolling restarts while a sink's destination was
        down moved its backlog to the dead-letter stream, trial 146)."""
        await self.settle(items, ok=False)
        self._handed_back.update(dict.fromkeys(item.ack.token for item in items))

    async def settle(self, items: Sequence[Item], *, ok: bool) -> None:
        """Record one sink's outcome for `items`; acknowledge those every sink is done with."""
        tokens = []
        for item in items:
            state = item.ack
            state.remaining -= 1
            if not ok:
                state.keep_pending = True
            if state.remaining == 0:
                self._unsettled -= 1
                if not state.keep_pending:
                    tokens.append(state.token)
        self._settled.set()
        if not tokens or not self.durable:
            self.acked += len(tokens)
            return
        # Not awaited: the sink worker goes on with its next batch while the ack waits for
        # the source's thread (which may be blocked in a read for up to the poll interval).
        future = asyncio.get_running_loop().run_in_executor(self.executor, self._ack, tokens)
        self._acks[future] = len(tokens)
        future.add_done_callback(self._ack_done)

    def _ack_done(self, future: asyncio.Future[None]) -> None:
        self._acks.pop(future, None)

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
                exc,
            )
        else:
            self.acked += len(tokens)

    def _release_and_close(self) -> None:
        releasable = capability(self.source, Releasable) if self._handed_back else None
        try:
            if releasable is not None:
                releasable.release(list(self._handed_back))  # must not raise; closed if it does
        finally:
            self.source.close()

    async def close(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for pending acknowledgements, then close the source in
        its thread, within the same deadline.

        A source that does not answer (a frozen server: the source's thread is blocked in a
        call) is left behind past the deadline, with a warning: what it did not acknowledge
        stays pending in it, to be delivered again.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._acks:
            waiting = dict(self._acks)
            _, unconfirmed = await asyncio.wait(list(waiting), timeout=timeout)
            if unconfirmed:
                # Deliveries, not calls: "11 acknowledgement(s)" were 110 deliveries (trial 244).
                log.warning(
                    "lane %s: the acknowledgements of %d deliveries were not confirmed within "
                    "%.1f s (the source does not answer); those deliveries may stay pending and "
                    "be delivered again",
                    self.name,
                    sum(waiting[f] for f in unconfirmed),
                    timeout,
                )
        try:
            await asyncio.wait_for(
                loop.run_in_executor(self.executor, self._release_and_close),
                max(0.0, deadline - loop.time()),
            )
        except TimeoutError:
            log.warning(
                "lane %s: its source did not close within %.1f s (it does not answer); going on "
                "without it",
                self.name,
                timeout,
            )
        except Exception as exc:
            log.warning("closing source of lane %s failed: %s", self.name, exc)
        self.executor.shutdown(wait=False, cancel_futures=True)
