"""`Batcher`: the bounded buffer, its accounting and the wake protocol, whichever driver drains.

The hot path is `publish()`: an append to a deque and two flag reads. It wakes the drainer only
when the drainer sleeps (after a quiet spell) or when the buffer passes half full; waking
anything per event would cost more than the append. The driver that drains is chosen at the
first wake (see `_select`): a thread (`ThreadDriver`) or the publishing event loop
(`LoopDriver`), and `flush()`/`close()` work the same over both.

Accounting: `accepted == taken + len(buffer)`; every taken event is settled once (`done`): as
delivered, as lost (given up at `close()`'s deadline) or as the parent's (after a fork).
`refused` counts what `publish()` turned away. `finalize()` settles everything left as lost,
and the figures are final from then on: a result that arrives after it (a write whose reply
came late) changes none of them, as the subscriptions `close()` ended never got it either.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final, Literal, Protocol, runtime_checkable

from eventbus_core._bus import check_positive_seconds, check_stop_timeout
from eventbus_core._event import Event
from eventbus_core._log import get_logger
from eventbus_core.batching._drops import DropReport
from eventbus_core.batching._fork import (
    at_fork,
    check_fork,
    check_fork_when_refusing,
    fork_announced,
    start_after_fork_in_child,
)
from eventbus_core.batching._late import LateRefusals, say_late_refusals
from eventbus_core.batching._not_event import report_not_an_event

if TYPE_CHECKING:
    from eventbus_core.batching._loop import LoopDriver
    from eventbus_core.batching._thread import ThreadDriver

__all__ = ["PUBLISH_PATHS", "BatchClient", "Batcher", "PublishPath"]

log = get_logger("eventbus")

PublishPath = Literal["auto", "thread", "asyncio"]
PUBLISH_PATHS: Final[tuple[PublishPath, ...]] = ("auto", "thread", "asyncio")

_EXIT_PROGRESS: Final = 0.5  # seconds without a delivery after which an exit stops waiting
# The same before the writer has settled anything: its first write also connects, and may
# create its stream (a replicated NATS stream took up to 0.7 s on a healthy cluster, and a
# process that exited at once lost everything, trial 125).
_EXIT_FIRST_WRITE: Final = 2.0
_LIVE: weakref.WeakSet[Batcher] = weakref.WeakSet()  # rebuilt in forked children
_OPEN: weakref.WeakSet[ExitDelivery] = weakref.WeakSet()  # flushed at interpreter exit


class ExitDelivery(Protocol):
    """What the interpreter's exit waits for: a buffer that a daemon thread delivers (and that
    dies with the process). `Batcher` is one; a backend with a writer of its own registers
    with `deliver_at_exit()`, and `flush_before_exit()` does the rest."""

    label: str
    """Names the writer in the exit's warning."""
    exit_timeout: float
    """Seconds the exit waits for it at most."""

    @property
    def closed(self) -> bool:
        """True once stopped: nothing is waited for then."""

    def flush(self, timeout: float | None, /) -> bool:
        """Wait up to `timeout` for what is accepted now to be settled; True if it was."""

    def pending(self) -> int:
        """Events accepted and not settled yet."""

    def settled(self) -> int:
        """Events settled so far (delivered or given up): the exit's measure of progress."""

    def unsettled(self) -> tuple[int, int]:
        """`pending()`, and how many of those were taken for a write that has not answered,
        read together."""


def deliver_at_exit(delivery: ExitDelivery) -> None:
    """Have the interpreter's exit wait for `delivery` (held weakly), as for every `Batcher`."""
    _open(delivery)


def _open(delivery: ExitDelivery) -> None:
    _OPEN.add(delivery)
    _flush_at_multiprocessing_exit()


def deliver_while_progressing(
    flush: Callable[[float], bool], settled: Callable[[], int], timeout: float
) -> bool:
    """Call `flush` in short slices until it returns True (True), `timeout` seconds pass, or
    `_EXIT_PROGRESS` seconds go by without an event settled (False): a backend that delivers
    nothing is down, and an exit is not held for it. `settled()` counts the events settled so
    far; while it is 0 (no write has settled yet: connecting, creating a stream), the wait is
    `_EXIT_FIRST_WRITE`. (Slices of a tenth of `_EXIT_PROGRESS`: a backend that dies in the
    middle of a slice holds the exit that long after its last delivery, not up to twice it.)"""
    now = time.monotonic()
    deadline = now + timeout
    last_count, last_progress = settled(), now
    patience = _EXIT_PROGRESS if last_count else _EXIT_FIRST_WRITE
    while (left := deadline - now) > 0:
        if flush(min(left, _EXIT_PROGRESS / 10)):
            return True
        now = time.monotonic()
        count = settled()
        if count != last_count:
            last_count, last_progress, patience = count, now, _EXIT_PROGRESS
        elif now - last_progress >= patience:
            break
    return False


@runtime_checkable
class ReportsDrops(Protocol):
    """An `ExitDelivery` that says its buffer's refusals in the log at most once a minute: the
    exit has it say what is left to say (`report_drops(final=True)`)."""

    def report_drops(self, *, final: bool = False) -> None:
        """Say the refusals not said yet; with `final`, whatever the minute."""


def flush_before_exit(delivery: ExitDelivery, why: str, timeout: float | None = None) -> bool:
    """Deliver what `delivery` holds before the loop or the process goes away: wait up to
    `timeout` (its `exit_timeout`) while it makes progress (`deliver_while_progressing`), and
    log what is still undelivered then. True if all was.

    Refusals not said yet are said then (`ReportsDrops`), whatever the minute: a server's
    worker that ended without `stop()` after a backend's outage had said 114 of 6,930 (trial
    243), the rest held back by the once-a-minute bound until the process was gone.
    """
    if delivery.closed:
        return True  # stopped: its stop() said everything
    try:
        if not delivery.pending():
            return True
        wait = delivery.exit_timeout if timeout is None else timeout
        if deliver_while_progressing(delivery.flush, delivery.settled, wait):
            return True
        left, unanswered = delivery.unsettled()
        log_undelivered(delivery.label, left, why, unanswered=unanswered)
        return False
    finally:
        if isinstance(delivery, ReportsDrops):
            # A line to log must not replace what the exit returns or raises (review 252).
            with contextlib.suppress(Exception):
                delivery.report_drops(final=True)


def log_undelivered(label: str, count: int, why: str, *, unanswered: int = 0) -> None:
    """The warning of an exit that could not wait for everything: what is lost, and the cure.

    `unanswered` of the `count` were taken for a write that has not answered: the backend may
    hold them (or some of them), so the warning does not call them lost outright."""
    unsure = (
        # Taken for a write that has not been confirmed: it may have reached the backend (a
        # backend that knows which never left, a refused connection, leaves those out).
        f" ({unanswered} of them in a write not confirmed yet: the backend may hold some of those)"
        if unanswered
        else ""
    )
    log.warning(
        "%s: %d event(s) accepted and not delivered yet when %s%s; they are lost if the "
        "process ends now (stop() the bus before the end, with the deadline you want)",
        label,
        count,
        why,
        unsure,
    )


class BatchClient(Protocol):
    """What a backend gives its `Batcher`: the work of one drain cycle."""

    def cycle(self) -> bool:
        """Take from the buffer (`Batcher.take()`), hand it on, settle it (`Batcher.settle()`);
        also retry what earlier cycles parked. True when anything moved."""

    def next_due(self, now: float) -> float | None:
        """Seconds until a cycle is needed though nothing new was published (a retry, a reply
        to read); None when the backend holds nothing unsettled."""


class Batcher:
    """Bounded, non-blocking buffer drained in cycles by a thread or by the publishing loop.

    Args:
        client: The backend's drain cycle.
        buffer_size: Events held before `publish()` refuses (and counts) more.
        linger: Seconds between cycles while traffic flows: bounds delivery latency without a
            wake-up per event.
        path: `auto` (the loop publish() first wakes the drainer from, else a thread), `thread`
            or `asyncio` (like auto, and a thread started outside any loop hands over to the
            first loop that publishes).
        label: Names the drainer in logs and its thread ("eventbus memory worker").
        bound_in_flight: Also count taken, unsettled events against `buffer_size` (a batch
            being written still holds memory).
        on_thread_exit: Called by the drainer thread as it ends after `close()`.
        on_fork_in_child: Called in a forked child after the batcher was rebuilt, with the
            number of events the parent still held (the parent's to deliver).
        register_fork: Rebuild in forked children by itself (`os.register_at_fork`); False
            when the backend calls `before_fork()` and the `after_fork_*()` hooks in its own
            order.
        exit_timeout: Seconds `flush_at_exit()` waits at most: when the loop that drains shuts
            down, and at interpreter exit (`atexit`), with events accepted and not delivered.
        blocking_cycles: A cycle run off the loop may block on network I/O (the Redis writer's
            synchronous writes). `flush()` and `close()` then never run one on the caller's
            thread, which may be the loop's own: they wait for the loop while it runs and is
            not the caller's, else a thread takes over (and `close()` cuts it at its deadline).
        held: How many events the backend settled from the buffer but still holds for a retry
            (a full subscriber's overflow, parked). `flush()`, `close()` and the exits wait
            for those too, and `pending()` counts them: a loop that ends, or a process that
            exits, while some are parked would otherwise leave them in no figure.
        unanswered: How many of the taken, unsettled events the backend has sent without an
            answer (so it may hold them), for the warning of an exit that could not wait. By
            default every taken, unsettled event counts: a backend that knows which of them
            never left (a refused connection) says so here.
    """

    def __init__(
        self,
        client: BatchClient,
        *,
        buffer_size: int,
        linger: float,
        path: PublishPath = "auto",
        label: str = "eventbus drainer",
        thread_name: str = "eventbus-drainer",
        bound_in_flight: bool = False,
        on_thread_exit: Callable[[], None] | None = None,
        on_fork_in_child: Callable[[int], None] | None = None,
        register_fork: bool = True,
        exit_timeout: float = 5.0,
        blocking_cycles: bool = False,
        held: Callable[[], int] | None = None,
        unanswered: Callable[[], int] | None = None,
    ) -> None:
        if path not in PUBLISH_PATHS:
            raise ValueError(
                f"publish path must be one of {', '.join(PUBLISH_PATHS)}, got {path!r} "
                "(EVENTBUS_PUBLISH_PATH when built from settings)"
            )
        # More than 0: at 0 the drainer busy-looped a core (trial 261), for every backend that
        # drains through a Batcher.
        check_positive_seconds("linger", linger)
        self.client = client
        self.buffer_size = buffer_size
        self.linger = linger
        self.path: PublishPath = path
        self.label = label
        self.thread_name = thread_name
        self.on_thread_exit = on_thread_exit
        self.blocking_cycles = blocking_cycles
        self.exit_timeout = exit_timeout
        self._held: Callable[[], int] = held if held is not None else _nothing_held
        self._unanswered = unanswered
        self._on_fork_in_child = on_fork_in_child
        self._buffer: deque[Event] = deque()
        # Half full wakes the drainer; a buffer of one is full at its first event (max(1, ...)
        # made it wait for the linger timer, refusing what came meanwhile).
        self._high_water = buffer_size // 2
        self._closed = False
        self._final = False
        self._abandoned = False
        self._warned_no_loop = False
        self._warned_no_thread = False
        self.refused = 0
        self._refused_otherwise = 0  # of `refused`: not for a full buffer (not an `Event`, closed)
        self._late = LateRefusals(label)  # of those: published once `close()` had begun
        self._drops = DropReport(label, buffer_size)
        self.taken = 0
        self.done = 0
        self.delivered = 0
        self.lost = 0
        # The hot path: buffer `event`; False (and counted in `refused`) when closed or full.
        # Never blocks. A bus may expose it as its own `publish` (one call less per event).
        self.publish: Callable[[Event], bool] = (
            self._publish_held if bound_in_flight else self._publish_buffered
        )
        self._new_sync_state()
        if register_fork:
            _LIVE.add(self)
        _open(self)

    def start(self) -> None:
        """Start the drainer thread now when `path` is `thread` (else the first publish() chooses
        the driver). Call it once what `cycle()` uses is set up: a thread that is asleep when
        the first events come takes them in one batch."""
        if self.path == "thread" and not self._closed and self._driver is None:
            self._select()

    def _new_sync_state(self) -> None:
        if hasattr(self, "_drops"):  # a forked child: its lock may be the parent's, held
            self._drops.after_fork_in_child(self.refused - self._refused_otherwise)
            self._late.after_fork_in_child()
        self.lock = threading.Lock()  # guards the counters and taking from the buffer
        # Held for each drain cycle, whoever runs it (the thread, the loop, an inline flush).
        self.cycle_lock = threading.Lock()
        self._flushed = threading.Condition(threading.Lock())
        self._flush_waiters = 0
        self._driver_lock = threading.Lock()
        self._driver: ThreadDriver | LoopDriver | None = None
        # Nothing drains yet: the first publish() wakes, and so chooses, the driver.
        self._sleeping = True
        self._kicked = False

    # ------------------------------------------------------------------------------ hot path

    def _publish_buffered(self, event: Event) -> bool:
        """Buffer `event` and return at once; never blocks, never raises for the backend.
        A full buffer, a stopped bus or something that is not an `Event` is refused:
        counted as dropped (False)."""
        buf = self._buffer
        depth = len(buf)
        if self._closed or depth >= self.buffer_size:
            self._refuse()
            return False
        # `__class__` first: the exact class is the usual case, and the cheapest test of it
        # (about 60 instructions a call, where `isinstance` alone cost 140). Reading a slot
        # instead took the Event class itself, whose slots are attributes too (helper-110).
        if event.__class__ is not Event and not isinstance(event, Event):
            return self._refuse_not_event(event)  # type: ignore[unreachable]  # untyped callers
        buf.append(event)
        if self._sleeping or (depth >= self._high_water and not self._kicked):
            self.kick()
        return True

    def _publish_held(self, event: Event) -> bool:
        """Buffer `event` and return at once; never blocks, never raises for the backend.
        A full buffer (events taken and not yet settled count too), a stopped bus or
        something that is not an `Event` is refused: counted as dropped (False)."""
        buf = self._buffer
        depth = len(buf)
        # Taken, unsettled events count too: at most `buffer_size` events wait in memory.
        if self._closed or depth + self.taken - self.done >= self.buffer_size:
            self._refuse()
            return False
        if event.__class__ is not Event and not isinstance(event, Event):
            return self._refuse_not_event(event)  # type: ignore[unreachable]  # untyped callers
        buf.append(event)
        if self._sleeping or (depth >= self._high_water and not self._kicked):
            self.kick()
        return True

    # Buses expose these as their own `publish`: a call with the wrong arguments names that,
    # not this class's private method ("publish() missing 1 required positional argument").
    _publish_buffered.__qualname__ = _publish_held.__qualname__ = "publish"
    _publish_buffered.__name__ = _publish_held.__name__ = "publish"

    def _refuse_not_event(self, given: object) -> bool:
        self._refuse(not_an_event=True)
        report_not_an_event(given, self.label)
        return False

    def _refuse(self, *, not_an_event: bool = False) -> None:
        with self.lock:
            self.refused += 1
            # Not for a full buffer: not an Event, or the bus closed (review 217: the drop
            # line blamed the buffer for publishes made during shutdown).
            self._refused_otherwise += not_an_event or self._closed
            if self._closed and not not_an_event:
                self._late.count()
            refused = self.refused
        check_fork_when_refusing(refused)

    def kick(self) -> None:
        """Wake the drainer (choosing it, at the first wake)."""
        # Once per wake, not per event (a system call costs more than the rest of publish()):
        # a child forked without Python's fork hooks still has its parent's drainer here.
        check_fork()
        driver = self._driver
        if driver is None or not driver.kick():
            self._select()

    def wake_now(self) -> None:
        """Ask for a cycle at once, not after `linger` (a reply the backend waits for came)."""
        if self._final:
            return
        driver = self._driver
        if driver is None or not driver.kick(urgent=True):
            self._select()

    def drain_now(self) -> None:
        """`wake_now()`, but on the loop that drains, the cycle runs here and now: for a
        backend's own callback on that loop (its reply came and a full batch waits). Asking
        with `call_soon` waits for the loop's next iteration, which a saturated server reaches
        milliseconds later: the Redis writer sat idle 7 ms after each reply (uvicorn, 10,000
        requests/s), a quarter of its time, and dropped a fifth of the events."""
        if self._final:
            return
        driver = self._driver
        if driver is None or not driver.drain_here():
            self.wake_now()

    def draining_loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop whose drain runs the current cycle; None in a thread's cycle or one
        run inline by `flush()`/`close()` (where the backend may block on I/O)."""
        driver = self._driver
        loop: asyncio.AbstractEventLoop | None = getattr(driver, "loop", None)
        if loop is not None and driver is not None and driver.is_current():
            return loop
        return None

    def _select(self) -> None:
        """Choose and start the driver: the running loop's, or a thread (see `path`)."""
        from eventbus_core.batching._loop import LoopDriver
        from eventbus_core.batching._thread import ThreadDriver

        loop = None if self.path == "thread" else asyncio._get_running_loop()
        with self._driver_lock:
            old = self._driver
            if old is not None and old.kick():  # another thread chose meanwhile
                return
            new: ThreadDriver | LoopDriver
            if loop is not None and not self._closed:
                new = LoopDriver(self, loop)
            else:
                if self.path == "asyncio" and not self._warned_no_loop:
                    self._warned_no_loop = True
                    log.warning(
                        "%s: publish() ran outside any event loop with "
                        "EVENTBUS_PUBLISH_PATH=asyncio; a thread drains until a loop publishes",
                        self.label,
                    )
                new = ThreadDriver(self)
            if old is not None:
                old.retire()
            self._driver = new
            self._start(new)

    def switch_to_thread(self, retiring: LoopDriver) -> None:
        """The loop of `retiring` is gone (stopped, closed or shutting down): a thread drains
        what is left, and stays until a loop takes over again."""
        with self._driver_lock:
            if self._driver is retiring:
                self._to_thread(retiring)

    def _to_thread(self, current: ThreadDriver | LoopDriver | None) -> ThreadDriver:
        """Retire `current` and start a thread drainer in its place; with _driver_lock held.
        The one way every hand-over to a thread (loop gone, flush, close) is made."""
        if current is not None:
            current.retire()
        driver = _thread_driver_type()(self)
        self._driver = driver
        self._start(driver)
        return driver

    def _start(self, driver: ThreadDriver | LoopDriver) -> None:
        # Called with _driver_lock held. publish() must not raise: where no thread can start
        # (the interpreter is shutting down), what is buffered stays accepted, and close() or
        # finalize() counts it as lost.
        try:
            driver.start()
        except RuntimeError as exc:
            self._driver = None
            if not self._warned_no_thread:
                self._warned_no_thread = True
                log.warning("%s: cannot start its drainer (%s); events wait", self.label, exc)

    def wants_loop(self, driver: ThreadDriver) -> bool:
        """A sleeping thread is woken from a running loop: should that loop drain instead?"""
        return self.path != "thread" and asyncio._get_running_loop() is not None

    # -------------------------------------------------------------------------- drain side

    def take(self, limit: int | None = None) -> tuple[int, list[Event]]:
        """Take up to `limit` buffered events (all: None): the first one's sequence number
        (events are numbered in publish order as they are taken) and the events."""
        buf = self._buffer
        if not buf:
            return self.taken, []
        popleft = buf.popleft
        with self.lock:
            first = self.taken
            if self._final or self._abandoned:  # close() settles what is left itself
                return first, []
            n = len(buf) if limit is None else min(len(buf), limit)
            batch = [popleft() for _ in range(n)]
            self.taken = first + n
        return first, batch

    def settle(self, n: int, *, delivered: bool) -> bool:
        """Settle `n` taken events: delivered, or lost. After `finalize()` counted them lost,
        a late result changes nothing: the figures `close()` ended with are final, as are the
        subscriptions' it ended (a backend reports such a batch as its own figure, e.g. "in
        doubt"). True when it came after `finalize()`."""
        with self.lock:
            return self.settle_locked(n, delivered=delivered)

    def settle_locked(self, n: int, *, delivered: bool) -> bool:
        """`settle()` for a caller that holds `lock` (to count figures of its own with it)."""
        if self._final:
            return True
        self.done += n
        if delivered:
            self.delivered += n
        else:
            self.lost += n
        return False

    def drainable(self) -> bool:
        """True while a cycle could take something (events buffered, not given up yet)."""
        return bool(self._buffer) and not self._final and not self._abandoned

    @property
    def buffered(self) -> int:
        """Events accepted and not taken yet."""
        return len(self._buffer)

    @property
    def accepted(self) -> int:
        """Events `publish()` accepted so far (read it under `lock`: a take in progress has
        emptied the buffer before it counts what it took)."""
        return self.taken + len(self._buffer)

    def pending(self) -> int:
        """Accepted events not settled yet, those the backend holds for a retry included (0
        once finalized)."""
        if self._final:
            return 0
        return len(self._buffer) + self.taken - self.done + self._held()

    def settled(self) -> int:
        """Taken events settled so far (`done`), less those the backend still holds for a
        retry: it grows as they are delivered or given up."""
        return self.done - self._held()

    def unsettled(self) -> tuple[int, int]:
        """`pending()`, and of those the taken ones whose cycle has not settled them (or, when
        the backend tells, those it sent without an answer: `unanswered`)."""
        with self.lock:
            pending, taken = self.pending(), self.taken - self.done
        if self._unanswered is not None:
            return pending, min(taken, self._unanswered())
        return pending, taken

    @property
    def closed(self) -> bool:
        """True once `close()` was called."""
        return self._closed

    @property
    def final(self) -> bool:
        """True once `finalize()` settled everything."""
        return self._final

    def notify_flush(self) -> None:
        """Tell `flush()` waiters a cycle ended (cheap when nobody waits)."""
        if self._flush_waiters:
            with self._flushed:
                self._flushed.notify_all()

    def on_driver(self) -> bool:
        """True when called by the thread or loop that drains now."""
        driver = self._driver
        return driver is not None and driver.is_current()

    @contextlib.contextmanager
    def cycle_guard(self) -> Iterator[None]:
        """Hold `cycle_lock`, unless the caller is the drainer itself (it holds no cycle)."""
        if self.on_driver():
            yield
            return
        with self.cycle_lock:
            yield

    def run_cycle(self) -> bool:
        """One cycle, logged and survived if it fails (a bug must not silence the bus)."""
        try:
            return self.client.cycle()
        except Exception:
            log.exception("%s failed a cycle; continuing", self.label)
            return False
        finally:
            self.report_drops()

    def report_drops(self, *, final: bool = False) -> None:
        """Say in the log that `publish()` dropped events for a full buffer, if it did since
        the last line (at most once a minute, and at `finalize()`; see `DropReport`). Each
        cycle calls it, and so does `flush()`; a cycle that waits long inside (retrying through
        an outage) calls it as it waits."""
        self._drops.check(self.refused - self._refused_otherwise, final=final)

    def drain_inline(self, deadline: float | None, until: Callable[[], bool]) -> bool:
        """Run cycles in the calling thread until `until()` holds or `deadline` passes."""
        while True:
            if until():
                return True
            with self.cycle_guard():
                moved = self.run_cycle()
            self.notify_flush()
            if until():
                return True
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            if not moved:  # with events buffered too: the backend cannot take them yet
                due = self.client.next_due(now)
                pause = 0.001 if due is None else min(max(due, 0.0), 0.01)
                if deadline is not None:
                    pause = min(pause, max(0.0, deadline - now))
                time.sleep(pause)

    # ----------------------------------------------------------------------------- lifecycle

    def flush(self, timeout: float | None) -> bool:
        """Wait until every event accepted so far is settled and the backend holds none for a
        retry (`held`); False if `timeout` ran out first.

        Raises:
            TypeError, ValueError: `timeout` is neither None nor a number of seconds (NaN).
        """
        check_stop_timeout(timeout, "flush()")
        check_fork()  # a child the parent's drainer would never answer
        with self.lock:  # never mid-take: the buffer shrinks before `taken` grows
            target = self.accepted
        deadline = None if timeout is None else time.monotonic() + timeout

        def done() -> bool:
            return self._final or (self.done >= target and not self._held())

        with self._flushed:
            self._flush_waiters += 1
        try:
            while not done():
                driver = self._driver
                if driver is not None and driver.is_current():
                    return False  # the drainer cannot wait for itself
                if self.blocking_cycles:
                    driver = self._driver_to_wait_for(driver)
                elif isinstance(driver, _thread_driver_type()) or (driver is None and self._buffer):
                    self.kick()  # wakes it, or starts one (or hands over to the caller's loop)
                    driver = self._driver
                if driver is None or not driver.waits_for_flush():
                    # The loop drains in the caller's thread (blocking the loop would stop it
                    # from draining); an idle bus has no drainer to wait for.
                    return self.drain_inline(deadline, done)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                with self._flushed:
                    # Short waits: the drainer's notify can race with our check.
                    self._flushed.wait(0.01 if remaining is None else min(remaining, 0.01))
            return True
        finally:
            with self._flushed:
                self._flush_waiters -= 1
            # The drainer says drops after its cycle settled the batch, which can be after
            # this wait saw it settled: a caller reading the log after flush() finds them said,
            # whatever the minute. A server's shutdown flush is often the last word: uvicorn
            # re-raises SIGTERM after it, before any exit hook, and 1,323 of 1,330 drops went
            # unsaid (trial 253).
            self.report_drops(final=True)

    def _driver_to_wait_for(
        self, driver: ThreadDriver | LoopDriver | None
    ) -> ThreadDriver | LoopDriver | None:
        """With blocking cycles: a driver `flush()` can wait for without draining itself. The
        loop, asked for a cycle at once, while it runs and the caller is not on it; else a
        thread (the loop cannot drain while its own thread waits here)."""
        if driver is not None and driver.waits_for_flush():
            _wake_for_flush(driver)
            return driver
        if driver is None and not self._buffer:
            return None  # nothing drains and nothing waits: inline cycles settle what is left
        with self._driver_lock:
            current = self._driver
            if current is None or not current.waits_for_flush():
                current = self._to_thread(current)
        _wake_for_flush(current)
        return current

    def close(
        self,
        deadline: float,
        *,
        cut: Callable[[], None] | None = None,
        cut_before: float = 0.1,
    ) -> bool:
        """Refuse new events and drain what was accepted until `deadline` (`time.monotonic()`).

        A thread is joined; otherwise the caller drains. With `cut`, a thread still busy
        shortly before the deadline is cut loose (`cut()` ends its blocked I/O) and joined
        again; without it, a thread that overruns is abandoned: it ends after its cycle. The
        caller then calls `finalize()`. True when everything drained in time.
        """
        check_fork()  # a child would otherwise wait for the parent's thread, absent here
        self._closed = True
        started = time.monotonic()
        driver = self._driver
        if driver is not None and driver.is_current():
            return False  # the drainer stops itself: it cannot wait for its own cycle
        if self.blocking_cycles and driver is not None:
            # Never block the caller (perhaps the loop's thread) on I/O: a thread drains what
            # is left, and is cut at the deadline.
            with self._driver_lock:
                if not isinstance(self._driver, _thread_driver_type()) or not driver.alive():
                    self._to_thread(driver)
                driver = self._driver
        if isinstance(driver, _thread_driver_type()):
            if cut is None and deadline <= started:
                self._abandoned = True  # no time at all: the thread starts no further cycle
            driver.wake()
            wait_until = deadline
            if cut is not None:
                wait_until = deadline - min(cut_before, max(0.0, deadline - time.monotonic()) / 4)
            driver.join(max(0.0, wait_until - time.monotonic()))
            if driver.alive() and cut is not None:
                cut()
                driver.join(max(0.0, deadline - time.monotonic()))
            if driver.alive():
                with self.lock:
                    idle = not self.pending()
                if idle:
                    # Idle, with nothing to deliver (stop(0) on a bus that published nothing):
                    # woken and closed, it ends by itself; nothing was given up.
                    return True
                if cut is None:  # with a cut, the backend reports what it gave up itself
                    self._abandoned = True
                    log.warning(
                        "%s did not finish within %.3f s", self.label, max(0.0, deadline - started)
                    )
                return False
            return True
        if driver is not None:
            driver.retire()
        return self.drain_inline(
            deadline, lambda: not self._buffer and self.done >= self.taken and not self._held()
        )

    def finalize(self, under_lock: Callable[[], None] | None = None) -> int:
        """Settle everything still buffered or in flight as lost; return the total lost.
        `under_lock` runs with the counters' lock held (figures of the backend's own). Drops
        not said yet are said now."""
        self.report_drops(final=True)
        with self.lock:
            if under_lock is not None:
                under_lock()
            self._final = True
            self.taken += len(self._buffer)
            self._buffer.clear()
            self.lost += self.taken - self.done
            self.done = self.taken
            lost = self.lost
        driver = self._driver
        if driver is not None:
            driver.retire()
        with self._flushed:
            self._flushed.notify_all()
        self._late.say()
        return lost

    def flush_at_exit(self, why: str, timeout: float | None = None) -> bool:
        """Deliver what is accepted and unsettled before the loop or the process goes away (its
        drainer thread is a daemon, which dies with the process): wait up to `timeout`
        (`exit_timeout`) for it, while it makes progress (a backend that delivers nothing for
        `_EXIT_PROGRESS` seconds is down: the exit is not held for it), and log what is still
        undelivered then. True if all was."""
        return flush_before_exit(self, why, timeout)

    def late(self) -> int:
        """Events a racing `publish()` slipped in after `finalize()` (given up as well)."""
        return len(self._buffer) if self._final else 0

    @property
    def abandoned(self) -> bool:
        """True once `close()` gave up waiting for the thread."""
        return self._abandoned

    # ---------------------------------------------------------------------------------- fork

    def before_fork(self) -> None:
        """Hold the counters' lock across `fork()`, so the child never sees a batch half taken
        from the buffer. Bounded: a fork never waits long for it."""
        self._fork_locked = self.lock.acquire(timeout=1.0)

    def after_fork_in_parent(self) -> None:
        """Release what `before_fork()` took."""
        if getattr(self, "_fork_locked", False):
            self._fork_locked = False
            self.lock.release()

    def after_fork_in_child(self, *, start: bool = True) -> None:
        """Give a forked child its own drainer (only the forking thread survives a fork, and
        locks held then stay held). What the parent held unsettled is the parent's to deliver:
        the child counts it as delivered, so its own accounting stays exact. `start`: start the
        drainer now (a backend calling this from its own hook: `register_fork=False`); the
        batchers that rebuild by themselves start after every fork hook has run."""
        self._fork_locked = False
        if fork_announced():
            parent_held = len(self._buffer) + self.taken - self.done
            self.taken += len(self._buffer)
            self._buffer.clear()
        else:
            # Found later by `check_fork()`: the buffer may hold this child's own events by
            # now, which cannot be told from the parent's. The child delivers them all: the
            # parent's, if it held any at the fork, arrive twice rather than this child's never.
            parent_held = self.taken - self.done
        self.done = self.taken
        self.delivered += parent_held
        self._new_sync_state()
        if self._on_fork_in_child is not None:
            self._on_fork_in_child(parent_held)
        if start:
            self.start()


def _nothing_held() -> int:
    return 0


def _wake_for_flush(driver: ThreadDriver | LoopDriver) -> None:
    # A thread is woken whoever calls (its kick() from a loop would hand over to that loop,
    # which is exactly what cannot drain while its thread waits in flush()).
    if isinstance(driver, _thread_driver_type()):
        driver.wake()
    else:
        driver.kick(urgent=True)


def _thread_driver_type() -> type[ThreadDriver]:
    from eventbus_core.batching._thread import ThreadDriver

    return ThreadDriver


def _before_fork() -> None:
    for batcher in list(_LIVE):
        batcher.before_fork()


def _after_fork_in_parent() -> None:
    for batcher in list(_LIVE):
        batcher.after_fork_in_parent()


def _after_fork_in_child() -> None:
    for batcher in list(_LIVE):
        batcher.after_fork_in_child(start=False)
    if _OPEN:
        _flush_at_multiprocessing_exit()


def _start_after_fork_in_child() -> None:
    # After the backends' own `at_fork` hooks: a drainer started before one of them rebuilt
    # its connection or position cycled through the parent's (trial 231).
    for batcher in list(_LIVE):
        try:
            batcher.start()
        except Exception:  # one that cannot start must not leave the others without one
            log.exception("eventbus: %s could not start its drainer in a forked child", batcher)


_exit_flushed_pid = 0


def _flush_all_at_exit() -> None:
    """atexit: every batcher still holding events delivers them, all within one deadline (the
    longest `exit_timeout`), so a script or server that ends without `stop()` loses nothing
    its drainers could still deliver."""
    global _exit_flushed_pid
    if _exit_flushed_pid == os.getpid():
        return  # run already, by multiprocessing's finalizer or atexit: one wait, one warning
    _exit_flushed_pid = os.getpid()
    say_late_refusals()  # stopped buses: what publish() refused after their stop
    # Every open one, pending or not: one with nothing left to deliver may have refusals
    # still to say (`flush_before_exit`).
    open_ = [b for b in list(_OPEN) if not b.closed]
    if not open_:
        return
    waits = []
    for delivery in open_:
        with contextlib.suppress(Exception):  # exiting: one backend's bug must not stop the rest
            if delivery.pending():
                waits.append(delivery.exit_timeout)
    deadline = time.monotonic() + max(waits, default=0.0)
    for delivery in open_:
        with contextlib.suppress(Exception):  # exiting: a bug here must not hide the others
            left = max(0.0, deadline - time.monotonic())
            flush_before_exit(delivery, "the interpreter exited", left)


atexit.register(_flush_all_at_exit)

# multiprocessing ends its children (fork and forkserver start methods) with os._exit(), after
# its own finalizers but without atexit: a child that published and returned without stop()
# lost its buffer without a word. A finalizer of theirs runs the same flush there. One per
# process (`_finalizer_pid`); a forked child's is registered again after multiprocessing clears
# the finalizers it inherited (its after-fork hooks run after that clearing).
_finalizer_pid = 0
# Among multiprocessing's finalizers of priority 0 and more, which run before it joins the
# process's own children (its queues' and pools' first: they have 10 and 15).
_EXIT_PRIORITY: Final = 0


class _AfterForkToken:
    """What multiprocessing's after-fork registry holds (weakly) for this module's hook."""


_AFTER_FORK_TOKEN = _AfterForkToken()
_after_fork_hooked = False


def _flush_at_multiprocessing_exit() -> None:
    global _finalizer_pid, _after_fork_hooked
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is None or _finalizer_pid == os.getpid():
        return  # without multiprocessing, no os._exit() of its; or armed in this process
    _finalizer_pid = os.getpid()
    mp_util.Finalize(None, _flush_all_at_exit, exitpriority=_EXIT_PRIORITY)
    if not _after_fork_hooked:  # inherited by forked children, as the registry itself is
        _after_fork_hooked = True
        mp_util.register_after_fork(_AFTER_FORK_TOKEN, _finalizer_cleared_by_fork)


def _finalizer_cleared_by_fork(_token: _AfterForkToken) -> None:
    global _finalizer_pid
    _finalizer_pid = 0
    if _OPEN:
        _flush_at_multiprocessing_exit()


at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
start_after_fork_in_child(_start_after_fork_in_child)
