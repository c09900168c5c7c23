"""The inline way of a one-sink lane (`BlockingSend`): full batches are stored by the lane's
thread right after being read and prepared, and acknowledged there; everything else, and any
batch that fails that way, takes the sink worker's usual way (retries, dead letters, figures)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eventbus_core import (
    Dispatcher,
    JsonlDeadLetter,
    MemoryDeadLetter,
    RetryPolicy,
    SinkError,
    Subscription,
    TransientSinkError,
)
from eventbus_core.capabilities import BlockingSend, capability
from eventbus_core.sinks.jsonl import JsonlSink
from tests.core.conftest_dispatch import (
    FAST_RETRY,
    ListSource,
    RecordingSink,
    make_events,
    read_jsonl,
)


class BlockingSink(RecordingSink):
    """A `RecordingSink` that also offers `send_blocking()`; its first `inline_failures`
    blocking calls raise `error()` (after storing the first `stored` events of the batch).
    Records which way each batch came and fails the test's assertions if the two ways ever
    overlap."""

    def __init__(
        self,
        *,
        inline_failures: int = 0,
        stored: int = 0,
        send_failures: int = 0,
        error: Any = None,
    ) -> None:
        super().__init__("blocking", fail_times=send_failures, error=error)
        self.inline_failures = inline_failures
        self.stored = stored
        self.inline_calls = 0
        self.inline_batches: list[list[dict[str, Any]]] = []
        self.threads: set[str] = set()
        self.busy = threading.Lock()
        self.overlaps = 0

    def send_blocking(self, batch: Sequence[dict[str, Any]]) -> None:
        if not self.busy.acquire(blocking=False):
            self.overlaps += 1
            return
        try:
            self.threads.add(threading.current_thread().name)
            time.sleep(0.001)  # long enough for an overlapping call to be seen
            self.inline_calls += 1
            if self.inline_calls <= self.inline_failures:
                kept = list(batch[: self.stored])
                if kept:
                    self.inline_batches.append(kept)
                    self.batches.append(kept)
                raise self.error()
            self.inline_batches.append(list(batch))
            self.batches.append(list(batch))
        finally:
            self.busy.release()

    async def send(self, batch: Sequence[dict[str, Any]]) -> None:
        if not self.busy.acquire(blocking=False):
            self.overlaps += 1
            return
        try:
            await super().send(batch)
        finally:
            self.busy.release()


async def _run(d: Dispatcher, n: int) -> Any:
    """Run `d` until `n` events are acknowledged, then stop it."""
    task = asyncio.create_task(d.run())
    deadline = time.monotonic() + 10
    while d.stats().acked < n and time.monotonic() < deadline and not task.done():
        await asyncio.sleep(0.01)
    d.request_stop()
    return await task


def _log_ids(batches: list[list[dict[str, Any]]]) -> list[int]:
    return sorted(p["log_id"] for b in batches for p in b)


def _balanced(stats: Any) -> None:
    for name, s in stats.sinks.items():
        assert s.received == s.sent + s.dead_lettered + s.dropped + s.requeued, name


def test_the_jsonl_sink_offers_blocking_send_and_the_test_sink_does() -> None:
    assert capability(JsonlSink("x.jsonl"), BlockingSend) is not None
    assert capability(BlockingSink(), BlockingSend) is not None
    assert capability(RecordingSink(), BlockingSend) is None


async def test_full_batches_are_stored_inline_the_rest_by_the_worker() -> None:
    source = ListSource(make_events(250))
    sink = BlockingSink()
    d = Dispatcher(source, [sink], batch_size=100, flush_interval=0.01, retry=FAST_RETRY)
    stats = await _run(d, 250)
    assert _log_ids(sink.batches) == list(range(1, 251))  # each once
    assert [len(b) for b in sink.inline_batches] == [100, 100]
    assert sink.calls == 1  # the last 50, a partial batch, by send() after flush_interval
    assert sink.threads == {"eventbus-shared"}  # the lane's own thread, not the loop's
    assert sink.overlaps == 0
    assert sorted(source.acked) == list(range(1, 251))
    s = stats.sinks["blocking"]
    assert (s.received, s.sent, s.batches, s.failures) == (250, 250, 3, 0)
    assert stats.read == 250 and stats.acked == 250
    _balanced(stats)


async def test_a_batch_failing_inline_is_retried_by_the_worker_as_its_second_attempt() -> None:
    source = ListSource(make_events(300))
    sink = BlockingSink(inline_failures=1)
    d = Dispatcher(source, [sink], batch_size=100, flush_interval=0.01, retry=FAST_RETRY)
    stats = await _run(d, 300)
    assert _log_ids(sink.batches) == list(range(1, 301))  # nothing lost, nothing twice
    # The failed batch is retried through send() first; batches read meanwhile queue behind it.
    assert [p["log_id"] for p in sink.batches[0]] == list(range(1, 101))
    assert sink.calls >= 1 and sink.overlaps == 0
    assert sorted(source.acked) == list(range(1, 301))
    s = stats.sinks["blocking"]
    assert (s.received, s.sent, s.failures, s.retried) == (300, 300, 1, 100)
    assert s.failed_by_type == {"TransientSinkError": 1}
    _balanced(stats)


class _LibraryTimeout(BaseException):
    """As gevent's Timeout: a library's own BaseException."""


async def test_a_base_exception_inline_is_a_failed_attempt_retried_by_the_worker(
    caplog: Any,
) -> None:
    # Only Exception was caught: the lane's thread ended with it, and its events with it.
    source = ListSource(make_events(200))
    sink = BlockingSink(inline_failures=1, error=lambda: _LibraryTimeout("lib"))
    d = Dispatcher(source, [sink], batch_size=100, flush_interval=0.01, retry=FAST_RETRY)
    with caplog.at_level(logging.INFO, logger="eventbus"):
        stats = await _run(d, 200)
    # Its own class and the method that raised it, not "SinkError: send() raised" (trial 255).
    assert "failed (attempt 1, _LibraryTimeout: send_blocking() raised _LibraryTimeout" in (
        caplog.text
    )
    assert _log_ids(sink.batches) == list(range(1, 201))
    assert sorted(source.acked) == list(range(1, 201))
    s = stats.sinks["blocking"]
    assert (s.sent, s.failures) == (200, 1)
    assert s.failed_by_type == {"_LibraryTimeout": 1}
    _balanced(stats)


async def test_a_batch_failing_inline_and_after_is_dead_lettered_after_every_retry(
    tmp_path: Path,
) -> None:
    source = ListSource(make_events(100))
    sink = BlockingSink(inline_failures=1, send_failures=10**6)
    dl_path = tmp_path / "dead.jsonl"
    d = Dispatcher(
        source,
        [sink],
        batch_size=100,
        flush_interval=0.01,
        retry=RetryPolicy(retries=2, base=0.001, cap=0.002),
        dead_letter=JsonlDeadLetter(dl_path),
    )
    stats = await _run(d, 100)
    records = read_jsonl(dl_path)
    assert sorted(r["log_id"] for r in records) == list(range(1, 101))
    assert {r["attempts"] for r in records} == {3}  # inline, then 2 retries: retries + 1
    assert sink.inline_calls == 1 and sink.calls == 2
    assert sorted(source.acked) == list(range(1, 101))  # dead-lettered is done
    s = stats.sinks["blocking"]
    assert (s.received, s.sent, s.dead_lettered, s.failures) == (100, 0, 100, 3)
    _balanced(stats)


async def test_what_a_sink_stored_before_failing_inline_is_acknowledged_not_retried() -> None:
    source = ListSource(make_events(100))
    sink = BlockingSink(
        inline_failures=1, stored=30, error=lambda: SinkError("row 31 refused", delivered=30)
    )
    d = Dispatcher(source, [sink], batch_size=100, flush_interval=0.01, retry=FAST_RETRY)
    stats = await _run(d, 100)
    assert _log_ids(sink.batches) == list(range(1, 101))  # the first 30 once, the rest once
    assert [len(b) for b in sink.batches] == [30, 70]
    assert sorted(source.acked) == list(range(1, 101))
    s = stats.sinks["blocking"]
    assert (s.received, s.sent, s.failures, s.retried) == (100, 100, 1, 70)
    _balanced(stats)


async def test_no_inline_call_while_the_worker_retries_a_batch() -> None:
    source = ListSource(make_events(600))
    # The first inline batch fails, and its retries through send() fail twice more, with
    # delays long enough for the lane to read several batches meanwhile.
    sink = BlockingSink(inline_failures=1, send_failures=2)
    d = Dispatcher(
        source,
        [sink],
        batch_size=100,
        flush_interval=0.01,
        retry=RetryPolicy(retries=5, base=0.05, cap=0.05),
        dead_letter=MemoryDeadLetter(),
    )
    stats = await _run(d, 600)
    assert sink.overlaps == 0
    assert _log_ids(sink.batches) == list(range(1, 601))
    assert sorted(source.acked) == list(range(1, 601))
    _balanced(stats)


async def test_a_memory_lane_stores_inline_and_counts_every_event(tmp_path: Path) -> None:
    sub = Subscription(10_000)
    sub.offer(make_events(1000))
    sub.finish()
    path = tmp_path / "out.jsonl"
    stats = await Dispatcher(sub, [JsonlSink(path)], batch_size=100, flush_interval=0.01).run()
    assert sorted(r["log_id"] for r in read_jsonl(path)) == list(range(1, 1001))
    s = stats.sinks["jsonl"]
    assert (s.received, s.sent, s.batches) == (1000, 1000, 10)
    assert stats.read == 1000 and stats.acked == 1000
    _balanced(stats)


async def test_two_sinks_in_one_lane_take_the_usual_way() -> None:
    source = ListSource(make_events(200))
    first, second = BlockingSink(), RecordingSink("other")
    first.name = "first"
    d = Dispatcher(source, [first, second], batch_size=100, flush_interval=0.01)
    stats = await _run(d, 200)
    assert first.inline_calls == 0 and first.calls == 2
    assert _log_ids(first.batches) == _log_ids(second.batches) == list(range(1, 201))
    _balanced(stats)


def test_the_inline_failure_goes_through_the_sinks_scrubbed_retry_log(
    caplog: Any, tmp_path: Path
) -> None:
    secret = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
    sink = BlockingSink(
        inline_failures=1, error=lambda: TransientSinkError(f"refused key {secret}")
    )
    d = Dispatcher(
        ListSource(make_events(100)), [sink], batch_size=100, flush_interval=0.01, retry=FAST_RETRY
    )
    with caplog.at_level(logging.INFO, logger="eventbus"):
        stats = asyncio.run(_run(d, 100))
    assert stats.sinks["blocking"].sent == 100
    assert "retrying" in caplog.text and "attempt 1" in caplog.text
    assert secret not in caplog.text


class _AckBlocks(ListSource):
    """A durable source whose acknowledgements block until `release` is set (a frozen
    server)."""

    def __init__(self, events: Any) -> None:
        super().__init__(events)
        self.release = threading.Event()
        self.acking = threading.Event()

    def ack(self, tokens: Sequence[Any]) -> None:
        self.acking.set()
        self.release.wait(30)
        super().ack(tokens)


async def test_a_batch_written_inline_is_counted_when_its_acknowledgement_never_returns() -> None:
    source = _AckBlocks(make_events(300))
    sink = BlockingSink()
    d = Dispatcher(source, [sink], batch_size=100, flush_interval=0.01, shutdown_timeout=0.3)
    task = asyncio.create_task(d.run())
    try:
        while not source.acking.is_set():
            await asyncio.sleep(0.005)
        d.request_stop()
        stats = await asyncio.wait_for(task, 20)
    finally:
        source.release.set()
    assert _log_ids(sink.batches) == list(range(1, 101))  # written before the ack blocked
    s = stats.sinks["blocking"]
    assert (s.received, s.sent) == (100, 100)  # counted, though never acknowledged
    assert stats.read == 100 and stats.acked == 0
    _balanced(stats)


class _NeverReturns(RecordingSink):
    """A sink whose `send_blocking()` does not return until `release` is set (a hung
    write), then stores the batch."""

    def __init__(self) -> None:
        super().__init__("hung")
        self.entered = threading.Event()
        self.release = threading.Event()

    def send_blocking(self, batch: Sequence[dict[str, Any]]) -> None:
        self.entered.set()
        self.release.wait(60)
        self.batches.append(list(batch))


async def _stop_behind_a_hung_inline_send(source: Any, dead: MemoryDeadLetter) -> Any:
    sink = _NeverReturns()
    d = Dispatcher(
        source, [sink], batch_size=10, flush_interval=0.01, shutdown_timeout=0.3, dead_letter=dead
    )
    task = asyncio.create_task(d.run())
    try:
        while not sink.entered.is_set():
            await asyncio.sleep(0.005)
        d.request_stop()
        started = time.monotonic()
        # It waited on the send for ever (trial 255: still running 80 s after the stop).
        stats = await asyncio.wait_for(task, 20)
        assert time.monotonic() - started < 0.3 + 2.0 + 3.0  # deadline, grace, close: bounded
    finally:
        sink.release.set()
    await asyncio.sleep(0.05)  # the sink returns: what the stop accounted for stays so
    assert stats.as_dict() == d.stats().as_dict()
    return stats


async def test_a_hung_inline_send_on_a_memory_lane_is_dead_lettered_at_the_stop() -> None:
    sub = Subscription(10_000)
    sub.offer(make_events(30))
    dead = MemoryDeadLetter()
    stats = await _stop_behind_a_hung_inline_send(sub, dead)
    s = stats.sinks["hung"]
    # The batch in the hung send (it may have it), then the 20 never read: every one counted.
    assert (s.received, s.sent, s.dead_lettered) == (30, 0, 30)
    assert stats.read == 30
    assert sorted(r["log_id"] for r in dead.records) == list(range(1, 31))
    held = [
        r for r in dead.records if "before the sink confirmed it (it may have it)" in r["error"]
    ]
    assert [r["log_id"] for r in held] == list(range(1, 11))
    assert {r["attempts"] for r in held} == {1}
    _balanced(stats)


async def test_a_hung_inline_send_on_a_durable_lane_is_left_for_redelivery(
    caplog: Any,
) -> None:
    source = ListSource(make_events(30))
    with caplog.at_level(logging.WARNING, logger="eventbus"):
        stats = await _stop_behind_a_hung_inline_send(source, MemoryDeadLetter())
    s = stats.sinks["hung"]
    assert (s.received, s.sent, s.requeued) == (10, 0, 10)  # read 0 before (trial 255)
    assert stats.read == 10 and stats.acked == 0 and source.acked == []
    # Its source closed: the stop did not wait behind the sink for the source's thread.
    assert source.closed
    assert "did not close" not in caplog.text
    assert "10 events not sent before the shutdown deadline; left unacknowledged" in caplog.text
    _balanced(stats)


async def test_the_watchdog_names_the_sink_whose_inline_send_hangs(
    caplog: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr("eventbus_core.dispatch._stuck.HUNG_AFTER", 0.5)
    sub = Subscription(10_000)
    sub.offer(make_events(10))
    sub.finish()  # as a stopped memory bus: the dispatcher drains, then finds no progress
    sink = _NeverReturns()
    d = Dispatcher(sub, [sink], batch_size=10, flush_interval=0.01, shutdown_timeout=0.3)
    try:
        with caplog.at_level(logging.WARNING, logger="eventbus"):
            stats = await asyncio.wait_for(d.run(), 20)
    finally:
        sink.release.set()
    assert "(sink(s) hung: a send that does not return?)" in caplog.text  # "none" before
    assert stats.sinks["hung"].dropped + stats.sinks["hung"].dead_lettered == 10


async def test_a_read_that_would_turn_inline_after_the_stop_gave_up_sends_nothing() -> None:
    # The stop looked once for a send in progress: a read still preparing its batch then
    # stored it inline, and that batch was in no figure, or held the stop for ever behind a
    # hung sink (review 258).
    sub = Subscription(10_000)
    sub.offer(make_events(30))
    sink = BlockingSink()
    dead = MemoryDeadLetter()
    d = Dispatcher(
        sub, [sink], batch_size=10, flush_interval=0.01, shutdown_timeout=0.3, dead_letter=dead
    )
    (lane,) = d._lanes
    preparing, release = threading.Event(), threading.Event()
    prepare = lane.prepare

    def slow_prepare(event: Any) -> Any:
        if event.log_id == 11:  # the second batch's read: held until the stop gave up
            preparing.set()
            release.wait(10)
        return prepare(event)

    lane.prepare = slow_prepare
    task = asyncio.create_task(d.run())
    try:
        while not preparing.is_set():
            await asyncio.sleep(0.005)
        d.request_stop()
        while not lane._stop_gave_inline_up():
            await asyncio.sleep(0.005)
    finally:
        release.set()
    stats = await asyncio.wait_for(task, 20)
    assert _log_ids(sink.batches) == list(range(1, 11))  # nothing stored after the give-up
    s = stats.sinks["blocking"]
    assert (s.received, s.sent, s.dead_lettered) == (30, 10, 20)
    assert sorted(r["log_id"] for r in dead.records) == list(range(11, 31))
    _balanced(stats)
