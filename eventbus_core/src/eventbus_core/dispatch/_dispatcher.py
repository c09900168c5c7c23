"""`Dispatcher`: delivers every event to every sink at least once, or dead-letters it.

Pipeline per event: source -> transform -> redact -> one queue per sink -> batches (by size
and by time) -> `sink.send()` with retries -> acknowledgement to the source once every sink
of the event's lane has sent or dead-lettered it. See docs/dispatcher.md for the design.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import inspect
import json
import logging
import os
import signal
import sys
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Final, Self

from eventbus_core._bus import check_count, check_positive_seconds, check_seconds
from eventbus_core._errors import SettingsError, error_type_of, message_of
from eventbus_core._log import add_patterns, get_logger, scrub
from eventbus_core._overrun import (
    CANCEL_GRACE,
    STOP_MARGIN,
    call_bounded_async,
    cancel_bounded,
    run_bounded,
)
from eventbus_core._plugins import PluginRegistry
from eventbus_core._settings import EventBusSettings
from eventbus_core._sink import Sink, sink_problem
from eventbus_core._source import AckableSource, SubscriptionSource
from eventbus_core.batching import at_fork
from eventbus_core.capabilities import ReadableLog, capability, is_cross_process
from eventbus_core.dispatch._deadletter import DeadLetter
from eventbus_core.dispatch._lane import Lane
from eventbus_core.dispatch._loop_lag import LoopLagWatch
from eventbus_core.dispatch._payload import PayloadPreparer
from eventbus_core.dispatch._retry import RetryPolicy
from eventbus_core.dispatch._setup import dispatcher_arguments
from eventbus_core.dispatch._sources import GroupMode, Source, resolve_sources
from eventbus_core.dispatch._stats import DispatcherStats
from eventbus_core.dispatch._stop_watchdog import StopWatchdog
from eventbus_core.dispatch._stuck import CHECK_EVERY, EndedButStuck
from eventbus_core.dispatch._worker import SinkWorker
from eventbus_core.redact._redact import Redactor
from eventbus_core.transform._llm import Transform

__all__ = ["Dispatcher", "GroupMode", "Source"]

log = get_logger("eventbus.dispatcher")

_CLOSE_BOUND = 2.0
POLL_MAX = 5.0
"""The longest `poll_interval`: a read waits that long, and a stop waits for the read."""
"""Seconds closing the sources may take after the shutdown deadline (acknowledging what was
sent, closing connections); a source that does not answer is left behind after it."""


class Dispatcher:
    """Consume events, transform and redact them, and deliver them in batches to sinks.

    Args:
        source: A bus, a `Subscription`, an `AckableSource`, or `{sink name: AckableSource}`.
            A bus gets one subscription (or, with `ConsumerGroups`, consumer group `GROUP:SINK`)
            per sink in `per-sink` mode, a single one in `shared` mode.
        sinks: The sinks (each with a unique `name`).
        batch_size: Most events per `send()` (Go original: 100).
        flush_interval: Seconds the first event of a partial batch waits at most (Go: 5).
        queue_size: Events each sink's queue holds before reading pauses (back-pressure).
        stall_timeout: Shared mode (one source, several sinks): seconds reading waits at most
            for a sink whose queue is full. Then that sink is stalled: its share of what is read
            next is dead-lettered (replayable to it with `eventbus replay`), counted
            (`SinkStats.shed`, `stalls`) and logged, while the other sinks go on; it receives
            events again once its queue has drained to half. 0: wait as long as it takes. A
            lane of one sink (per-sink mode) always waits, losing nothing.
        subscription_buffer: Events each subscription of a bus holds, where the backend
            offers the choice (memory, Redis): room for bursts faster than the sinks. None:
            the bus's own `buffer_size`.
        retry: Backoff policy for failed sends.
        dead_letter: Where refused batches go; None counts them as dropped (and logs ERROR).
        transform: `transform(event) -> dict`; the `LLMTransformer` by default. If it raises,
            the event goes out with its bare fields and a `transform_error`.
        redactor: Redaction applied to every payload before any sink or dead letter sees it.
            None (the default) means the default rules plus what the environment's
            `EVENTBUS_REDACT_HEADERS` and `EVENTBUS_REDACT_PATTERNS` add
            (`Redactor.from_environment()`); opting out is explicit: `redactor=NO_REDACTION`.
            Its extra patterns also apply to log lines.
        group_mode: How a bus is read (see `GroupMode`).
        group: Base consumer-group name on a bus with `ConsumerGroups` (default: the bus's
            `default_group`).
        consumer_name: Consumer name within the group (default: the backend's choice).
        shutdown_timeout: Seconds the dispatcher takes at most, once stopped, to send what it
            holds; the rest is handed back unacknowledged (or dead-lettered, for memory).
        stats_interval: Seconds between DEBUG log lines of the figures (0: never).
        poll_interval: Longest single wait on the source, so a stop request is seen quickly.

    Raises:
        ValueError: no sinks, two with one name, a setting out of range, or a count
            (`batch_size`, `queue_size`) that is not an int.
        TypeError: an object in `sinks` is not a sink (no `name`, or a `send` or `close` that
            is not `async def`).
        SettingsError: (a `ValueError`) with `redactor=None`, the environment's
            `EVENTBUS_REDACT_PATTERNS` holds an invalid regular expression.
    """

    def __init__(
        self,
        source: Source,
        sinks: Sequence[Sink],
        *,
        batch_size: int = 100,
        flush_interval: float = 5.0,
        queue_size: int = 1000,
        stall_timeout: float = 5.0,
        subscription_buffer: int | None = 10_000,
        retry: RetryPolicy | None = None,
        dead_letter: DeadLetter | None = None,
        transform: Transform | None = None,
        redactor: Redactor | None = None,
        group_mode: GroupMode = "per-sink",
        group: str | None = None,
        consumer_name: str | None = None,
        shutdown_timeout: float = 10.0,
        stats_interval: float = 60.0,
        poll_interval: float = 0.25,
    ) -> None:
        if not sinks:
            raise ValueError("a dispatcher needs at least one sink (EVENTBUS_SINKS / --sink)")
        for sink in sinks:
            problem = sink_problem(sink)
            if problem is not None:
                raise TypeError(f"not a sink: {problem} (docs/plugins/writing-a-sink.md)")
        names = [s.name for s in sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"sink names must be unique, got {names}")
        # Ints, as the settings make them: a batch_size of 1.5 failed every read for ever
        # (trial 134).
        check_count("batch_size", batch_size, 1)
        check_count("queue_size", queue_size, 1)
        if queue_size < batch_size:
            raise ValueError(f"need 1 <= batch_size <= queue_size, got {batch_size}, {queue_size}")
        # As the settings refuse them (trial 116): a poll of 0 or nan spun a core, an infinite
        # shutdown_timeout overflowed the stop's wait.
        for label, seconds in (
            ("stall_timeout", stall_timeout),
            ("shutdown_timeout", shutdown_timeout),
            ("stats_interval", stats_interval),
        ):
            check_seconds(label, seconds)
        for label, seconds in (
            ("flush_interval", flush_interval),
            ("poll_interval", poll_interval),
        ):
            check_positive_seconds(label, seconds)
        if poll_interval > POLL_MAX:
            # A read waits that long for new entries, and a stop waits for the read: with 30 s,
            # stop() returned False and left the thread running (trial 121).
            raise ValueError(
                f"poll_interval must be at most {POLL_MAX:g} seconds, got {poll_interval!r}"
            )
        if group_mode not in ("per-sink", "shared"):
            raise ValueError(f"group_mode must be 'per-sink' or 'shared', not {group_mode!r}")
        _check_parts(retry, dead_letter, transform, redactor)
        self.sinks = list(sinks)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.queue_size = queue_size
        self.stall_timeout = stall_timeout
        self.subscription_buffer = subscription_buffer
        self.retry = retry or RetryPolicy()
        self.dead_letter = dead_letter
        self.preparer = PayloadPreparer(transform, redactor)
        self.transform: Transform = self.preparer.transform
        self.redactor: Redactor = self.preparer.redactor
        add_patterns(self.redactor.extra_patterns)  # what payloads hide, logs hide too
        self.shutdown_timeout = shutdown_timeout
        self.stats_interval = stats_interval
        self.poll_interval = poll_interval
        self._source = source  # flushed when a started dispatcher is stopped at exit
        self._lanes = self._build_lanes(source, group_mode, group, consumer_name)
        self._stop_requested = False
        self._winding_down = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._ran = False  # run() once only: it closes the sinks, sources and dead letters
        self._ended = False  # run() closed everything
        self._parent_pid = os.getpid()  # who started it, for a forked child's warning
        self._forked_from = 0  # in a forked child of a started dispatcher: the parent's pid
        self._fork_reported = False
        self.owned_bus: Any = None  # a bus built for this dispatcher, stopped with it
        # What the owned bus's stop() may take (its EVENTBUS_STOP_TIMEOUT where the settings
        # gave one); past that and a margin, the dispatcher ends without it (see `_overrun`).
        self.owned_bus_stop_timeout = 10.0

    @classmethod
    def from_settings(
        cls,
        settings: EventBusSettings | None = None,
        *,
        bus: Any = None,
        sinks: Sequence[tuple[str, Mapping[str, str]]] | None = None,
        registry: PluginRegistry | None = None,
    ) -> Self:
        """Build a dispatcher from settings (the environment by default).

        A subclass gets an instance of itself, built with `cls(...)`.

        Args:
            settings: `EVENTBUS_SINKS`, batching, retry, dead-letter and redaction settings.
            bus: The bus to read; `create_bus(settings)` when omitted.
            sinks: `(name, options)` pairs overriding `EVENTBUS_SINKS`.
            registry: Plugin registry for sink names; the installed plugins by default.

        Raises:
            UnknownSinkError: a sink name no installed plugin provides.
            SettingsError: an invalid setting or sink option (the message names it).
            PluginError: a plugin's factory failed, or built no bus or sink.
        """
        settings = settings or EventBusSettings()
        arguments, owned = dispatcher_arguments(settings, bus=bus, sinks=sinks, registry=registry)
        dispatcher = cls(**arguments)
        dispatcher.owned_bus = owned
        dispatcher.owned_bus_stop_timeout = settings.stop_timeout
        return dispatcher

    # ------------------------------------------------------------------------- construction

    def _build_lanes(
        self, source: Source, mode: GroupMode, group: str | None, consumer: str | None
    ) -> list[Lane]:
        by_lane = resolve_sources(
            source,
            self.sinks,
            mode,
            group,
            consumer,
            batch_size=self.batch_size,
            subscription_buffer=self.subscription_buffer,
        )
        lanes = []
        replayable = is_cross_process(source) and capability(source, ReadableLog) is not None
        for name, src, lane_sinks in by_lane:
            durable = not isinstance(src, SubscriptionSource)
            lane = Lane(
                name,
                src,
                self.preparer,
                durable=durable,
                stall_timeout=self.stall_timeout,
                replayable=replayable,
            )
            lane.workers = [
                SinkWorker(
                    s,
                    lane,
                    batch_size=self.batch_size,
                    flush_interval=self.flush_interval,
                    queue_size=self.queue_size,
                    retry=self.retry,
                    dead_letter=self.dead_letter,
                    scrub=scrub,
                )
                for s in lane_sinks
            ]
            lanes.append(lane)
        return lanes

    # ------------------------------------------------------------------------------ running

    @property
    def workers(self) -> list[SinkWorker]:
        """Every sink worker, in sink order."""
        return [w for lane in self._lanes for w in lane.workers]

    @property
    def sources(self) -> dict[str, AckableSource]:
        """Each lane's source, by lane name (a sink's name, or `shared`)."""
        return {lane.name: lane.source for lane in self._lanes}

    def stats(self) -> DispatcherStats:
        """A snapshot of the figures (safe to call from any thread; values may lag a little)."""
        sinks = {w.name: w.snapshot() for w in self.workers}
        dropped = 0
        for lane in self._lanes:
            dropped += lane.never_read
            if isinstance(lane.source, SubscriptionSource):
                dropped += lane.source.subscription.dropped
        return DispatcherStats(
            sinks=sinks,
            read=sum(lane.read for lane in self._lanes),
            acked=sum(lane.acked for lane in self._lanes),
            source_dropped=dropped,
            lanes={lane.name: lane.figures() for lane in self._lanes},
        )

    @property
    def stopping(self) -> bool:
        """True once the dispatcher winds down (a stop was asked, or every source ended): it
        reads no more and sends what it holds (readiness fails from then on)."""
        return self._stop_requested or self._winding_down

    def request_stop(self) -> None:
        """Ask the dispatcher to stop (thread- and signal-safe); `run()` then winds down."""
        self._stop_requested = True
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stopping.set)

    async def run(self) -> DispatcherStats:
        """Dispatch until `request_stop()` or every source is exhausted; return the figures.

        Sinks, sources and the dead-letter destination are closed on return.

        Raises:
            SettingsError: a source reported that it is set up wrong (a Redis stream key that
                holds another type of value, say); raised once the rest has stopped and closed
                as on any stop (what was read is sent or left for redelivery).
        """
        with self._start_lock:  # against a start() in another thread (trial 162)
            if self._ran:
                # A second run read from closed sources without a pause (trial 157).
                raise RuntimeError(self._ran_message())
            self._ran = True
        return await self._run()

    async def _run(self) -> DispatcherStats:
        self._loop = asyncio.get_running_loop()
        self._stopping = stopping = asyncio.Event()
        if self._stop_requested:
            stopping.set()
        workers = {w: asyncio.create_task(w.run(), name=f"sink-{w.name}") for w in self.workers}
        readers = [
            asyncio.create_task(
                lane.read_loop(stopping, self.batch_size, self.poll_interval),
                name=f"read-{lane.name}",
            )
            for lane in self._lanes
        ]
        reporter = asyncio.create_task(self._report())
        lag_watch = asyncio.create_task(LoopLagWatch(self.workers).run(), name="loop-lag")
        stop_wait = asyncio.create_task(stopping.wait())
        stuck = EndedButStuck(self._lanes, self.workers, self.shutdown_timeout)
        try:
            await self._dispatch(readers, workers, stop_wait, stuck)
        except asyncio.CancelledError:
            # Cancelled (asyncio.wait_for, a task group, Ctrl-C under asyncio.run): a stop
            # request, not an end. What was read was neither sent, dead-lettered nor counted,
            # and the sinks were never closed (trial 159). The stop below runs within its
            # bounds, then the cancellation goes on.
            cancelled = True
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            stopping.set()
        else:
            cancelled = False
        self._winding_down = True
        log.info(
            "dispatcher stopping: sending what is queued (at most %.1f s)", self.shutdown_timeout
        )
        for w in workers:
            w.start_draining()
        _, pending = await asyncio.wait(
            [*readers, *workers.values()], timeout=self.shutdown_timeout
        )
        await cancel_bounded(pending)
        misconfigured: SettingsError | None = None
        for task in [*readers, *workers.values()]:
            if task.done() and not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                if isinstance(exc, SettingsError):
                    misconfigured = misconfigured or exc
                    continue  # raised below, once everything is closed
                log.error("dispatcher task %s failed: %r", task.get_name(), exc, exc_info=exc)
        stop_wait.cancel()
        reporter.cancel()
        lag_watch.cancel()
        await self._hand_back(workers)
        await self._close()
        self._ended = True
        final = self.stats()
        # Stopped by a configuration error, raised below as the one line a command prints: a
        # kilobyte of zero figures before it said nothing (trial 214).
        log.log(
            logging.DEBUG if misconfigured else logging.INFO,
            "dispatcher stopped: %s",
            json.dumps(final.as_dict()),
        )
        if final.source_dropped:
            log.warning(
                "%d event(s) were dropped before the dispatcher could read them (its sinks were "
                "slower than the publishers, or it stopped before it read them); raise "
                "EVENTBUS_DISPATCH_BUFFER for bursts",
                final.source_dropped,
            )
        if cancelled:
            raise asyncio.CancelledError
        if misconfigured is not None:
            raise misconfigured
        return final

    async def _dispatch(
        self,
        readers: list[asyncio.Task[None]],
        workers: Mapping[SinkWorker, asyncio.Task[None]],
        stop_wait: asyncio.Task[Any],
        stuck: EndedButStuck,
    ) -> None:
        """Read and send until a stop request, or until every source ended and what the sinks
        hold is sent (or they made no progress for too long)."""
        stopping = self._stopping
        assert stopping is not None
        while not stopping.is_set() and not all(r.done() for r in readers):
            await asyncio.wait(
                [stop_wait, *readers], timeout=CHECK_EVERY, return_when=asyncio.FIRST_COMPLETED
            )
            running = [lane for lane, r in zip(self._lanes, readers, strict=True) if not r.done()]
            if not all(lane.source_ended() for lane in running):
                stuck.reset()
            elif (waited := stuck.waited()) is not None:
                self._give_up(waited)
                return
        if not stopping.is_set():
            # Every source ended and was read: what the sinks hold is sent, however long that
            # takes while they go on (only a sink that makes no progress cuts it short).
            draining = [t for t in workers.values() if not t.done()]
            while draining and not stopping.is_set():
                await asyncio.wait(
                    [stop_wait, *draining],
                    timeout=CHECK_EVERY,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                draining = [t for t in draining if not t.done()]
                if draining and (waited := stuck.waited()) is not None:
                    self._give_up(waited)
                    return

    def _ran_message(self) -> str:
        if self._ended or (self._thread is not None and not self._thread.is_alive()):
            return _RAN_ALREADY
        return "this dispatcher runs already (run() or start() was called): one run at a time"

    def _give_up(self, waited: float) -> None:
        stuck = [w.name for w in self.workers if not w.idle or w.lane.inline_busy()]
        log.warning(
            "every source ended, but nothing was read or sent for %.1f s (sink(s) %s: a send "
            "that does not return?); stopping as on SIGTERM",
            waited,
            ", ".join(stuck) or "none",
        )

    async def _hand_back(self, workers: Mapping[SinkWorker, asyncio.Task[None]]) -> None:
        """Account for what the deadline cut off: requeue (durable) or dead-letter (memory)."""
        stopped = f"dispatcher stopped after {self.shutdown_timeout} s"
        for lane in self._lanes:
            held = lane.give_up_inline()  # a send_blocking() the deadline cut off
            for w in lane.workers if held else ():  # one: a lane of one sink stores inline
                w.take_back_inline(held)
            await lane.take_late_outcomes()  # a batch stored inline as its read was given up
            unread = await lane.take_unread()
            for w in lane.workers if unread else ():
                w.stats.received += len(unread)
                await w.dead_letter_batch(unread, f"{stopped} before it read them", 0)
        for w in workers:
            if w.cut_sent:  # stored by a send the deadline cut off: settled as sent
                stored, w.cut_sent = w.cut_sent, []
                await w.lane.settle(stored, ok=True)
            current, queued, tried = w.current, [*w.queue], w.current_attempts
            failed = w.retrying_after
            left = [*current, *queued]
            w.current, w.queue = [], type(w.queue)()
            if not left:
                continue
            if w.lane.durable:
                w.stats.requeued += len(left)
                await w.lane.hand_back(left)
                log.warning(
                    "sink %s: %d events not sent before the shutdown deadline; left "
                    "unacknowledged for redelivery",
                    w.name,
                    len(left),
                )
            else:
                # The batch being sent was attempted (the sink may even hold it); the queued
                # ones never were: each dead letter says which.
                if current and tried:
                    if failed is not None:  # no send running: it waited to be retried
                        reason = (
                            f"{stopped} while waiting to retry it; its last attempt failed: "
                            f"{error_type_of(failed)}: {failed}"
                        )
                    else:
                        reason = f"{stopped} before the sink confirmed it (it may have it)"
                    await w.dead_letter_batch(current, reason, tried)
                else:
                    queued = left  # taken, but not sent yet either
                if queued:
                    await w.dead_letter_batch(queued, f"{stopped} before delivery", 0)

    async def _close(self) -> None:
        # Together, each within `_CLOSE_BOUND`: a frozen server must not hold the stop that
        # EVENTBUS_SHUTDOWN_TIMEOUT bounds more than that (see `Lane.close`).
        await asyncio.gather(*(lane.close(_CLOSE_BOUND) for lane in self._lanes))
        for lane in self._lanes:
            # Published after take_unread() looked, as counted by the subscription's close
            # itself: a count taken before it missed what a Redis list's subscriber thread
            # handed over meanwhile (review 181).
            # (And what it still holds, if its close did not happen in time.)
            source = lane.source
            left = 0
            if isinstance(source, SubscriptionSource):
                left = source.subscription.discarded + source.subscription.qsize()
                lane.uncounted_at_close = source.subscription.uncounted_at_close
            if left:
                lane.never_read += left
                log.warning("lane %s: %d buffered events were never read", lane.name, left)
        # Together, each within its bound: one after another, three sinks whose close() hangs
        # took 12 s, past what stop() waits for (trial 260).
        await asyncio.gather(*(close_sink(sink) for sink in self.sinks))
        if self.dead_letter is not None:
            await self.dead_letter.close()
        if self.owned_bus is not None:
            try:
                await call_bounded_async(
                    self.owned_bus.stop,
                    self.owned_bus_stop_timeout + STOP_MARGIN,
                    "the bus's stop()",
                )
            except Exception as exc:
                log.warning("stopping the bus failed: %s", exc)

    async def _report(self) -> None:
        if self.stats_interval <= 0:
            return
        while True:
            await asyncio.sleep(self.stats_interval)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("dispatcher stats: %s", json.dumps(self.stats().as_dict()))

    async def serve(self) -> DispatcherStats:
        """`run()` with SIGTERM and SIGINT handled as `request_stop()` (main thread only)."""
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread, or a platform without signal handlers
        # The loop's handlers run only when the loop runs: one a plugin blocks would never
        # stop (see `StopWatchdog`).
        watchdog = StopWatchdog(self._stop_bound()) if installed else None
        if watchdog is not None:
            watchdog.install(installed)
        log.info(
            "dispatcher running (%s); stop with SIGTERM or SIGINT",
            ", ".join(f"{lane.name}: {lane.source_name}" for lane in self._lanes),
        )
        try:
            return await self.run()
        finally:
            if watchdog is not None:
                watchdog.close()
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _stop_bound(self) -> float:
        """Seconds a stop takes at most while the event loop runs (dispatcher.md, "Stopping"):
        the shutdown timeout, a send cut off then, closing the sources, the sinks' `close()`
        (all at once) and the bus the dispatcher built, each with its grace for ignoring
        cancellation."""
        bound = self.shutdown_timeout + CANCEL_GRACE + _CLOSE_BOUND
        bound += _CLOSE_BOUND + CANCEL_GRACE
        if self.owned_bus is not None:
            bound += self.owned_bus_stop_timeout + STOP_MARGIN
        return bound

    def _on_signal(self, sig: signal.Signals) -> None:
        if sig == signal.SIGINT and self._stop_requested:
            # A second Ctrl-C (after a first, or a SIGTERM): end at once, as every eventbus
            # command does; what was not sent is not acknowledged, so a backend that keeps
            # events (Redis, NATS) delivers it again to the next dispatcher.
            log.warning("received SIGINT again: stopping at once, without the shutdown's wait")
            raise KeyboardInterrupt
        log.info("received %s: stopping", sig.name)
        self.request_stop()

    # --------------------------------------------------------------------- from sync code

    def start(self) -> None:
        """Run the dispatcher in a background thread with its own event loop.

        The loop ends as `eventbus dispatch`'s does (`run_bounded`): a sink's task that swallows
        its cancellation, or a thread it started that never returns, cannot keep `stop()` from
        ending the thread (`asyncio.run` would wait for them without end)."""
        with self._start_lock:  # two threads at once: one starts, the other is told so
            self._start()

    def _start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("dispatcher already started")
        if self._forked_from:
            raise RuntimeError(
                f"this dispatcher was started in process {self._forked_from} and does not run "
                "in a forked child: build a new Dispatcher in this process"
            )
        if self._ran or self._thread is not None:
            raise RuntimeError(self._ran_message())
        self._ran = True  # here, under the lock: a run() racing this start() is refused
        self._thread = threading.Thread(
            target=run_bounded, args=(self._run(),), name="eventbus-dispatcher", daemon=True
        )
        self._thread.start()
        _STARTED.add(self)
        # A program that ends without stop() would lose what the sinks had not sent yet.
        atexit.register(self._stop_at_exit)

    def _stop_at_exit(self) -> None:
        """At interpreter exit, a started dispatcher nobody stopped: its bus hands on what it
        holds (`flush()`, when it has one: a memory bus's buffer exists nowhere else), then the
        dispatcher stops as `stop()` does, within its bounds."""
        if self._forked_from:
            self._left_in_a_forked_child()
            return
        if self._thread is None or not self._thread.is_alive():
            return
        flush = getattr(self._source, "flush", None)
        if callable(flush):
            with contextlib.suppress(Exception):  # a bus that fails here: stop all the same
                flush(self.shutdown_timeout)
        self.stop()

    def stop(self, timeout: float | None = None) -> bool:
        """Request a stop and wait for the background thread; True once it has ended.

        When it has not, up to 0.2 s more tell whether its event loop still answers (a stop
        under way) or not (a sink blocking it), and the WARNING says which.

        Args:
            timeout: Seconds to wait (default: the longest a stop takes: docs/dispatcher.md,
                "Stopping").
        """
        self.request_stop()
        if self._forked_from:
            self._left_in_a_forked_child()
            return True
        if self._thread is None:
            return True
        # Not the shutdown timeout plus 5 s: sinks whose close() hangs take up to 4 s more, and
        # a stop within its bounds was called a loop that "does not answer" (trial 260).
        wait = self._stop_bound() + 1.0 if timeout is None else timeout
        self._thread.join(wait)
        if self._thread.is_alive() and self._loop_answers():
            # Still stopping, its loop running: no sign of a blocked loop (trial 157 was told of
            # one after stop(1.0), 9 s before the shutdown timeout ran out; review 264, of a
            # wait past the shutdown timeout while sinks' close() ran out their bounds).
            log.warning(
                "dispatcher had not stopped within %.1f s: it may take up to %.1f s "
                "(EVENTBUS_SHUTDOWN_TIMEOUT, sending what is queued, then closing); stats() "
                "are not final yet: call stop() or join() again to wait for it",
                wait,
                self._stop_bound(),
            )
            return False
        if self._thread.is_alive():
            # Said, not only returned: a caller that ignores the False had no word of it, and
            # the figures read then do not add up (trial 124).
            log.warning(
                "dispatcher did not stop within %.1f s: its event loop does not answer (a sink "
                "that blocks it, e.g. a send() that sleeps or does blocking I/O instead of "
                "awaiting; see docs/plugins/writing-a-sink.md); stats() are not final, and what "
                "its subscriptions and sinks still hold is not counted yet",
                wait,
            )
            # The exit would wait as long again, for a loop that did not answer, and say it
            # twice (trial 128): this stop was the one the program asked for.
            atexit.unregister(self._stop_at_exit)
            return False
        atexit.unregister(self._stop_at_exit)
        return True

    def _loop_answers(self, within: float = 0.2) -> bool:
        """True if the dispatcher's event loop runs a callback within `within` seconds: a stop
        that has not ended is then still under way, not held by a sink blocking the loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        answered = threading.Event()
        try:
            loop.call_soon_threadsafe(answered.set)
        except RuntimeError:  # closed meanwhile
            return False
        return answered.wait(within)

    def _after_fork_in_child(self) -> None:
        """In a child of `os.fork()`: the thread that ran this dispatcher stayed in the
        parent. Its memory subscriptions are the child's too (the bus's contract), so what the
        child publishes waits in them, and nobody reads it: `stop()` and the exit count it
        (`source_dropped`, lanes' `never_read`) and say so. A child that published and
        stopped saw every figure at 0 (trial 157)."""
        self._forked_from = self._parent_pid
        self._thread = None
        # multiprocessing's children end with os._exit(), without atexit (trial 159): one of
        # its finalizers, after the bus's own exit delivery (priority 0), counts instead.
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None:
            mp_util.register_after_fork(self, _count_at_multiprocessing_exit)

    def _left_in_a_forked_child(self) -> None:
        """Count and report, once, what the child's subscriptions hold for this dispatcher."""
        if self._fork_reported:
            return
        self._fork_reported = True
        if is_cross_process(self._source):
            return  # a shared backend: the parent's dispatcher reads what the child publishes
        left = 0
        for lane in self._lanes:
            held = lane.qsize()
            lane.never_read += held
            left += held
        if left:
            log.warning(
                "dispatcher started in process %d does not run in this forked child (%d): %d "
                "event(s) published here were never read (counted in source_dropped); start a "
                "dispatcher in each worker process, or publish to a backend shared between "
                "processes (Redis, NATS), which the parent's dispatcher reads",
                self._forked_from,
                os.getpid(),
                left,
            )

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the background thread to end by itself (all sources exhausted)."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def __repr__(self) -> str:
        names = ",".join(s.name for s in self.sinks)
        return f"<Dispatcher sinks={names} lanes={len(self._lanes)}>"


_STARTED: weakref.WeakSet[Dispatcher] = weakref.WeakSet()  # started, in this process


def _count_at_multiprocessing_exit(dispatcher: Dispatcher) -> None:
    mp_util = sys.modules["multiprocessing.util"]
    mp_util.Finalize(dispatcher, dispatcher._left_in_a_forked_child, exitpriority=-1)


def _after_fork_in_child() -> None:
    for dispatcher in list(_STARTED):
        dispatcher._after_fork_in_child()
    _STARTED.clear()


at_fork(after_in_child=_after_fork_in_child)

_RAN_ALREADY: Final = (
    "this dispatcher has run already, and closed its sinks, sources and dead letters: build "
    "a new Dispatcher to run again"
)


def _check_parts(retry: object, dead_letter: object, transform: object, redactor: object) -> None:
    """The parts a dispatcher is built of, or a TypeError naming the argument: a `retry=3`
    killed each sink's worker at its first failure, silently (trial 157)."""
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise TypeError(f"retry must be a RetryPolicy (or None), not {type(retry).__name__}")
    if isinstance(dead_letter, type):
        raise TypeError(
            f"dead_letter must be an instance, not the class {dead_letter.__name__}: "
            f"{dead_letter.__name__}(...)"
        )
    if dead_letter is not None and not all(
        inspect.iscoroutinefunction(getattr(dead_letter, m, None)) for m in ("write", "close")
    ):
        raise TypeError(
            "dead_letter must have async write() and close() methods (a JsonlDeadLetter, say), "
            f"not {type(dead_letter).__name__}"
        )
    if transform is not None and not callable(transform):
        raise TypeError(
            f"transform must be callable, event -> dict, not {type(transform).__name__}"
        )
    if redactor is not None and not isinstance(redactor, Redactor):
        raise TypeError(
            "redactor must be a Redactor (NO_REDACTION for none), or None for the environment's "
            f"rules, not {type(redactor).__name__}"
        )


async def close_sink(sink: Sink) -> None:
    """`sink.close()`, bounded: one that has not returned within `_CLOSE_BOUND` seconds is
    cancelled, and left behind if it ignores that too (`cancel_bounded`), so that a sink's
    close() that never returns holds no stop (the dispatcher's, `eventbus replay`'s) for ever.
    A failure is logged."""
    closing = asyncio.create_task(_close_contained(sink), name=f"close-{sink.name}")
    done, _ = await asyncio.wait([closing], timeout=_CLOSE_BOUND)
    if not done:
        log.warning(
            "closing sink %s did not finish within %.0f s: cancelled", sink.name, _CLOSE_BOUND
        )
        await cancel_bounded([closing])
    elif (failed := closing.result()) is not None:
        log.warning(
            "closing sink %s failed: %s: %s", sink.name, type(failed).__name__, message_of(failed)
        )


async def _close_contained(sink: Sink) -> BaseException | None:
    """`sink.close()`; what it raised, returned: a `CancelledError` of its own (a library's
    timeout), a `KeyboardInterrupt` or `SystemExit` ended the whole stop, with no figures and
    the other sinks and the dead letter not closed (review 264, trial 263), as a send's is a
    failed attempt (`send_failure`). A cancellation from outside (the bound) goes on."""
    try:
        await sink.close()
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        return exc
    except BaseException as exc:  # a sink's KeyboardInterrupt is a failed close, not Ctrl-C
        return exc
    return None
