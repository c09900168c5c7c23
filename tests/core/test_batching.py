"""The batching core (`eventbus_core.batching`) on its own, with a recording backend cycle.

The memory bus's tests and the contract suite cover it through a real backend; these pin what
a backend author relies on: exact accounting, late results after `finalize()`, bounded close
with a cycle that never ends, and who drains (thread, loop, and the loop's end).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time

import pytest

from eventbus_core import Event
from eventbus_core.batching import Batcher, LoopDriver, ThreadDriver
from eventbus_core.testing import make_event


class Recorder:
    """A backend cycle that takes up to `limit` events and records them as delivered."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.got: list[Event] = []
        self.threads: set[str] = set()
        self.batcher: Batcher | None = None
        self.gate = threading.Event()
        self.gate.set()

    def cycle(self) -> bool:
        assert self.batcher is not None
        _first, batch = self.batcher.take(self.limit)
        if not batch:
            return False
        self.gate.wait(30)
        self.threads.add(threading.current_thread().name)
        self.got.extend(batch)
        self.batcher.settle(len(batch), delivered=True)
        return True

    def next_due(self, now: float) -> float | None:
        return None


def make(
    path: str = "auto",
    buffer_size: int = 100,
    linger: float = 0.01,
    *,
    backend: Recorder | None = None,
) -> Recorder:
    """A started `Batcher` draining into `backend` (a new `Recorder` by default)."""
    rec = Recorder() if backend is None else backend
    rec.batcher = Batcher(
        rec,
        buffer_size=buffer_size,
        linger=linger,
        path=path,  # type: ignore[arg-type]
        thread_name="test-drainer",
    )
    rec.batcher.start()
    return rec


def test_accounting_is_exact_and_refusals_are_counted() -> None:
    rec = make("thread", buffer_size=10, linger=5.0)
    b = rec.batcher
    assert b is not None
    results = [b.publish(make_event(i)) for i in range(50)]
    assert b.flush(5)
    assert results.count(True) == b.accepted == len(rec.got)
    assert results.count(False) == b.refused
    assert b.accepted + b.refused == 50
    b.close(time.monotonic() + 5)
    assert b.finalize() == 0
    assert b.publish(make_event(99)) is False  # closed: refused, never raised


def test_a_late_result_changes_nothing_once_finalized() -> None:
    rec = make("thread")
    b = rec.batcher
    assert b is not None
    rec.gate.clear()  # the cycle holds its batch
    for i in range(3):
        b.publish(make_event(i))
    deadline = time.monotonic() + 10
    while b.taken < 3:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    b.close(time.monotonic() + 0.05, cut=lambda: None)  # a cut: the thread is not abandoned
    assert b.finalize() == 3  # in flight at the deadline: lost
    rec.gate.set()  # its result comes after all
    deadline = time.monotonic() + 10
    while len(rec.got) < 3:  # the cycle handed the batch on, and settles it now
        assert time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(0.05)
    # What close() ended with is final: subscriptions ended with it never got these events.
    assert (b.lost, b.delivered) == (3, 0)


def test_close_is_bounded_when_a_cycle_never_ends() -> None:
    rec = make("thread")
    b = rec.batcher
    assert b is not None
    rec.gate.clear()
    b.publish(make_event(0))
    while b.taken < 1:
        time.sleep(0.005)
    b.publish(make_event(1))  # still buffered
    started = time.monotonic()
    assert b.close(time.monotonic() + 0.2) is False
    assert time.monotonic() - started < 5
    assert b.abandoned
    rec.gate.set()


def test_an_idle_drainer_closed_with_no_time_left_warns_of_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # stop(0) on a bus whose thread had delivered everything logged "did not finish within
    # 0.000 s" (helper-74): nothing was left to finish.
    rec = make("thread")
    b = rec.batcher
    assert b is not None
    b.publish(make_event(0))
    assert b.flush(5)
    assert b.close(time.monotonic()) is True
    assert b.finalize() == 0
    assert "did not finish" not in caplog.text


def test_a_publish_outside_any_loop_starts_a_thread() -> None:
    rec = make()
    b = rec.batcher
    assert b is not None
    b.publish(make_event(0))
    assert isinstance(b._driver, ThreadDriver)
    assert b.flush(5)
    assert rec.threads == {"test-drainer"}
    b.close(time.monotonic() + 5)
    b.finalize()


def test_a_publish_on_a_loop_drains_there_and_the_loop_end_hands_over() -> None:
    rec = make(linger=30.0)  # the loop's timer would not fire during the run
    b = rec.batcher
    assert b is not None

    async def main() -> None:
        b.publish(make_event(0))
        assert isinstance(b._driver, LoopDriver)
        for i in range(1, 60):  # past half full: drained by call_soon, on the loop
            b.publish(make_event(i))
        await asyncio.sleep(0.05)
        assert len(rec.got) >= 50
        assert rec.threads == {threading.current_thread().name}
        b.publish(make_event(60))  # left for the loop's end

    asyncio.run(main())
    assert b.flush(5)
    assert len(rec.got) == 61  # the thread that took over drained the last one
    b.close(time.monotonic() + 5)
    assert b.finalize() == 0


def test_the_loops_first_drain_runs_at_once_and_later_ones_linger() -> None:
    # A backend that must connect first (the Redis writer) does so while the next events
    # gather; lingering first cost a server flooded from its first request (uvicorn on uvloop,
    # 12,000 requests/s) up to 270 events of its first tenth of a second.
    rec = make(linger=30.0)
    b = rec.batcher
    assert b is not None

    async def main() -> tuple[int, int]:
        b.publish(make_event(0))
        await asyncio.sleep(0.05)
        first = len(rec.got)
        b.publish(make_event(1))  # after the first drain, traffic gathers for `linger` again
        await asyncio.sleep(0.05)
        return first, len(rec.got)

    assert asyncio.run(main()) == (1, 1)
    assert b.flush(5)
    assert len(rec.got) == 2  # the loop's end handed the second to a thread
    b.close(time.monotonic() + 5)
    assert b.finalize() == 0


class Busy(Recorder):
    """A backend that cannot take anything while `busy` (a write of its own still out)."""

    def __init__(self) -> None:
        super().__init__()
        self.busy = False
        self.cycles = 0

    def cycle(self) -> bool:
        self.cycles += 1
        return False if self.busy else super().cycle()


def make_busy(linger: float) -> Busy:
    busy = Busy()
    make(linger=linger, backend=busy)
    return busy


def test_a_stalled_backend_costs_the_loop_a_timer_not_a_busy_loop() -> None:
    # An outage with a full buffer drained the loop again at once, for as long as it lasted:
    # a whole core busy with no request coming in.
    busy = make_busy(linger=30.0)
    b = busy.batcher
    assert b is not None

    async def main() -> tuple[int, int]:
        b.publish(make_event(0))
        await asyncio.sleep(0.02)  # the first drain, at once
        busy.busy = True
        busy.cycles = 0
        for i in range(1, 90):  # past half full: each publish used to ask for a drain
            b.publish(make_event(i))
        await asyncio.sleep(0.2)
        idle = busy.cycles
        busy.cycles = 0
        assert not await asyncio.to_thread(b.flush, 0.2)  # in another thread
        return idle, busy.cycles

    idle, while_flushing = asyncio.run(main())
    assert idle <= 2, f"{idle} cycles while the backend could take nothing"
    # This backend's cycles never block, so flush() runs them in its own thread: one per ms
    # at most while nothing moves (it spun before, as the loop did).
    assert while_flushing <= 250, f"{while_flushing} cycles in a 0.2 s flush()"
    busy.busy = False
    assert b.flush(5)
    assert len(busy.got) == 90
    b.close(time.monotonic() + 5)
    assert b.finalize() == 0


def test_the_backends_own_wake_drains_a_stalled_buffer_at_once() -> None:
    busy = make_busy(linger=30.0)
    b = busy.batcher
    assert b is not None

    async def main() -> list[int]:
        seen = []
        b.publish(make_event(0))
        await asyncio.sleep(0.02)
        busy.busy = True
        b.publish(make_event(1))
        await asyncio.sleep(0.02)  # a drain finds the backend busy: stalled for `linger`
        busy.busy = False
        b.drain_now()  # its reply came: the cycle runs in this very callback
        seen.append(len(busy.got))
        busy.busy = True
        for i in range(2, 4):
            b.publish(make_event(i))
        b.drain_now()  # a drain that finds the backend busy again: stalled
        busy.busy = False
        b.kick()  # a wake that is not urgent (few events wait): they may linger...
        for i in range(4, 60):  # ...until the buffer passes half full, which asks at once
            b.publish(make_event(i))
        await asyncio.sleep(0.02)
        seen.append(len(busy.got))
        return seen

    assert asyncio.run(main()) == [2, 60]
    b.close(time.monotonic() + 5)
    assert b.finalize() == 0


def test_bad_path_names_the_setting() -> None:
    with pytest.raises(ValueError, match="EVENTBUS_PUBLISH_PATH"):
        Batcher(Recorder(), buffer_size=10, linger=0.01, path="fast")  # type: ignore[arg-type]


def test_publish_does_not_raise_when_no_thread_can_start(monkeypatch: pytest.MonkeyPatch) -> None:
    # At interpreter shutdown threading refuses new threads: publish() must not raise, and
    # stop() counts what was accepted as lost.
    from eventbus_memory import InMemoryEventBus

    bus = InMemoryEventBus(100, publish_path="thread")
    sub = bus.subscribe()

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    for i in range(3):
        bus.publish(make_event(i))
    monkeypatch.undo()
    bus.stop(0.5)
    stats = bus.stats()
    assert stats.published + stats.dropped == 3
    # stop() drains in the calling thread what no drainer took, or counts it as lost.
    assert stats.lost + sub.stats().delivered == stats.published == 3


class BlockingRecorder(Recorder):
    """A cycle that would block on I/O off the loop: records, per cycle, the thread it ran on
    and whether it ran as the loop's drain (`draining_loop()`)."""

    def __init__(self) -> None:
        super().__init__()
        self.where: list[tuple[str, bool]] = []

    def cycle(self) -> bool:
        assert self.batcher is not None
        on_loop = self.batcher.draining_loop() is not None
        moved = super().cycle()
        if moved:
            self.where.append((threading.current_thread().name, on_loop))
        return moved


def make_blocking(linger: float) -> BlockingRecorder:
    rec = BlockingRecorder()
    rec.batcher = Batcher(
        rec, buffer_size=100, linger=linger, thread_name="test-drainer", blocking_cycles=True
    )
    return rec


def test_blocking_cycles_never_run_on_the_caller_of_flush_or_close() -> None:
    rec = make_blocking(linger=0.01)
    b = rec.batcher
    assert b is not None

    async def main() -> None:
        for i in range(5):
            b.publish(make_event(i))
        assert isinstance(b._driver, LoopDriver)
        assert b.flush(5)  # on the loop's own thread: a thread writes, not this caller
        assert isinstance(b._driver, ThreadDriver)
        await asyncio.sleep(0.2)  # the thread falls into its deep sleep
        for i in range(5, 10):
            b.publish(make_event(i))  # the loop takes over again
        assert isinstance(b._driver, LoopDriver)
        assert await asyncio.to_thread(b.flush, 5)  # from another thread: waits for the loop
        for i in range(10, 15):
            b.publish(make_event(i))
        b.close(time.monotonic() + 5)  # on the loop's thread: a thread drains
        assert b.finalize() == 0

    asyncio.run(main())
    me = threading.current_thread().name
    assert [e.request_id for e in rec.got] == [f"req-{i}" for i in range(15)]
    assert all(thread != me or on_loop for thread, on_loop in rec.where), rec.where
    assert (me, True) in rec.where  # the loop drained the middle five
    assert ("test-drainer", False) in rec.where


def test_draining_loop_is_none_off_the_loop_and_wake_now_skips_linger() -> None:
    rec = make_blocking(linger=30.0)
    b = rec.batcher
    assert b is not None

    async def main() -> float:
        b.publish(make_event(0))  # the loop's first drain: at once
        while not rec.got:
            await asyncio.sleep(0.001)
        b.publish(make_event(1))  # arms a drain in `linger` (30 s)
        started = time.monotonic()
        b.wake_now()  # ... which this brings forward
        while len(rec.got) < 2:
            await asyncio.sleep(0.001)
        return time.monotonic() - started

    assert asyncio.run(main()) < 5
    assert rec.where and rec.where[0][1] is True
    assert b.draining_loop() is None  # not inside a cycle
    b.close(time.monotonic() + 5)
    b.finalize()


def test_an_exit_stops_waiting_half_a_second_after_the_last_delivery() -> None:
    # A backend that delivers for 0.55 s and then dies: the wait ends about 0.5 s after its
    # last delivery (1.05 s), not at the end of a half-second slice that began before it died
    # (1.5 s, as when the wait was cut into slices of 0.5 s).
    from eventbus_core.batching._batcher import deliver_while_progressing

    started = time.monotonic()

    def settled() -> int:
        return int(min(time.monotonic() - started, 0.55) / 0.05)  # one event every 50 ms

    def flush(timeout: float) -> bool:
        time.sleep(timeout)
        return False

    assert not deliver_while_progressing(flush, settled, 10.0)
    assert 1.0 <= time.monotonic() - started < 1.3
    started = time.monotonic()
    assert deliver_while_progressing(lambda timeout: True, settled, 10.0)
    assert time.monotonic() - started < 0.1


def test_an_exit_waits_longer_for_a_first_write_than_between_deliveries() -> None:
    # A writer whose first write also creates its stream (0.24-0.7 s for a replicated NATS
    # stream) had settled nothing half a second into the exit, which gave up: a process that
    # exited without stop() lost every event on a healthy cluster (trial 125).
    from eventbus_core.batching._batcher import deliver_while_progressing

    started = time.monotonic()

    def first_write_takes_a_second() -> int:
        return 0 if time.monotonic() - started < 1.0 else 300

    def flush(timeout: float) -> bool:
        time.sleep(timeout)
        return first_write_takes_a_second() == 300

    assert deliver_while_progressing(flush, first_write_takes_a_second, 10.0)
    assert 1.0 <= time.monotonic() - started < 1.3
    # A backend that never answers still does not hold the exit for the whole timeout.
    started = time.monotonic()
    assert not deliver_while_progressing(
        lambda timeout: time.sleep(timeout) or False, lambda: 0, 10.0
    )
    assert 2.0 <= time.monotonic() - started < 2.4


def test_drops_are_said_in_the_log_by_the_drainer_at_most_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A full buffer dropped 489 events under load, 34,469 in a Redis outage, and the log said
    # nothing (trial 215): publish() must stay silent and cheap, the drainer says it. flush()
    # says it too: the drainer says it just after settling, which can be after flush() returned.
    caplog.set_level(logging.WARNING, logger="eventbus")
    rec = make("thread", buffer_size=10, linger=5.0)
    b = rec.batcher
    assert b is not None
    b.publish("not an event")  # type: ignore[arg-type]  # reported as such, not as a drop
    rec.gate.clear()  # the cycle holds its batch: the buffer fills
    b.publish(make_event(0))
    assert b.flush(0) is False  # a wake: the drainer takes that event, and holds it
    deadline = time.monotonic() + 10
    while b.taken < 1:  # its cycles so far (and their drop reports) are behind it
        assert time.monotonic() < deadline
        time.sleep(0.001)
    for i in range(30):
        b.publish(make_event(i))
    assert b.refused - 1 >= 20
    rec.gate.set()
    assert b.flush(5)
    lines = [r.getMessage() for r in caplog.records if "publish buffer" in r.getMessage()]
    assert lines == [
        f"{b.label} dropped {b.refused - 1} event(s) ({b.refused - 1} in all, counted in "
        "stats().dropped): its publish buffer (buffer_size 10, OBSERVABILITY_BUFFER_SIZE) was "
        "full, as the backend is slower than the traffic or cannot write; this line comes at "
        "most once a minute while it drains, and at a flush() or the end for what is left"
    ], lines
    first = b.refused - 1
    rec.gate.clear()
    for i in range(30):  # more drops within the minute: counted, not said again by the drainer
        b.publish(make_event(i))
    rec.gate.set()
    deadline = time.monotonic() + 10
    while b.done < b.accepted:  # the drainer's cycles, without a flush
        assert time.monotonic() < deadline
        time.sleep(0.001)
    time.sleep(0.05)  # a cycle more, whose report the minute holds back
    assert len([r for r in caplog.records if "publish buffer" in r.getMessage()]) == 1
    # flush() says them, whatever the minute: a server's shutdown flush may be the last word
    # before the process dies by a re-raised SIGTERM, which no exit hook sees (trial 253).
    assert b.flush(5)
    lines = [r.getMessage() for r in caplog.records if "publish buffer" in r.getMessage()]
    assert len(lines) == 2 and b.refused - 1 > first, lines
    assert lines[1].startswith(f"{b.label} dropped {b.refused - 1 - first} event(s)"), lines
    b.close(time.monotonic() + 5)
    b.finalize()  # the end: what was not said yet is said (nothing here)
    assert len([r for r in caplog.records if "publish buffer" in r.getMessage()]) == 2


def test_the_drop_report_says_what_came_since_its_last_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from eventbus_core.batching import DropReport

    caplog.set_level(logging.WARNING, logger="eventbus")
    report = DropReport("bus", 8, every=0.0)
    for dropped in (0, 3, 3, 5, 4, 6):  # 4: an older figure from another caller, said already
        report.check(dropped)
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "bus dropped 3 event(s)",
        "bus dropped 2 event(s)",
        "bus dropped 1 event(s)",
    ]


def test_publishes_refused_by_a_stopping_bus_are_said_as_late_not_as_a_full_buffer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The drop line blamed the buffer for publishes made during shutdown (review 217).
    caplog.set_level(logging.WARNING, logger="eventbus")
    rec = make("thread", buffer_size=100)
    b = rec.batcher
    assert b is not None
    b.close(time.monotonic() + 5)
    for i in range(10):
        assert b.publish(make_event(i)) is False
    b.finalize()
    assert b.refused == 10
    assert not [r for r in caplog.records if "publish buffer" in r.getMessage()]
    # Said as what they are, at the end of the stop, once: counted in `dropped` only, a
    # request's event refused during a server's shutdown went unsaid (trial 267).
    b.finalize()
    said = [r.getMessage() for r in caplog.records if "after stop() had begun" in r.getMessage()]
    assert len(said) == 1, said
    assert "refused 10 event(s) (10 in all, counted in stats().dropped)" in said[0]


LATE_PUBLISHES = (
    "import logging\n"
    "logging.basicConfig(level=logging.WARNING, format='%(message)s')\n"
    "from eventbus_core.testing import make_event\n"
    "bus = make_bus()\n"
    "bus.stop(5)\n"
    "print(bus.publish(make_event(1)), bus.publish(make_event(2)), flush=True)\n"
)
"""A script that publishes twice after the stop of the bus its own `make_bus()` makes."""


def check_late_publishes_are_said_at_exit(make_bus: str) -> None:
    """Run `LATE_PUBLISHES` after `make_bus` (code defining `make_bus()`); the exit says both."""
    from tests._python import run_python

    out = run_python(make_bus + LATE_PUBLISHES)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False"
    said = (
        "refused 2 event(s) (2 in all, counted in stats().dropped): they were published after "
        "stop() had begun"
    )
    assert said in out.stderr, out.stderr


def test_publishes_after_the_stop_are_said_at_the_interpreter_s_exit() -> None:
    check_late_publishes_are_said_at_exit(
        "from eventbus_memory import InMemoryEventBus\n"
        "def make_bus():\n"
        "    return InMemoryEventBus()\n"
    )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_publishes_after_the_stop_are_said_at_a_multiprocessing_child_s_exit() -> None:
    # multiprocessing ends its children with os._exit(), without atexit (trial 269).
    from tests._python import run_python

    child = LATE_PUBLISHES.replace("\n", "\n    ").rstrip()
    code = (
        "import multiprocessing\n"
        "from eventbus_memory import InMemoryEventBus\n"
        "def make_bus():\n"
        "    return InMemoryEventBus()\n"
        "def work():\n"
        f"    {child}\n"
        "if __name__ == '__main__':\n"
        "    p = multiprocessing.get_context('fork').Process(target=work)\n"
        "    p.start(); p.join(30); print('exit', p.exitcode)\n"
    )
    out = run_python(code)
    assert "exit 0" in out.stdout, out.stderr
    assert "refused 2 event(s) (2 in all, counted in stats().dropped)" in out.stderr, out.stderr


def check_a_forked_child_says_its_own_late_refusals(make_bus: str, in_all: int) -> None:
    """After `make_bus` (code defining `make_bus()`): a parent stops its bus and publishes 3,
    then forks a child that publishes 2; the child says its 2 (`in_all` counted in its
    `dropped`), the parent its 3."""
    from tests._python import run_python

    code = make_bus + (
        "import logging, os\n"
        "logging.basicConfig(level=logging.WARNING, format='%(process)d %(message)s')\n"
        "from eventbus_core.testing import make_event\n"
        "bus = make_bus()\n"
        "bus.stop(5)\n"
        "for i in range(3): bus.publish(make_event(i))\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    bus.publish(make_event(9)); bus.publish(make_event(10))\n"
        "    from eventbus_core.batching._late import say_late_refusals\n"
        "    say_late_refusals(); os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "print('child', pid, flush=True)\n"
    )
    out = run_python(code)
    child = out.stdout.split()[-1]
    lines = [line for line in out.stderr.splitlines() if "after stop() had begun" in line]
    said_by_child = [line for line in lines if line.startswith(child + " ")]
    assert len(said_by_child) == 1, out.stderr
    assert f"refused 2 event(s) ({in_all} in all" in said_by_child[0]  # not the parent's 3
    assert [line for line in lines if "refused 3 event(s) (3 in all" in line], out.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_say_its_parent_s_late_refusals_as_its_own() -> None:
    # A memory bus's child keeps its parent's counts (its `dropped` says 5).
    check_a_forked_child_says_its_own_late_refusals(
        "from eventbus_memory import InMemoryEventBus\n"
        "def make_bus():\n"
        "    return InMemoryEventBus()\n",
        in_all=5,
    )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_say_its_parent_s_drops_as_its_own() -> None:
    # Each of 50 forked workers said "dropped 138256 event(s)" of its parent's at its stop(),
    # beside the parent saying them too (trial 221).
    from tests._forked import wait_child

    rec = make("thread", buffer_size=10, linger=5.0)
    b = rec.batcher
    assert b is not None
    rec.gate.clear()  # the cycle holds its batch: the buffer fills, drops not said yet
    for i in range(50):
        b.publish(make_event(i))
    assert b.refused > 0
    said: list[str] = []  # the parent said nothing yet: its cycle waits at the gate

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    lines = Lines()
    logging.getLogger("eventbus").addHandler(lines)
    try:
        pid = os.fork()
        if pid == 0:  # the child: a new drainer runs at once; it drops nothing of its own
            code = 1
            try:
                b.close(time.monotonic() + 2)
                b.finalize()
                code = 0 if not [m for m in said if "publish buffer" in m] else 3
            finally:
                os._exit(code)
        assert wait_child(pid) == 0
        rec.gate.set()
        assert b.flush(5)
        b.close(time.monotonic() + 5)
    finally:
        logging.getLogger("eventbus").removeHandler(lines)
    assert [m for m in said if "publish buffer" in m]  # the parent's own, said by the parent


def test_a_said_count_is_said_once_whatever_the_callers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from eventbus_core.batching import SaidEvery

    now = [100.0]
    monkeypatch.setattr("eventbus_core.batching._said_every.time.monotonic", lambda: now[0])
    said: list[tuple[int, int]] = []
    counter = SaidEvery(lambda new, total: said.append((new, total)), every=10.0)
    counter.add(3)  # the first at once
    counter.add(2)  # held back: within the period
    counter.reach(4)  # an older running total: counted already
    counter.reach(9)  # 4 more, held back
    assert said == [(3, 3)]
    now[0] = 110.0
    counter.add(0)  # the period is over: what it held back
    assert said == [(3, 3), (6, 9)]
    counter.add(1)
    counter.say_now()  # the end, whatever the period
    counter.say_now()  # nothing left
    assert said == [(3, 3), (6, 9), (1, 10)]
    counter.after_fork_in_child(15)  # the parent's 5 are the parent's to say
    now[0] = 200.0
    counter.reach(16)
    assert said[-1] == (1, 16)


@pytest.mark.parametrize("how", ["add", "reach"])
def test_a_said_count_from_many_threads_is_said_once_in_all(how: str) -> None:
    import sys
    import threading

    from eventbus_core.batching import SaidEvery

    said: list[tuple[int, int]] = []
    counter = SaidEvery(lambda new, total: said.append((new, total)), every=0.0)
    running = [0]
    lock = threading.Lock()

    def count() -> None:
        for _ in range(1000):
            if how == "add":
                counter.add(1)
                continue
            with lock:  # a running total kept elsewhere, as the drop count
                running[0] += 1
                total = running[0]
            counter.reach(total)  # read by the threads in any order

    before = sys.getswitchinterval()
    sys.setswitchinterval(5e-6)  # many switches inside add() and reach()
    try:
        threads = [threading.Thread(target=count) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(before)
    counter.say_now()
    assert sum(new for new, _ in said) == 8000  # each unit said once
    # Two threads may say theirs in either order (`say` runs outside the lock): totals unique.
    totals = [total for _, total in said]
    assert len(set(totals)) == len(totals) and max(totals) == 8000


@pytest.mark.parametrize("linger", [0, -1, float("nan")])
def test_a_linger_of_no_time_is_refused_for_every_backend(linger: float) -> None:
    # At 0 the drainer busy-looped a core (trial 261); the check is the Batcher's, so the Redis
    # writer has it too (review 264).
    with pytest.raises(ValueError, match="linger must be a finite number of seconds > 0"):
        Batcher(Recorder(), buffer_size=10, linger=linger)  # type: ignore[arg-type]
