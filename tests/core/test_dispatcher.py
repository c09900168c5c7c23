"""Dispatcher behaviour: retries, dead letters, isolation of sinks, acknowledgement, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from eventbus_core import (
    Delivery,
    Dispatcher,
    DispatcherStats,
    Event,
    JsonlDeadLetter,
    MemoryDeadLetter,
    PermanentSinkError,
    RetryPolicy,
    Subscription,
    TransientSinkError,
)
from eventbus_core.sinks.jsonl import JsonlSink
from eventbus_core.testing import make_event
from tests._python import ROOT, run_python
from tests.core.conftest_dispatch import (
    FAST_RETRY,
    AlwaysFailing,
    GatedSink,
    ListSource,
    RecordingSink,
    SlowSink,
    make_events,
    read_jsonl,
)


def feed(events: list, capacity: int = 10_000) -> Subscription:
    """A finished subscription holding `events` (what a stopped memory bus leaves)."""
    sub = Subscription(capacity)
    sub.offer(events)
    sub.finish()
    return sub


def balanced(stats: object) -> None:
    for name, s in stats.sinks.items():  # type: ignore[attr-defined]
        assert s.received == s.sent + s.dead_lettered + s.dropped + s.requeued, name


async def test_sink_failing_n_times_then_succeeding_gets_everything_once() -> None:
    sink = RecordingSink(fail_times=2)
    d = Dispatcher(
        feed(make_events(30)),
        [sink],
        batch_size=10,
        flush_interval=0.01,
        retry=FAST_RETRY,
        dead_letter=MemoryDeadLetter(),
    )
    stats = await d.run()
    assert sorted(p["log_id"] for p in sink.payloads) == list(range(1, 31))
    s = stats.sinks["rec"]
    assert (s.received, s.sent, s.dead_lettered, s.dropped) == (30, 30, 0, 0)
    assert s.retried == 20  # the first batch of 10 failed twice
    assert s.failures == 2
    assert sink.closed


async def test_sink_that_always_fails_dead_letters_every_event(tmp_path: Path) -> None:
    dl_path = tmp_path / "dead.jsonl"
    sink = AlwaysFailing()
    d = Dispatcher(
        feed(make_events(25)),
        [sink],
        batch_size=10,
        flush_interval=0.01,
        retry=FAST_RETRY,
        dead_letter=JsonlDeadLetter(dl_path),
    )
    stats = await d.run()
    records = read_jsonl(dl_path)
    assert sorted(r["log_id"] for r in records) == list(range(1, 26))
    for r in records:
        assert r["sink"] == "broken"
        assert r["attempts"] == 4  # first try + 3 retries
        assert r["error"] == "HTTP 503"
        assert r["error_type"] == "TransientSinkError"
        assert r["payload"]["request_id"] == f"r{r['log_id']}"
    s = stats.sinks["broken"]
    assert s.received == 25 and s.dead_lettered == 25 and s.sent == 0 and s.dropped == 0
    assert sink.calls == 3 * 4  # 3 batches, 4 attempts each
    balanced(stats)


async def test_permanent_error_is_not_retried() -> None:
    sink = AlwaysFailing(permanent=True)
    dl = MemoryDeadLetter()
    d = Dispatcher(
        feed(make_events(5)),
        [sink],
        batch_size=10,
        flush_interval=0.01,
        retry=RetryPolicy(retries=3, base=60.0),
        dead_letter=dl,
    )
    stats = await d.run()
    assert sink.calls == 1
    assert [r["attempts"] for r in dl.records] == [1] * 5
    assert {r["error_type"] for r in dl.records} == {"PermanentSinkError"}
    assert stats.sinks["broken"].retried == 0


async def dispatched(sink: Any, n: int) -> tuple[DispatcherStats, MemoryDeadLetter]:
    """`n` events through `sink` (batches of 10, fast retries), and the dead letters."""
    dl = MemoryDeadLetter()
    d = Dispatcher(
        feed(make_events(n)),
        [sink],
        batch_size=10,
        flush_interval=0.01,
        retry=FAST_RETRY,
        dead_letter=dl,
    )
    return await d.run(), dl


async def test_a_cancelled_error_raised_by_the_sink_itself_is_a_failed_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A library's own timeout raising CancelledError ended the sink's worker without a word:
    # nothing logged or counted, the events kept until the shutdown (helper-92).
    sink = RecordingSink(fail_times=1, error=lambda: asyncio.CancelledError("library timeout"))
    with caplog.at_level(logging.INFO, logger="eventbus"):
        stats, dl = await asyncio.wait_for(dispatched(sink, 5), 10)
    # Named by its own class, as the dead letter and the figures name it (trial 257).
    assert "failed (attempt 1, CancelledError: send() raised CancelledError" in caplog.text
    assert sorted(p["log_id"] for p in sink.payloads) == [1, 2, 3, 4, 5]
    s = stats.sinks["rec"]
    assert (s.sent, s.failures, s.retried, s.dead_lettered) == (5, 1, 5, 0)
    assert s.failed_by_type == {"CancelledError": 1}
    assert not dl.records


class LibraryTimeout(BaseException):
    """As gevent's Timeout and trio's Cancelled: a library's own BaseException."""


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


@pytest.mark.parametrize(
    "ending",
    [
        SystemExit(3),
        KeyboardInterrupt(),
        GeneratorExit(),
        LibraryTimeout("lib"),
        UnprintableError(),
    ],
)
async def test_a_sink_raising_a_base_exception_or_an_unprintable_error_fails_its_attempt(
    ending: BaseException,
) -> None:
    # SystemExit ended `eventbus dispatch` (rc 3 or 130) with "Task exception was never
    # retrieved" (helper-92); the others ended the sink's worker alone, without a word or a
    # retry, its events held until the stop (trial 201).
    def error() -> BaseException:
        return ending

    sink = RecordingSink(fail_times=1, error=error)
    stats, dl = await asyncio.wait_for(dispatched(sink, 5), 10)
    assert sorted(p["log_id"] for p in sink.payloads) == [1, 2, 3, 4, 5]
    assert stats.sinks["rec"].failed_by_type == {type(ending).__name__: 1}
    assert not dl.records


@pytest.mark.parametrize("ending", [LibraryTimeout("lib"), UnprintableError()])
async def test_a_dead_letter_names_an_odd_failure_for_what_it_was(ending: BaseException) -> None:
    # An error whose str() raised was dead-lettered at the stop as "Shutdown", not as itself.
    sink = RecordingSink(fail_times=99, error=lambda: ending)
    stats, dl = await asyncio.wait_for(dispatched(sink, 3), 10)
    assert stats.sinks["rec"].dead_lettered == 3
    name = type(ending).__name__
    assert {r["error_type"] for r in dl.records} == {name}
    errors = {r["error"] for r in dl.records}
    if isinstance(ending, LibraryTimeout):
        assert errors == {
            "send() raised LibraryTimeout (lib): a sink must raise an Exception to fail a batch;"
            " a BaseException would end the dispatcher's task or process"
        }
    else:
        assert errors == {"<UnprintableError whose str() raised RuntimeError>"}


async def test_a_huge_error_message_is_clipped_in_dead_letters_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A 5 MB error went into every dead letter of its batch and every log line (trial 201).
    secret_end = "Bearer sk-" + "z" * 40
    huge = "x" * 5_000_000 + secret_end
    sink = RecordingSink(fail_times=99, error=lambda: PermanentSinkError(secret_end + " " + huge))
    with caplog.at_level(logging.INFO, logger="eventbus"):
        stats, dl = await asyncio.wait_for(dispatched(sink, 3), 10)
    assert stats.sinks["rec"].dead_lettered == 3
    for record in dl.records:
        assert len(record["error"]) < 2_100, len(record["error"])
        assert record["error"].endswith(" more characters)")
        assert "sk-zzzz" not in record["error"]  # masked before it was cut
    assert max(len(r.getMessage()) for r in caplog.records) < 2_500


# A bare key (no "Bearer" before it) whose first characters fall before the 2,000th: cut first,
# "sk-A1b2" is too short to be told from text, and stayed (review 202).
KEY_ACROSS_THE_CUT = "x" * 1992 + " sk-A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0 and more"


async def test_a_key_the_cut_would_halve_is_masked_whole_first(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = RecordingSink(fail_times=99, error=lambda: PermanentSinkError(KEY_ACROSS_THE_CUT))
    with caplog.at_level(logging.INFO, logger="eventbus"):
        stats, dl = await asyncio.wait_for(dispatched(sink, 1), 10)
    assert stats.sinks["rec"].dead_lettered == 1
    assert "x [REDACT" in dl.records[0]["error"]  # the mask, which the cut halves
    for text in (dl.records[0]["error"], caplog.text):
        assert "sk-A1b2" not in text and "A1b2C3" not in text


async def test_a_transformer_error_is_masked_before_it_is_cut(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def transform(event: Event) -> dict[str, Any]:
        raise ValueError(KEY_ACROSS_THE_CUT[len("ValueError: ") :])  # the key where it was

    sink = RecordingSink()
    with caplog.at_level(logging.INFO, logger="eventbus"):
        await Dispatcher(
            feed(make_events(1)), [sink], flush_interval=0.01, retry=FAST_RETRY,
            transform=transform,
        ).run()  # fmt: skip
    error = sink.payloads[0]["transform_error"]
    assert error.endswith(" more characters)") and "x [REDACT" in error
    for text in (error, caplog.text):
        assert "sk-A1b2" not in text and "A1b2C3" not in text


class TransformerTimeout(BaseException):
    """As gevent's Timeout: a library's own BaseException, raised by a transformer."""


@pytest.mark.parametrize("ending", [TransformerTimeout("lib"), GeneratorExit(), SystemExit(2)])
async def test_a_transformer_raising_a_base_exception_ships_the_bare_facts(
    ending: BaseException,
) -> None:
    # It ended the dispatcher's reader, and Dispatcher.run() with it (review 202).
    def transform(event: Event) -> dict[str, Any]:
        raise ending

    sink = RecordingSink()
    stats = await asyncio.wait_for(
        Dispatcher(
            feed(make_events(3)), [sink], flush_interval=0.01, retry=FAST_RETRY,
            transform=transform,
        ).run(),
        10,
    )  # fmt: skip
    assert sorted(p["log_id"] for p in sink.payloads) == [1, 2, 3]
    assert all(p["transform_error"].startswith(type(ending).__name__) for p in sink.payloads)
    assert stats.sinks["rec"].sent == 3


async def test_a_generator_exit_from_closing_the_send_is_not_the_sinks_failure() -> None:
    # A worker's coroutine closed (its task collected) got GeneratorExit at its await, which
    # was counted as the sink failing (review 202).
    from eventbus_core.dispatch._worker import _being_closed

    assert not _being_closed(asyncio.current_task())  # raised by the sink in the sending task
    assert _being_closed(None)  # thrown in by a close outside any task

    async def other() -> bool:
        return _being_closed(mine)

    mine = asyncio.current_task()
    assert await asyncio.create_task(other())  # closed while another task runs
    assert await asyncio.to_thread(_being_closed, mine)  # no running loop there


async def test_an_error_about_one_event_dead_letters_it_alone_and_sends_the_rest_on() -> None:
    class OneByOne(RecordingSink):
        """Stores events one by one; refuses log_id 3's request for good, once."""

        async def send(self, batch: Sequence[dict[str, Any]]) -> None:
            self.calls += 1
            for done, payload in enumerate(batch):
                if payload["log_id"] == 3 and not any(p["log_id"] == 3 for p in self.refused):
                    self.refused.append(payload)
                    raise PermanentSinkError("HTTP 400: bad body", delivered=done, refused=1)
                self.batches.append([payload])

    sink = OneByOne()
    sink.refused = []  # type: ignore[attr-defined]
    stats, dl = await dispatched(sink, 6)
    assert [p["log_id"] for p in sink.payloads] == [1, 2, 4, 5, 6]  # each once, in order
    assert [(r["log_id"], r["error"], r["attempts"]) for r in dl.records] == [
        (3, "HTTP 400: bad body", 1)
    ]
    s = stats.sinks["rec"]
    assert (s.sent, s.dead_lettered, s.retried, s.failures) == (5, 1, 0, 1)
    balanced(stats)


@pytest.mark.parametrize("refused", [0, 4, 9])
async def test_a_refused_count_of_none_or_all_dead_letters_every_event_left(refused: int) -> None:
    sink = RecordingSink(
        fail_times=1, error=lambda: PermanentSinkError("no", delivered=1, refused=refused)
    )
    stats, dl = await dispatched(sink, 5)
    assert [r["log_id"] for r in dl.records] == [2, 3, 4, 5]
    assert stats.sinks["rec"].sent == 1
    balanced(stats)


async def test_slow_sink_does_not_hold_back_a_fast_one() -> None:
    slow, fast = GatedSink("slow"), RecordingSink("fast")
    sub = Subscription(10_000)
    d = Dispatcher(
        sub,
        [slow, fast],
        batch_size=10,
        flush_interval=0.01,
        queue_size=100,
        retry=FAST_RETRY,
        group_mode="shared",
    )
    task = asyncio.create_task(d.run())
    sub.offer(make_events(60))
    await fast.wait_for(60)  # all through while the slow one is stuck on its first batch
    assert slow.payloads == []
    assert slow.waiting.is_set()
    sub.finish()
    slow.gate.set()
    stats = await task
    assert len(slow.payloads) == 60
    balanced(stats)


def test_a_source_without_a_name_is_shown_by_its_lane_name() -> None:
    # A third-party consumer without `name` passed the contract suite, and `eventbus dispatch`
    # then ended at start-up with an AttributeError (helper-91).
    from eventbus_core.dispatch._lane import Lane

    source = ListSource(make_events(3))
    del source.name
    lane = Lane("g:jsonl", source, lambda event: {}, durable=True)
    assert lane.source_name == "g:jsonl"
    assert lane.figures()["source"] == "g:jsonl"
    assert Lane("g:jsonl", ListSource([], "c-1"), lambda e: {}, durable=True).source_name == "c-1"


async def test_a_source_figure_that_is_not_plain_data_does_not_fail_the_stop() -> None:
    # A third-party consumer's datetime in figures() made the dispatcher's last stats line
    # raise: every stop of `eventbus dispatch` ended in exit 1, "internal error" (trial 117).
    import datetime
    import json

    class Dated(ListSource):
        def figures(self) -> dict[str, Any]:
            return {"delivered": 3, "at": datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)}

    sink = RecordingSink("ok")
    d = Dispatcher(Dated(make_events(3)), [sink], flush_interval=0.01, retry=FAST_RETRY)
    task = asyncio.create_task(d.run())
    await sink.wait_for(3)
    d.stop()
    stats = await task
    lane = json.loads(json.dumps(stats.as_dict()))["lanes"]
    (figures,) = lane.values()
    assert figures["at"] == "2026-01-02 00:00:00+00:00" and figures["delivered"] == 3


async def test_shared_source_is_acked_only_when_every_sink_is_done() -> None:
    source = ListSource(make_events(20))
    slow, fast = GatedSink("slow"), RecordingSink("fast")
    d = Dispatcher(source, [slow, fast], batch_size=20, flush_interval=0.01, retry=FAST_RETRY)
    task = asyncio.create_task(d.run())
    await fast.wait_for(20)
    await slow.waiting.wait()
    assert source.acked == []  # the fast sink alone does not acknowledge anything
    slow.gate.set()
    await slow.wait_for(20)
    d.request_stop()
    stats = await task
    assert sorted(source.acked) == list(range(1, 21))
    assert stats.acked == 20 and source.closed
    balanced(stats)


async def test_dead_lettered_counts_as_done_but_a_failed_dead_letter_is_not_acked() -> None:
    class BrokenDeadLetter(MemoryDeadLetter):
        async def write(self, *args: object, **kwargs: object) -> None:
            raise OSError("disk full")

    source = ListSource(make_events(10))
    d = Dispatcher(
        source,
        [AlwaysFailing(permanent=True)],
        batch_size=10,
        flush_interval=0.01,
        dead_letter=BrokenDeadLetter(),
    )
    task = asyncio.create_task(d.run())
    while d.stats().sinks["broken"].requeued < 10:
        await asyncio.sleep(0.005)
    d.request_stop()
    stats = await task
    assert source.acked == []  # left pending: the source delivers them again
    balanced(stats)

    source = ListSource(make_events(10))
    dl = MemoryDeadLetter()
    d = Dispatcher(
        source, [AlwaysFailing(permanent=True)], batch_size=10, flush_interval=0.01, dead_letter=dl
    )
    task = asyncio.create_task(d.run())
    while len(dl.records) < 10:
        await asyncio.sleep(0.005)
    d.request_stop()
    await task
    assert sorted(source.acked) == list(range(1, 11))


async def test_a_retry_cut_short_by_the_stop_is_not_counted_as_retried() -> None:
    # "retried" counted each retry as it was scheduled: a stop during a long Retry-After read
    # "retried: 10" after one request.
    class SaysLater(RecordingSink):
        calls = 0

        async def send(self, batch: Sequence[dict[str, Any]]) -> None:
            self.calls += 1
            raise TransientSinkError("HTTP 429", retry_after=100.0)

    source = ListSource(make_events(10))
    sink = SaysLater("later")
    d = Dispatcher(source, [sink], batch_size=10, flush_interval=0.01, shutdown_timeout=0.05)
    task = asyncio.create_task(d.run())
    while not sink.calls:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)
    d.request_stop()
    stats = await task
    s = stats.sinks["later"]
    assert sink.calls == 1 and s.retried == 0 and s.requeued == 10
    balanced(stats)


async def test_shutdown_hands_back_unsent_events_of_a_durable_source() -> None:
    source = ListSource(make_events(15))
    stuck = GatedSink("stuck")
    d = Dispatcher(source, [stuck], batch_size=5, flush_interval=0.01, shutdown_timeout=0.05)
    task = asyncio.create_task(d.run())
    await stuck.waiting.wait()
    d.request_stop()
    stats = await task
    assert source.acked == []
    s = stats.sinks["stuck"]
    # What was read is handed back; what was not read never left the source.
    assert 0 < s.received <= 15
    assert s.requeued == s.received and s.sent == 0 and s.dropped == 0
    balanced(stats)


async def stopped_with_a_stuck_sink(
    events: int, **options: Any
) -> tuple[DispatcherStats, MemoryDeadLetter]:
    """Dispatch `events` from a memory subscription to a sink that never returns, stop once it
    holds its first batch (a 0.05 s deadline); return the figures and the dead letters."""
    stuck = GatedSink("stuck")
    dl = MemoryDeadLetter()
    sub = Subscription(1000)
    sub.offer(make_events(events))
    d = Dispatcher(
        sub,
        [stuck],
        batch_size=5,
        flush_interval=0.01,
        shutdown_timeout=0.05,
        dead_letter=dl,
        **options,
    )
    task = asyncio.create_task(d.run())
    await stuck.waiting.wait()
    d.request_stop()
    return await task, dl


async def test_shutdown_dead_letters_what_a_memory_subscription_still_buffers() -> None:
    # Back-pressure left events in the subscription while the sink was stuck: at the stop they
    # were counted as "never read" (source_dropped), in no dead letter (helper-72: 1,699 of
    # 3,000 with a sink that always failed).
    stats, dl = await stopped_with_a_stuck_sink(60, queue_size=10)
    assert sorted(r["log_id"] for r in dl.records) == list(range(1, 61))
    assert {r["error_type"] for r in dl.records} == {"Shutdown"}
    assert (stats.read, stats.source_dropped) == (60, 0)
    assert stats.sinks["stuck"].dead_lettered == 60
    balanced(stats)
    unread = [r for r in dl.records if "before it read them" in r["error"]]
    assert len(unread) >= 40 and all(r["attempts"] == 0 for r in unread)


async def test_a_read_the_deadline_cut_off_is_dead_lettered_not_lost() -> None:
    # The reader cancelled at the deadline while its read ran in the lane's thread: that read's
    # events were taken from the subscription and then dropped with the cancelled future,
    # counted nowhere.
    import threading

    gate = threading.Event()
    reading = threading.Event()

    class SlowRead(Subscription):
        def get_batch(self, max_items: int | None = None, timeout: float | None = None) -> Any:
            got = super().get_batch(max_items, timeout)
            if got and got[0].log_id == 6:  # the second batch: held in the thread
                reading.set()
                gate.wait(10)
            return got

    dl = MemoryDeadLetter()
    sink = RecordingSink()
    sub = SlowRead(1000)
    sub.offer(make_events(5))
    d = Dispatcher(
        sub, [sink], batch_size=5, flush_interval=0.01, shutdown_timeout=0.05, dead_letter=dl
    )
    task = asyncio.create_task(d.run())
    await sink.wait_for(5)
    sub.offer(make_events(5, start=6))  # read by the next read, which the gate holds
    assert await asyncio.get_running_loop().run_in_executor(None, reading.wait, 10)
    d.request_stop()
    threading.Timer(0.3, gate.set).start()  # the read ends after the deadline
    stats = await task
    assert [p["log_id"] for p in sink.payloads] == [1, 2, 3, 4, 5]
    assert sorted(r["log_id"] for r in dl.records) == list(range(6, 11))
    assert all(r["attempts"] == 0 for r in dl.records)
    assert stats.read == 10
    balanced(stats)


async def test_shutdown_dead_letters_what_a_memory_source_cannot_take_back() -> None:
    stats, dl = await stopped_with_a_stuck_sink(12)
    assert sorted(r["log_id"] for r in dl.records) == list(range(1, 13))
    assert {r["error_type"] for r in dl.records} == {"Shutdown"}
    assert stats.sinks["stuck"].dead_lettered == 12
    balanced(stats)
    # The batch in the sink's hands was attempted once, and may have arrived; the queued ones
    # never were (every dead letter said 0 attempts and "before delivery").
    sent = [r for r in dl.records if r["attempts"] == 1]
    assert len(sent) == 5 and all("before the sink confirmed it" in r["error"] for r in sent)
    assert all(r["attempts"] == 0 and "before delivery" in r["error"] for r in dl.records[5:])


async def test_batches_by_size_and_flushes_partial_batches_by_time() -> None:
    sink = RecordingSink()
    sub = Subscription(1000)
    d = Dispatcher(sub, [sink], batch_size=10, flush_interval=0.02)
    task = asyncio.create_task(d.run())
    sub.offer(make_events(25))
    await sink.wait_for(25)  # the last 5 only leave by the flush timer
    assert [len(b) for b in sink.batches] == [10, 10, 5]
    sub.finish()
    await task


async def test_transform_failure_still_delivers_the_event() -> None:
    def broken(event: object) -> dict:
        raise RuntimeError("bug in transformer")

    sink = RecordingSink()
    await Dispatcher(feed(make_events(3)), [sink], flush_interval=0.01, transform=broken).run()
    assert [p["request_id"] for p in sink.payloads] == ["r1", "r2", "r3"]
    assert "bug in transformer" in sink.payloads[0]["transform_error"]


async def test_a_transformer_returning_no_dict_is_named_and_not_logged_per_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A transformer returning a str gave "ValueError: dictionary update sequence element #0
    # has length 1; 2 is required", logged at WARNING for every event (an outside trial).
    def as_text(event: object) -> Any:
        return "not a payload"

    sink = RecordingSink()
    with caplog.at_level(logging.WARNING, logger="eventbus.dispatcher"):
        await Dispatcher(
            feed(make_events(40)), [sink], flush_interval=0.01, transform=as_text
        ).run()
    assert len(sink.payloads) == 40
    reason = sink.payloads[0]["transform_error"]
    assert "returned str, not a dict" in reason and "as_text" in reason, reason
    warned = [r for r in caplog.records if "transform failed" in r.getMessage()]
    assert len(warned) == 5  # the first five; then every 1000th


@pytest.mark.parametrize(
    ("made", "where"),
    [
        ({"x": object()}, "a value of type object at payload['x']"),
        (
            {"a": [1, {"when": datetime(2026, 1, 1)}]},
            "a value of type datetime at payload['a'][1]['when']",
        ),
        ({"tags": {"x", "y"}}, "a value of type set at payload['tags']"),
        ({"m": {(1, 2): "v"}}, "a key of type tuple in payload['m']"),
        # The event's headers are a mappingproxy: written as its repr (review 149).
        ({"h": MappingProxyType({"a": ("b",)})}, "a value of type mappingproxy at payload['h']"),
    ],
)
async def test_a_transformer_value_json_cannot_encode_is_a_transform_error(
    made: dict[str, Any], where: str
) -> None:
    # The jsonl sink wrote {"x": "<object object at 0x...>"}, exit 0, no warning (trial 145).
    def custom(event: object) -> dict[str, Any]:
        return made

    sink = RecordingSink()
    await Dispatcher(feed(make_events(2)), [sink], flush_interval=0.01, transform=custom).run()
    assert [p["request_id"] for p in sink.payloads] == ["r1", "r2"]
    reason = sink.payloads[0]["transform_error"]
    assert where in reason and "JSON cannot encode" in reason and "custom" in reason, reason
    assert "x" not in sink.payloads[0] or sink.payloads[0].get("x") is None


async def test_a_transformer_payload_holding_itself_is_a_transform_error() -> None:
    # A walk without a bound would never end on it (json.dumps says "Circular reference").
    looped: dict[str, Any] = {"a": []}
    looped["a"].append(looped)

    def custom(event: object) -> dict[str, Any]:
        return looped

    sink = RecordingSink()
    await Dispatcher(feed(make_events(1)), [sink], flush_interval=0.01, transform=custom).run()
    assert "nested more than 500 deep (or holding itself)" in sink.payloads[0]["transform_error"]


async def test_a_transformer_returning_plain_data_is_passed_on() -> None:
    plain = {"s": "t", "i": 1, "f": 1.5, "b": True, "n": None, "l": [1, ["x"]], "d": {"k": (1,)}}

    def custom(event: object) -> dict[str, Any]:
        return plain

    sink = RecordingSink()
    await Dispatcher(feed(make_events(1)), [sink], flush_interval=0.01, transform=custom).run()
    assert "transform_error" not in sink.payloads[0]
    assert sink.payloads[0]["l"] == [1, ["x"]]


async def test_events_no_sink_could_take_before_are_written_among_the_others(
    tmp_path: Path,
) -> None:
    # A lone surrogate in a body (JSON allows the escape) has no UTF-8, and a body nested
    # hundreds deep took the redaction past the recursion limit. The first failed the jsonl line
    # and its dead letter for ever, the second the read: either held its whole batch back.
    def event(n: int, body: bytes) -> Event:
        headers = {"Content-Type": ["application/json"], "Authorization": ["Bearer sk-secret"]}
        return make_events(1, start=n)[0].replace(
            path="/v1/chat/completions?key=sk-abcdefabcdefabcdefabcdef",
            response_headers=headers,
            response_body=body,
        )

    events = [
        event(1, b'{"ok": true}'),
        event(2, b'{"s": "caf\\u00e9 \\ud800"}'),
        event(3, b"[" * 900 + b"]" * 900),
        event(4, b'{"ok": true}'),
    ]
    path = tmp_path / "out.jsonl"
    sink = JsonlSink(path)
    stats = await Dispatcher(feed(events), [sink], flush_interval=0.01).run()
    balanced(stats)
    assert stats.sinks["jsonl"].sent == 4
    lines = read_jsonl(path)
    assert [line["request_id"] for line in lines] == ["r1", "r2", "r3", "r4"]
    assert lines[1]["output"] == {"s": "caf\u00e9 \ud800"}
    assert "nested too deeply to redact" in lines[2]["redaction_error"]
    assert "output" not in lines[2] and "response_headers" not in lines[2]
    text = path.read_text()
    assert "sk-secret" not in text and "sk-abcdef" not in text


async def test_stats_are_logged_periodically_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="eventbus.dispatcher")
    sub = Subscription(10)
    d = Dispatcher(sub, [RecordingSink()], stats_interval=0.01)
    task = asyncio.create_task(d.run())
    while not any("dispatcher stats" in r.message for r in caplog.records):
        await asyncio.sleep(0.01)
    record = next(r for r in caplog.records if "dispatcher stats" in r.message)
    assert record.levelno == logging.DEBUG
    assert '"received"' in record.message and '"lag_seconds"' in record.message
    sub.finish()
    await task


def test_start_and_stop_from_sync_code() -> None:
    sink = RecordingSink()
    sub = Subscription(100)
    d = Dispatcher(sub, [sink], flush_interval=0.01)
    d.start()
    sub.offer(make_events(7))
    sub.finish()
    assert d.join(10)
    assert len(sink.payloads) == 7


def test_invalid_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one sink"):
        Dispatcher(Subscription(1), [])
    with pytest.raises(ValueError, match="unique"):
        Dispatcher(Subscription(1), [RecordingSink("a"), RecordingSink("a")])
    with pytest.raises(TypeError, match="cannot dispatch"):
        Dispatcher(42, [RecordingSink()])


async def test_a_failing_source_read_is_retried_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Flaky(ListSource):
        failures = 2

        def read(self, max_items: int, timeout: float) -> list:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("redis://user:hunter2@cache:6379 unreachable")
            return super().read(max_items, timeout)

    source = Flaky(make_events(5))
    sink = RecordingSink()
    d = Dispatcher(source, [sink], flush_interval=0.01)
    task = asyncio.create_task(d.run())
    await sink.wait_for(5)
    d.request_stop()
    await task
    assert sorted(source.acked) == [1, 2, 3, 4, 5]
    assert "reading failed" in caplog.text and "hunter2" not in caplog.text


async def test_a_burst_beyond_the_bus_buffer_waits_in_the_dispatchers_subscription() -> None:
    from eventbus_memory import InMemoryEventBus

    # The bus buffers 10 events, each of its own subscribers 10 too; the dispatcher asks for
    # subscriptions of 500, so 300 events published while its sink is stuck all arrive.
    bus = InMemoryEventBus(buffer_size=10)
    sink = GatedSink("stuck")
    d = Dispatcher(
        bus, [sink], batch_size=10, queue_size=10, flush_interval=0.01, subscription_buffer=500
    )
    task = asyncio.create_task(d.run())
    for event in make_events(300):
        bus.publish(event)
        if bus.stats().queue_depth >= 5:
            assert await asyncio.to_thread(bus.flush, 10)  # keep within the publish buffer
    assert await asyncio.to_thread(bus.flush, 10)
    assert bus.stats() == (300, 0)
    sink.gate.set()
    await bus.astop()
    stats = await task
    assert sorted(p["log_id"] for p in sink.payloads) == list(range(1, 301))
    assert stats.source_dropped == 0
    balanced(stats)


def test_subscription_buffer_is_chosen_per_subscription_and_checked() -> None:
    from eventbus_memory import InMemoryEventBus

    with InMemoryEventBus(buffer_size=10) as bus:
        assert bus.subscribe().capacity == 10
        assert bus.subscribe(buffer_size=500).capacity == 500
        with pytest.raises(ValueError, match="buffer_size must be a positive int"):
            bus.subscribe(buffer_size=0)


def test_a_subscription_that_drops_says_so_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    sub = Subscription(2, name="slowpoke")
    with caplog.at_level(logging.WARNING, logger="eventbus"):
        sub.count_dropped(3)
        sub.count_dropped(4)  # within the quiet period: counted, not logged again
    warnings = [r.getMessage() for r in caplog.records if "slowpoke" in r.getMessage()]
    assert len(warnings) == 1 and "dropped 3 event(s)" in warnings[0]
    assert sub.dropped == 7


async def test_stats_are_a_snapshot_that_later_work_does_not_change() -> None:
    sub = Subscription(1000)
    sink = RecordingSink()
    d = Dispatcher(sub, [sink], batch_size=5, flush_interval=0.01)
    task = asyncio.create_task(d.run())
    sub.offer(make_events(5))
    await sink.wait_for(5)
    before = d.stats()
    frozen = before.as_dict()
    sub.offer(make_events(5, start=6))
    await sink.wait_for(10)
    sub.finish()
    after = await task
    assert after.sinks["rec"].sent == 10
    assert before.as_dict() == frozen  # nothing in the first snapshot moved
    assert before.sinks["rec"] is not after.sinks["rec"]
    assert before.lanes["shared"] is not after.lanes["shared"]


async def test_failures_by_type_in_a_snapshot_stay_as_they_were() -> None:
    # failed_by_type was the worker's live dict: a snapshot's 1 became 3 (helper-72).
    sub = Subscription(1000)
    sink = RecordingSink(fail_times=3)
    d = Dispatcher(sub, [sink], batch_size=5, flush_interval=0.01, retry=FAST_RETRY)
    task = asyncio.create_task(d.run())
    sub.offer(make_events(5))
    while d.stats().sinks["rec"].failures < 1:
        await asyncio.sleep(0.001)
    early = d.stats().sinks["rec"]
    seen = dict(early.failed_by_type)
    await sink.wait_for(5)
    sub.finish()
    after = await task
    assert sum(after.sinks["rec"].failed_by_type.values()) == 3
    assert early.failed_by_type == seen


class _Figures(ListSource):
    def __init__(self) -> None:
        super().__init__([])
        self.live = {"delivered": 0}

    def figures(self) -> dict[str, object]:
        return {"consumer": self.live}  # a live dict, as a source may hand out


def test_lane_figures_in_stats_are_copied() -> None:
    source = _Figures()
    d = Dispatcher(source, [RecordingSink()])
    snapshot = d.stats()
    source.live["delivered"] = 99
    assert snapshot.lanes["shared"]["consumer"] == {"delivered": 0}


def test_from_settings_builds_the_subclass_it_is_called_on() -> None:
    from eventbus_core import EventBusSettings

    class Mine(Dispatcher):
        pass

    d = Mine.from_settings(EventBusSettings(sinks="console", dead_letter_path=""), bus=feed([]))
    assert type(d) is Mine


def test_dispatch_setup_does_not_import_the_dispatcher() -> None:
    import ast

    import eventbus_core.dispatch._setup as setup

    tree = ast.parse(Path(setup.__file__).read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert "eventbus_core.dispatch._dispatcher" not in imported
    assert not any(m.startswith("eventbus_core.dispatch._payload") for m in imported)


async def test_dead_letter_error_type_is_the_metric_label() -> None:
    class Refusing:
        name = "refusing"

        async def send(self, batch: Sequence[dict[str, Any]]) -> None:
            raise PermanentSinkError("HTTP 400: bad request", error_type="400")

        async def close(self) -> None:
            pass

    dl = MemoryDeadLetter()
    d = Dispatcher(
        feed(make_events(3)), [Refusing()], batch_size=10, flush_interval=0.01, dead_letter=dl
    )
    stats = await d.run()
    assert {r["error_type"] for r in dl.records} == {"400"}
    assert dict(stats.sinks["refusing"].failed_by_type) == {"400": 1}


_EMBEDDED_DISPATCHER = """
import asyncio, gc
from eventbus_core import Dispatcher, Subscription
from eventbus_core.testing import make_event
from tests.core.conftest_dispatch import RecordingSink

before = gc.get_threshold()
sub = Subscription(10)
sub.offer([make_event(i) for i in range(3)])
sub.finish()
stats = asyncio.run(Dispatcher(sub, [RecordingSink("a")]).run())
print(stats.sinks["a"].sent, gc.get_freeze_count(), gc.get_threshold() == before)
"""

_PREPARED_TWICE = """
import gc, sys
from eventbus_core.dispatch._heap import YOUNG_THRESHOLD, prepare_dispatch_heap

if len(sys.argv) > 1:
    gc.set_threshold(int(sys.argv[1]), 10, 10)
middle_old = gc.get_threshold()[1:]
prepare_dispatch_heap()
frozen = gc.get_freeze_count()
garbage = [[] for _ in range(1000)]
prepare_dispatch_heap()
print(frozen > 0, gc.get_freeze_count() == frozen, gc.get_threshold()[0], YOUNG_THRESHOLD,
      gc.get_threshold()[1:] == middle_old)
"""


def _python(code: str, *args: str) -> list[str]:
    done = run_python(code, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_the_dispatch_command_alone_freezes_the_heap_and_raises_the_young_threshold() -> None:
    # What exists when `eventbus dispatch` starts is out of the GC's passes, and young passes
    # come less often; a later call does not freeze again (it would keep the garbage cycles
    # made since forever), and a Dispatcher run inside an application leaves the
    # application's heap and collector settings alone. Each case runs in a process of its
    # own: both settings are process-wide.
    import inspect

    from eventbus_core.cli import _dispatch_cmd

    assert "prepare_dispatch_heap()" in inspect.getsource(_dispatch_cmd)
    assert _python(_EMBEDDED_DISPATCHER) == ["3", "0", "True"]  # delivered, frozen, threshold
    frozen, once, young, target, kept = _python(_PREPARED_TWICE)
    assert (frozen, once, young, kept) == ("True", "True", target, "True")
    # A threshold set higher by the operator stays, and so does 0 (collection turned off).
    assert _python(_PREPARED_TWICE, "50000")[2] == "50000"
    assert _python(_PREPARED_TWICE, "0")[2] == "0"


async def test_acknowledgements_do_not_wait_behind_a_blocking_read() -> None:
    """A durable source is used from one thread, acknowledgements too: a read that waits its
    whole timeout for new entries would hold the acknowledgement of the last batch that long.
    While deliveries are out, the lane reads without waiting."""

    class BlockingListSource(ListSource):
        def __init__(self, events: Sequence[Event]) -> None:
            super().__init__(events)
            self.delivered = 0
            self.blocking_reads_while_out: list[int] = []

        def read(self, max_items: int, timeout: float) -> list[Delivery]:
            out = ListSource.read(self, max_items, 0.0)
            self.delivered += len(out)
            if not out and timeout:
                if self.delivered > len(self.acked):
                    self.blocking_reads_while_out.append(self.delivered - len(self.acked))
                time.sleep(timeout)  # as a Redis XREADGROUP BLOCK on an empty stream
            return out

    source = BlockingListSource(make_events(30))
    sink = RecordingSink()
    d = Dispatcher(source, [sink], batch_size=10, flush_interval=0.01, poll_interval=0.5)
    task = asyncio.create_task(d.run())
    await sink.wait_for(30)
    while len(source.acked) < 30:
        await asyncio.sleep(0.005)
    d.request_stop()
    stats = await task
    assert source.blocking_reads_while_out == []
    assert sorted(source.acked) == list(range(1, 31))
    balanced(stats)


def test_an_owned_bus_whose_stop_never_returns_does_not_hold_the_dispatcher(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import threading

    from eventbus_memory import InMemoryEventBus

    class HangingStop(InMemoryEventBus):
        def stop(self, timeout: float | None = None) -> None:
            super().stop(0)
            threading.Event().wait()  # a plugin's bug

    bus = HangingStop()
    sink = RecordingSink()
    dispatcher = Dispatcher(bus, [sink], stats_interval=0)
    dispatcher.owned_bus = bus
    dispatcher.owned_bus_stop_timeout = 0.1
    dispatcher.request_stop()
    started = time.monotonic()
    # asyncio.run() also waits for the default executor's threads: the stop must not be one.
    asyncio.run(dispatcher.run())
    assert time.monotonic() - started < 10
    assert "the bus's stop() did not return within 5.1 s" in caplog.text
    assert sink.closed


class NeverEnding(RecordingSink):
    """A plugin's bug: its send never ends, stuck in a thread of its own (`asyncio.to_thread`,
    released by `forever`) or swallowing every cancellation; its close does the same."""

    def __init__(self, fault: str, forever: threading.Event) -> None:
        super().__init__("stuck")
        self.fault = fault
        self.forever = forever
        self.holding = threading.Event()  # set once a send began

    async def send(self, batch: Sequence[dict[str, Any]]) -> None:
        self.holding.set()
        if self.fault == "thread-never-returns":
            await asyncio.to_thread(self.forever.wait)
            return
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    async def close(self) -> None:
        if self.fault == "swallows-cancellation":
            await self.send([])
        self.closed = True


@pytest.mark.parametrize("fault", ["thread-never-returns", "swallows-cancellation"])
def test_a_sink_that_never_ends_does_not_hold_the_stop(
    fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    # `eventbus dispatch` ran the dispatcher with asyncio.run(), which waits without end for
    # the default executor's threads (a sink's asyncio.to_thread call that never returns) and
    # for a cancelled task that swallows its cancellation: SIGTERM never ended the process.
    import threading

    from eventbus_core._overrun import run_bounded

    forever = threading.Event()
    sink = NeverEnding(fault, forever)
    source = ListSource(make_events(5))
    dispatcher = Dispatcher(source, [sink], batch_size=5, flush_interval=0.01, shutdown_timeout=0.2)

    async def stop_soon() -> Any:
        task = asyncio.create_task(dispatcher.run())
        await asyncio.sleep(0.3)
        dispatcher.request_stop()
        return await task

    started = time.monotonic()
    try:
        stats = run_bounded(stop_soon(), grace=0.5)
    finally:
        forever.set()  # let the thread of this test go
    assert time.monotonic() - started < 8  # shutdown 0.2 s, each bound 0.5 to 2 s
    assert stats.sinks["stuck"].requeued == 5 and source.acked == []
    if fault == "swallows-cancellation":
        assert "did not end within" in caplog.text


@pytest.mark.parametrize("fault", ["thread-never-returns", "swallows-cancellation"])
def test_a_sink_that_never_ends_does_not_hold_stop_of_a_started_dispatcher(fault: str) -> None:
    # Dispatcher.start() ran asyncio.run(), which waits without end for such a sink: stop()
    # returned False after 7 s and the thread never ended (trial 103); the docs promise the
    # bounds `eventbus dispatch` keeps.
    import threading

    forever = threading.Event()
    sink = NeverEnding(fault, forever)
    dispatcher = Dispatcher(
        ListSource(make_events(5)),
        [sink],
        batch_size=5,
        flush_interval=0.01,
        shutdown_timeout=0.2,
    )
    try:
        dispatcher.start()
        assert sink.holding.wait(10)
        started = time.monotonic()
        assert dispatcher.stop(timeout=15)
        assert time.monotonic() - started < 8  # shutdown 0.2 s, then each bound 2 s at most
    finally:
        forever.set()  # let the thread of this test go
    assert dispatcher.stats().sinks["stuck"].requeued == 5


async def test_a_sink_error_with_counts_broken_after_construction_leaves_the_sink_working() -> None:
    # A NaN retry_after slept for ever (a stop that never ended); a float `delivered` killed
    # the sink's worker, every later event piling up in its queue. Set on the error after its
    # constructor (which now refuses both), they must still do no harm.
    def broken() -> TransientSinkError:
        err = TransientSinkError("down")
        err.retry_after = float("nan")
        err.delivered = 2.5  # type: ignore[assignment]
        return err

    sink = RecordingSink(fail_times=2, error=broken)
    d = Dispatcher(
        feed(make_events(30)), [sink], batch_size=10, flush_interval=0.01,
        retry=FAST_RETRY, dead_letter=MemoryDeadLetter(),
    )  # fmt: skip
    stats = await asyncio.wait_for(d.run(), 20)
    assert sorted(p["log_id"] for p in sink.payloads) == list(range(1, 31))
    s = stats.sinks["rec"]
    assert (s.received, s.sent, s.dead_lettered, s.dropped) == (30, 30, 0, 0)


_STUCK_SERVE = """
import asyncio, sys
from eventbus_core import Dispatcher, Subscription
from eventbus_core.testing import make_event
from tests.core.conftest_dispatch import GatedSink

sub = Subscription(100)
sub.offer([make_event(1)])  # not finished: the dispatcher runs until a signal
sink = GatedSink()  # its gate never opens: the shutdown would wait its whole timeout
d = Dispatcher(sub, [sink], batch_size=1, flush_interval=0.01, shutdown_timeout=60)


async def main() -> None:
    serving = asyncio.ensure_future(d.serve())
    await sink.waiting.wait()
    print("sending", flush=True)
    await serving


try:
    asyncio.run(main())
except KeyboardInterrupt:
    sys.exit(130)
"""


@contextlib.contextmanager
def _serving_child(script: str) -> Iterator[subprocess.Popen[str]]:
    """`script` in a child process, once it has printed "sending"; killed if still running."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "sending"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def test_a_second_ctrl_c_ends_serve_at_once() -> None:
    # The second SIGINT only asked for the stop again: eventbus dispatch waited its whole
    # EVENTBUS_SHUTDOWN_TIMEOUT, where operations.md says a second Ctrl-C ends it at once.
    with _serving_child(_STUCK_SERVE) as proc:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert proc.poll() is None  # the first one waits for the sink (60 s)
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        code = proc.wait(timeout=30)
        assert code == 130, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() - started < 15  # not the 60 s shutdown timeout


_BLOCKED_SERVE = """
import asyncio, sys, time
from eventbus_core import Dispatcher, Subscription
from eventbus_core.testing import make_event


class BlockingSink:
    # A plugin's mistake: blocking code on the event loop (requests.post without a timeout).
    name = "blocking"

    async def send(self, batch):
        print("sending", flush=True)
        time.sleep(3600)

    async def close(self):
        pass


sub = Subscription(100)
sub.offer([make_event(1)])
d = Dispatcher(sub, [BlockingSink()], batch_size=1, flush_interval=0.01, shutdown_timeout=0.2)
try:
    asyncio.run(d.serve())
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.mark.parametrize("signals", [("SIGTERM",), ("SIGTERM", "SIGINT"), ("SIGINT", "SIGINT")])
def test_a_sink_blocking_the_event_loop_does_not_make_serve_deaf_to_signals(
    signals: tuple[str, ...],
) -> None:
    # The loop's signal handlers never ran while the sink blocked it: SIGTERM and a second
    # Ctrl-C were ignored for as long as it blocked, and only SIGKILL ended the process.
    # Now the stop's bound (0.2 s shutdown + 2 + 2 + 4 for the sink, and 5 s of margin) ends
    # it after a first signal, and a second Ctrl-C one second after that.
    with _serving_child(_BLOCKED_SERVE) as proc:
        for i, name in enumerate(signals):
            if i:
                time.sleep(0.3)
            proc.send_signal(getattr(signal, name))
        started = time.monotonic()
        code = proc.wait(timeout=60)
        elapsed = time.monotonic() - started
        stderr = proc.stderr.read() if proc.stderr else ""
        assert "the event loop is blocked" in stderr, stderr
        if len(signals) == 2 and signals[1] == "SIGINT":
            assert code == 130 and elapsed < 8, (code, elapsed, stderr)
        else:
            assert code == 1 and 10 < elapsed < 30, (code, elapsed, stderr)


@pytest.mark.parametrize("name", ["delivered", "refused"])
def test_a_sink_error_with_a_negative_count_says_so(name: str) -> None:
    # delivered=-1 was read as 0 without a word (trial 103).
    with pytest.raises(ValueError, match=rf"{name}=-1\) must be >= 0"):
        TransientSinkError("down", **{name: -1})  # type: ignore[arg-type]


async def test_a_count_beyond_the_batch_is_ignored_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # delivered=len(batch)+5 was ignored without a word: the plugin author never learnt why
    # the whole batch came again (trial 103).
    sink = RecordingSink(fail_times=3, error=lambda: TransientSinkError("down", delivered=99))
    d = Dispatcher(
        feed(make_events(10)), [sink], batch_size=5, flush_interval=0.01,
        retry=FAST_RETRY, dead_letter=MemoryDeadLetter(),
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="eventbus"):
        stats = await asyncio.wait_for(d.run(), 20)
    assert sorted(p["log_id"] for p in sink.payloads) == list(range(1, 11))
    assert stats.sinks["rec"].sent == 10
    warnings = [r.getMessage() for r in caplog.records if "beyond the batch" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "TransientSinkError(delivered=99) for a batch of 5" in warnings[0]


async def test_a_batch_cut_off_while_it_waits_to_be_retried_says_its_last_failure() -> None:
    # Its dead letter said "before the sink confirmed it (it may have it)", though the sink had
    # refused it and no send was running: the real error was lost (trial 103).
    sink = RecordingSink(fail_times=99, error=lambda: TransientSinkError("destination down"))
    dead = MemoryDeadLetter()
    d = Dispatcher(
        feed(make_events(3)), [sink], batch_size=3, flush_interval=0.01, shutdown_timeout=0.2,
        retry=RetryPolicy(retries=5, base=30.0, cap=30.0), dead_letter=dead,
    )  # fmt: skip
    task = asyncio.create_task(d.run())
    while sink.calls < 1:
        await asyncio.sleep(0.01)
    d.request_stop()
    await asyncio.wait_for(task, 20)
    assert len(dead.records) == 3
    error = dead.records[0]["error"]
    assert "while waiting to retry it; its last attempt failed" in error, error
    assert "destination down" in error and "may have it" not in error


_EXITS_AFTER_STOP = """
import asyncio, sys, threading, time
from eventbus_core import Dispatcher, Subscription
from eventbus_core.testing import make_event
mode = sys.argv[1]
class Stuck:
    name = "stuck"
    async def send(self, batch):
        if mode == "thread":
            await asyncio.to_thread(threading.Event().wait)
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue
    async def close(self):
        pass
sub = Subscription(100)
sub.offer([make_event(i) for i in range(5)])
d = Dispatcher(sub, [Stuck()], batch_size=5, flush_interval=0.01, shutdown_timeout=0.2)
d.start()
time.sleep(0.5)
print("stopped", d.stop(timeout=15), flush=True)
"""


@pytest.mark.parametrize("mode", ["thread", "cancel"])
def test_a_program_whose_started_dispatcher_stopped_exits_whatever_its_sink_left(
    mode: str,
) -> None:
    # stop() returned True, then the program never exited: the executor's thread stuck in a
    # sink's asyncio.to_thread was joined at the interpreter's exit; a task that swallowed its
    # cancellation printed "Task was destroyed but it is pending!" there (trial 104).
    done = run_python(_EXITS_AFTER_STOP, mode, timeout=40)
    assert done.returncode == 0, done.stderr
    assert "stopped True" in done.stdout
    assert "destroyed" not in done.stderr, done.stderr


class _Stubborn(RecordingSink):
    """Its send() and close() never return, and ignore their cancellation."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.sending = threading.Event()

    async def send(self, batch: Any) -> None:
        self.sending.set()
        await _ignoring_cancellation()

    async def close(self) -> None:
        await _ignoring_cancellation()


async def _ignoring_cancellation() -> None:
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue


def test_sinks_whose_close_hangs_are_closed_together_within_the_default_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One after another, three took 4 s each, and stop() returned False after the shutdown
    # timeout and 5 s, saying the event loop did not answer (trial 260). Together: the deadline,
    # 2 s for the sends cut off then, 2 s for the closes and 2 s for their cancellation.
    sinks = [_Stubborn(f"stubborn-{i}") for i in range(3)]
    sub = Subscription(100)
    sub.offer(make_events(5))
    d = Dispatcher(sub, sinks, batch_size=5, flush_interval=0.01, shutdown_timeout=0.2)
    d.start()
    assert all(sink.sending.wait(10) for sink in sinks)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="eventbus"):
        assert d.stop() is True  # the default wait: as long as a stop may take
    took = time.monotonic() - started
    assert took < 0.2 + 2 + 2 + 2 + 1.5, took
    assert "does not answer" not in caplog.text
    closing = [r for r in caplog.records if "did not finish within" in r.getMessage()]
    assert len(closing) == 3


class _CloseRaises(RecordingSink):
    def __init__(self, name: str, raised: BaseException) -> None:
        super().__init__(name)
        self.raised = raised

    async def close(self) -> None:
        raise self.raised


@pytest.mark.parametrize(
    "raised",
    [asyncio.CancelledError("a library's own timeout"), KeyboardInterrupt(), SystemExit(3)],
    ids=["CancelledError", "KeyboardInterrupt", "SystemExit"],
)
async def test_a_sink_whose_close_raises_a_base_exception_does_not_end_the_stop(
    caplog: pytest.LogCaptureFixture, raised: BaseException
) -> None:
    # The stop ended with it: no figures, the other sinks and the dead letter not closed
    # (review 264, trial 263).
    sinks = [_CloseRaises("first", raised), RecordingSink("second")]
    dead = MemoryDeadLetter()
    closed: list[bool] = []

    async def close_dead() -> None:
        closed.append(True)

    dead.close = close_dead  # type: ignore[method-assign]
    sub = Subscription(100)
    sub.offer(make_events(5))
    sub.finish()
    with caplog.at_level(logging.WARNING, logger="eventbus"):
        stats = await asyncio.wait_for(Dispatcher(sub, sinks, dead_letter=dead).run(), 10)
    assert stats.sinks["second"].sent == 5 and closed == [True]
    assert f"closing sink first failed: {type(raised).__name__}" in caplog.text


def test_a_stop_given_a_wait_within_its_bounds_does_not_blame_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # stop(t) with t past the shutdown timeout but short of the stop's bound said the event
    # loop did not answer (review 264).
    sink = _Stubborn("stubborn")
    sub = Subscription(100)
    sub.offer(make_events(5))
    d = Dispatcher(sub, [sink], batch_size=5, flush_interval=0.01, shutdown_timeout=0.2)
    d.start()
    assert sink.sending.wait(10)
    with caplog.at_level(logging.WARNING, logger="eventbus"):
        assert d.stop(1.0) is False
    assert "does not answer" not in caplog.text
    assert "had not stopped within 1.0 s: it may take up to" in caplog.text
    assert d.stop() is True


_ENDS_WITHOUT_STOP = """
import sys
from eventbus_core import Dispatcher, EventBusSettings, create_bus
from eventbus_core.sinks import JsonlSink
from eventbus_core.testing import make_event
bus = create_bus(EventBusSettings(backend="memory"))
d = Dispatcher(bus, [JsonlSink(sys.argv[1])], batch_size=50, flush_interval=0.05)
d.start()
for i in range(300):
    bus.publish(make_event(i))
"""


def test_a_program_that_ends_without_stopping_its_started_dispatcher_loses_nothing(
    tmp_path: Path,
) -> None:
    # Neither bus.stop() nor dispatcher.stop(): the events the sink had not written were lost
    # without a word (0 or 100 of 300 lines, trial 106).
    out = tmp_path / "out.jsonl"
    done = run_python(_ENDS_WITHOUT_STOP, str(out), timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(out.read_text().splitlines()) == 300


def test_a_stopped_memory_bus_ends_the_dispatcher_even_behind_a_sink_that_takes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # bus.stop(); dispatcher.join(timeout) never returned once the stuck sink's queue was full:
    # its lane never read the end of its subscription, and run() waited for it (trial 116).
    import time

    from eventbus_core import EventBusSettings, create_bus
    from eventbus_core.dispatch import _stuck

    monkeypatch.setattr(_stuck, "HUNG_AFTER", 0.0)  # a minute, else: the shutdown timeout here

    bus = create_bus(EventBusSettings(backend="memory"))
    stuck, fine = GatedSink("stuck"), RecordingSink("fine")
    dl = MemoryDeadLetter()
    d = Dispatcher(
        bus, [stuck, fine], batch_size=10, queue_size=20, shutdown_timeout=0.5, dead_letter=dl
    )
    d.start()
    for i in range(200):
        bus.publish(make_event(i))
    bus.stop()
    began = time.monotonic()
    assert d.join(timeout=15), "the dispatcher did not end after its bus stopped"
    assert time.monotonic() - began < 8  # patience 0.5 s + the stop's 0.5 s + closing
    stats = d.stats()
    assert stats.sinks["fine"].sent == 200  # the sink that works got everything
    assert stats.sinks["stuck"].dead_lettered == 200  # the stuck one's share: dead-lettered
    balanced(stats)


class _BusyEveryOtherTime(RecordingSink):
    """Answers every other send with a 503 and a Retry-After longer than the shutdown timeout."""

    async def send(self, batch: Any) -> None:
        self.calls += 1
        if self.calls % 2:
            raise TransientSinkError("503 busy", retry_after=0.5)
        self.batches.append(list(batch))


@pytest.mark.parametrize("queue_size", [5, 100])
@pytest.mark.parametrize("sink", ["slow", "busy", "long-first-batch"])
async def test_a_sink_that_still_drains_a_stopped_memory_bus_is_not_cut_off(
    sink: str, queue_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only a drain with no progress for the shutdown timeout ends early: a slow sink, or one
    # waiting out a Retry-After longer than that timeout, gets everything, be it still in the
    # subscription (queue 5) or already in its queue (100) (trial 118: 100 of 2,500 sent); so
    # does one whose first batch alone takes longer than that timeout, within HUNG_AFTER
    # (trial 120: helicone's first batch of 100 POSTs, 15 s).
    from eventbus_core import EventBusSettings, create_bus
    from eventbus_core.dispatch import _stuck

    monkeypatch.setattr(_stuck, "HUNG_AFTER", 2.0)
    bus = create_bus(EventBusSettings(backend="memory"))
    delay = 0.6 if sink == "long-first-batch" else 0.05
    target = SlowSink("s", delay=delay) if sink != "busy" else _BusyEveryOtherTime("s")
    d = Dispatcher(
        bus,
        [target],
        batch_size=5,
        queue_size=queue_size,
        shutdown_timeout=0.2,
        retry=RetryPolicy(retries=2, base=0.01, retry_after_max=1.0),
    )
    task = asyncio.create_task(d.run())
    await asyncio.sleep(0.05)
    n = {"busy": 40, "slow": 100, "long-first-batch": 10}[sink]
    for i in range(n):
        bus.publish(make_event(i))
    bus.stop()
    stats = await asyncio.wait_for(task, 60)
    assert stats.sinks["s"].sent == n
    assert stats.sinks["s"].dead_lettered == 0


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("poll_interval", 0),
        ("poll_interval", -1),
        ("poll_interval", float("nan")),
        ("poll_interval", 30),  # stop() returned False, the thread left running (trial 121)
        ("flush_interval", -1),
        ("flush_interval", float("nan")),
        ("shutdown_timeout", float("inf")),
        ("stats_interval", float("nan")),
        ("stall_timeout", float("inf")),
        ("shutdown_timeout", 1e10),  # finite, yet past what a thread can wait (trial 118)
        ("shutdown_timeout", 9223372036),  # under TIMEOUT_MAX, past it with stop()'s margin
    ],
)
def test_a_hand_built_dispatcher_refuses_seconds_the_settings_refuse(
    argument: str, value: float
) -> None:
    # Accepted from code only: a poll of 0 or nan spun a core while idle, and an infinite
    # shutdown_timeout made stop() raise OverflowError (trial 116).
    with pytest.raises(ValueError, match=argument):
        Dispatcher(ListSource([]), [RecordingSink()], **{argument: value})


@pytest.mark.parametrize("value", [0, -1, -0.5])
def test_a_wait_that_must_be_positive_says_so_whatever_the_value(value: float) -> None:
    # -1 was told ">= 0", then 0 "more than 0" (trial 190): one message for both.
    for argument in ("flush_interval", "poll_interval"):
        with pytest.raises(ValueError, match=argument) as refused:
            Dispatcher(ListSource([]), [RecordingSink()], **{argument: value})
        assert str(refused.value) == (
            f"{argument} must be a finite number of seconds > 0, got {value!r}"
        )


@pytest.mark.parametrize("field", ["base", "cap", "retry_after_max"])
def test_a_retry_policy_refuses_seconds_that_are_not_finite(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RetryPolicy(**{field: float("nan")})


@pytest.mark.parametrize(
    ("argument", "value"),
    [("batch_size", 1.5), ("batch_size", True), ("batch_size", 0), ("queue_size", 10.0)],
)
def test_a_hand_built_dispatcher_refuses_counts_that_are_not_ints(
    argument: str, value: object
) -> None:
    # batch_size=1.5 was accepted; every read then failed with a TypeError, for ever, and
    # nothing was delivered (trial 134).
    with pytest.raises(ValueError, match=f"{argument} must be an int"):
        Dispatcher(ListSource([]), [RecordingSink()], **{argument: value})


@pytest.mark.parametrize("value", [1.5, True, -1, "2"])
def test_a_retry_policy_refuses_retries_that_are_not_a_count(value: object) -> None:
    with pytest.raises(ValueError, match="retries must be an int >= 0"):
        RetryPolicy(retries=value)  # type: ignore[arg-type]


def _started_one_by_one(sink: Any, *, shutdown_timeout: float) -> Dispatcher:
    """A started dispatcher sending 5 events one at a time to `sink`, 0.2 s into its run."""
    sub = Subscription(100)
    sub.offer([make_event(i) for i in range(5)])
    d = Dispatcher(
        sub, [sink], batch_size=1, flush_interval=0.01, shutdown_timeout=shutdown_timeout
    )
    d.start()
    time.sleep(0.2)
    return d


def test_a_started_dispatcher_that_cannot_stop_says_so(caplog: pytest.LogCaptureFixture) -> None:
    # A sink blocking the loop: stop() returned False after its wait, with no word, and the
    # figures read then did not add up (trial 124).
    class Blocking:
        name = "blocking"

        async def send(self, batch: Any) -> None:
            time.sleep(2.0)  # the mistake: blocking code on the event loop

        async def close(self) -> None:
            pass

    d = _started_one_by_one(Blocking(), shutdown_timeout=0.1)  # its first send() blocks the loop
    with caplog.at_level(logging.WARNING, logger="eventbus"):
        assert d.stop(timeout=0.5) is False
    assert "dispatcher did not stop within 0.5 s: its event loop does not answer" in caplog.text
    assert d.stop(timeout=30)  # it ends once the sink lets the loop go


_STOP_THAT_GIVES_UP = """
import time
from eventbus_core import Dispatcher, Subscription
from eventbus_core.testing import make_event


class Blocking:
    name = "blocking"

    async def send(self, batch):
        time.sleep(30)  # blocks the loop

    async def close(self):
        pass


sub = Subscription(100)
sub.offer([make_event(i) for i in range(5)])
d = Dispatcher(sub, [Blocking()], batch_size=1, flush_interval=0.01, shutdown_timeout=0.1)
d.start()
time.sleep(0.2)
print("stopped", d.stop(timeout=0.5), flush=True)
"""


def test_an_exit_after_a_stop_that_gave_up_does_not_wait_again() -> None:
    # The exit's own stop waited as long again for a loop that did not answer, and said so a
    # second time (trial 128).
    started = time.monotonic()
    done = run_python(_STOP_THAT_GIVES_UP, timeout=60)
    took = time.monotonic() - started
    assert "stopped False" in done.stdout, done.stderr
    assert done.stderr.count("dispatcher did not stop within") == 1, done.stderr
    assert took < 4.5, took  # 0.5 s of stop, the start-up; not another 5.1 s of stop


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [
        ("retry", 3, "retry must be a RetryPolicy"),
        ("dead_letter", "dead.jsonl", "dead_letter must have async write"),
        ("dead_letter", JsonlDeadLetter, "dead_letter must be an instance"),  # trial 159
        ("transform", "llm", "transform must be callable"),
        ("redactor", False, "redactor must be a Redactor"),
    ],
)
def test_a_hand_built_dispatcher_refuses_parts_of_the_wrong_kind(
    argument: str, value: object, message: str
) -> None:
    # retry=3 killed each sink's worker at its first failure without a word, and the queue
    # was dead-lettered at stop() with a false reason; a str dead_letter crashed the stop
    # (trial 157).
    with pytest.raises(TypeError, match=message):
        Dispatcher(ListSource([]), [RecordingSink()], **{argument: value})


@pytest.mark.parametrize("path", ["", "."])
def test_a_dead_letter_file_that_cannot_be_one_is_refused_when_built(path: str) -> None:
    with pytest.raises(ValueError, match=r"needs a path|is a directory"):
        JsonlDeadLetter(path)


def test_a_dispatcher_runs_once(caplog: pytest.LogCaptureFixture) -> None:
    # A second run() read from the closed sources without a pause, logging tens of thousands
    # of retries a second, and delivered nothing (trial 157).
    sub = Subscription(10)
    sub.offer(make_events(3))
    sub.finish()  # exhausted once read: run() returns
    d = Dispatcher(sub, [RecordingSink()], flush_interval=0.01)
    asyncio.run(d.run())
    with pytest.raises(RuntimeError, match="has run already"):
        asyncio.run(d.run())
    started = Dispatcher(Subscription(10), [RecordingSink()], flush_interval=0.01)
    started.start()
    with pytest.raises(RuntimeError, match="already started"):
        started.start()
    assert started.stop(10)
    with pytest.raises(RuntimeError, match="has run already"):
        started.start()

    async def while_it_runs() -> None:
        running = Dispatcher(Subscription(10), [RecordingSink()], flush_interval=0.01)
        task = asyncio.create_task(running.run())
        await asyncio.sleep(0.05)
        # "has run already, and closed its sinks" was said of one still running (trial 159).
        with pytest.raises(RuntimeError, match="runs already"):
            running.start()
        running.request_stop()
        await task

    asyncio.run(while_it_runs())


def test_a_stop_shorter_than_the_shutdown_timeout_says_so_not_that_the_loop_hangs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # stop(1.0) with a sink still sending, 9 s before the shutdown timeout ran out, was told
    # that the event loop does not answer (trial 157).
    gate = asyncio.Event()

    class Waiting:
        name = "waiting"

        async def send(self, batch: Any) -> None:
            await gate.wait()  # awaits: the loop stays free

        async def close(self) -> None:
            pass

    d = _started_one_by_one(Waiting(), shutdown_timeout=5.0)
    with caplog.at_level(logging.WARNING, logger="eventbus"):
        assert d.stop(timeout=0.3) is False
    assert "had not stopped within 0.3 s: it may take up to" in caplog.text
    assert "does not answer" not in caplog.text
    assert d.stop(timeout=30)


def test_a_dispatcher_in_a_forked_child_counts_what_it_cannot_read(tmp_path: Path) -> None:
    # Started in the parent, its thread is not in a child: the child's events on a memory bus
    # waited in its subscriptions and vanished with every figure at 0 (trial 157).
    from eventbus_memory import InMemoryEventBus

    bus = InMemoryEventBus(1000)
    sink = RecordingSink()
    d = Dispatcher(bus, [sink], flush_interval=0.01)
    d.start()
    report = tmp_path / "child.json"
    pid = os.fork()
    if pid == 0:  # the child
        said = "the child failed"
        try:
            for i in range(5):
                bus.publish(make_event(i, request_id=f"child-{i}"))
            assert bus.flush(5)
            stopped = d.stop(5)
            said = f"{stopped} {d.stats().source_dropped}"
            with pytest.raises(RuntimeError, match="does not run in a forked child"):
                d.start()
        except BaseException as exc:
            said = repr(exc)
        finally:
            report.write_text(said)
            os._exit(0)
    os.waitpid(pid, 0)
    assert report.read_text() == "True 5"
    bus.publish(make_event(9, request_id="parent"))  # the parent's dispatcher runs on
    assert bus.flush(5)
    deadline = time.monotonic() + 10
    while not sink.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    assert d.stop(10)
    assert [p["request_id"] for batch in sink.batches for p in batch] == ["parent"]
    bus.stop()


def test_a_cancelled_run_stops_as_on_a_stop_request_and_loses_nothing_uncounted() -> None:
    # asyncio.wait_for, a task group or Ctrl-C under asyncio.run cancel run(): what it had read
    # was neither sent, dead-lettered nor counted, and its sinks were never closed (trial 159).
    gate = asyncio.Event()

    class Slow(RecordingSink):
        async def send(self, batch: Any) -> None:
            await gate.wait()
            await super().send(batch)

    sink = Slow()
    sub = Subscription(100)
    sub.offer(make_events(50))
    dead = MemoryDeadLetter()
    d = Dispatcher(
        sub, [sink], batch_size=10, flush_interval=0.01, shutdown_timeout=0.5, dead_letter=dead
    )

    async def main() -> None:
        task = asyncio.create_task(d.run())
        await asyncio.sleep(0.3)  # read, and the first send waits at the gate
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    figures = d.stats().sinks["rec"]
    assert sink.closed
    assert figures.received == 50
    assert figures.sent + figures.dead_lettered + figures.dropped == 50, figures
    assert len(dead.records) == figures.dead_lettered


def _publish_in_a_child(bus: Any, log_path: str) -> None:
    """A multiprocessing child's work: publish, flush, return without stopping anything."""
    logging.getLogger("eventbus").addHandler(logging.FileHandler(log_path))
    for i in range(5):
        bus.publish(make_event(i, request_id=f"child-{i}"))
    assert bus.flush(5)


@pytest.mark.parametrize("shared", [False, True])
def test_a_multiprocessing_child_counts_what_the_parents_dispatcher_cannot_read(
    tmp_path: Path, shared: bool
) -> None:
    # multiprocessing's children end without atexit: their events vanished uncounted (trial
    # 159). On a bus shared between processes the parent's dispatcher reads them: nothing to
    # say (the redis LIST backend's child warned of events the parent delivered).
    import multiprocessing

    from eventbus_memory import InMemoryEventBus

    class Shared(InMemoryEventBus):
        cross_process = True  # stands in for a shared backend's bus

    bus = (Shared if shared else InMemoryEventBus)(1000)
    d = Dispatcher(bus, [RecordingSink()], flush_interval=0.01)
    d.start()
    log_path = str(tmp_path / "child.log")
    child = multiprocessing.get_context("fork").Process(
        target=_publish_in_a_child, args=(bus, log_path)
    )
    child.start()
    child.join(30)
    assert child.exitcode == 0
    said = Path(log_path).read_text()
    if shared:
        assert "never read" not in said, said
    else:
        assert "5 event(s) published here were never read" in said, said
    assert d.stop(10)
    bus.stop()


def test_a_run_racing_a_start_is_refused_not_run_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    # start() returned, then its thread died of "runs already" as a run() in another thread
    # had won (trial 162): start() takes the run at once, before its thread gets going.
    from eventbus_core.dispatch import _dispatcher

    real = _dispatcher.run_bounded

    def slow_to_start(coroutine: Any) -> Any:
        time.sleep(0.3)  # a thread that the scheduler runs late
        return real(coroutine)

    monkeypatch.setattr(_dispatcher, "run_bounded", slow_to_start)
    d = Dispatcher(Subscription(10), [RecordingSink()], flush_interval=0.01)
    d.start()
    with pytest.raises(RuntimeError, match="runs already"):
        asyncio.run(asyncio.wait_for(d.run(), 2))
    assert d._thread is not None and d._thread.is_alive()
    assert d.stop(10)


class _OneByOne(RecordingSink):
    """One request per event: the `hang_at`th never answers; says how far it got when the
    stop cuts it off, as helicone does (`mark_delivered`)."""

    def __init__(self, hang_at: int, *, own_cancel: bool = False) -> None:
        super().__init__("one")
        self.hang_at, self.own_cancel = hang_at, own_cancel
        self.stored: list[int] = []

    async def send(self, batch: Sequence[dict[str, Any]]) -> None:
        from eventbus_core import mark_delivered

        done = 0
        try:
            for done, payload in enumerate(batch):
                if done == self.hang_at and payload["log_id"] not in self.stored:
                    if self.own_cancel:  # a library's own timeout, not the dispatcher's stop
                        self.hang_at = -1
                        raise asyncio.CancelledError("library timeout")
                    await asyncio.Event().wait()
                self.stored.append(payload["log_id"])
        except asyncio.CancelledError as cancelled:
            mark_delivered(cancelled, done)
            raise


async def test_a_send_cut_off_by_the_stop_on_a_memory_bus_settles_what_it_stored() -> None:
    # Those stored count as sent; only the rest is dead-lettered, as not confirmed (review 237:
    # only the Redis path was tested).
    sink, dead = _OneByOne(hang_at=6), MemoryDeadLetter()
    d = Dispatcher(feed(make_events(10)), [sink], batch_size=10, flush_interval=0.01,
                   shutdown_timeout=0.2, dead_letter=dead)  # fmt: skip
    task = asyncio.create_task(d.run())
    while len(sink.stored) < 6:
        await asyncio.sleep(0.005)
    d.request_stop()
    stats = await asyncio.wait_for(task, 20)
    s = stats.sinks["one"]
    assert (s.sent, s.dead_lettered, s.requeued) == (6, 4, 0)
    assert [r["log_id"] for r in dead.records] == [7, 8, 9, 10]
    assert "before the sink confirmed it" in dead.records[0]["error"]
    balanced(stats)


async def test_a_cancellation_the_sink_raises_itself_retries_only_what_it_had_not_stored() -> None:
    # Counted a failed attempt (the dispatcher did not cancel it), it lost the count the sink
    # marked: the six stored were sent again (review 237).
    sink = _OneByOne(hang_at=6, own_cancel=True)
    d = Dispatcher(feed(make_events(10)), [sink], batch_size=10, flush_interval=0.01,
                   retry=FAST_RETRY)  # fmt: skip
    stats = await asyncio.wait_for(d.run(), 20)
    assert sink.stored == list(range(1, 11))  # each once
    assert (stats.sinks["one"].sent, stats.sinks["one"].retried) == (10, 4)


@pytest.mark.parametrize("count", [-1, "6", 2.0, None])
def test_mark_delivered_says_and_ignores_what_is_no_count(
    count: object, caplog: pytest.LogCaptureFixture
) -> None:
    # Read as 0 without a word (review 237); raising instead replaced the stop's cancellation
    # with the sink's own error, and the batch was retried past the deadline (trial 241).
    from eventbus_core import mark_delivered

    cancelled = asyncio.CancelledError()
    mark_delivered(cancelled, count)  # type: ignore[arg-type]
    assert not hasattr(cancelled, "delivered")
    assert f"mark_delivered() was given {count!r}" in caplog.text


async def test_a_cut_off_send_that_marks_more_than_its_batch_is_warned_of(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Ignored without a word, unlike SinkError(delivered=...) (trial 241).
    from eventbus_core import mark_delivered

    class Overcounting(RecordingSink):
        async def send(self, batch: Sequence[dict[str, Any]]) -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError as cancelled:
                mark_delivered(cancelled, 99)
                raise

    sink, dead = Overcounting("over"), MemoryDeadLetter()
    d = Dispatcher(feed(make_events(5)), [sink], batch_size=5, flush_interval=0.01,
                   shutdown_timeout=0.2, dead_letter=dead)  # fmt: skip
    task = asyncio.create_task(d.run())
    while d.stats().sinks["over"].received < 5:
        await asyncio.sleep(0.005)
    d.request_stop()
    stats = await asyncio.wait_for(task, 20)
    assert (stats.sinks["over"].sent, stats.sinks["over"].dead_lettered) == (0, 5)
    assert "marked 99 payloads stored for a batch of 5" in caplog.text


async def test_unconfirmed_acknowledgements_at_stop_are_counted_in_deliveries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # "11 acknowledgement(s) not confirmed" were 110 deliveries in batches (trial 244).
    release = threading.Event()

    class FrozenAcks(ListSource):
        def ack(self, tokens: Sequence[Any]) -> None:
            release.wait(3)  # a source whose server froze (for longer than the close waits)
            super().ack(tokens)

    source = FrozenAcks(make_events(30))
    sink = RecordingSink("r")
    d = Dispatcher(source, [sink], batch_size=10, flush_interval=0.01, shutdown_timeout=0.3)
    task = asyncio.create_task(d.run())
    try:
        await sink.wait_for(30)
        d.request_stop()
        with caplog.at_level(logging.WARNING):
            await task
    finally:
        release.set()
    said = [r.getMessage() for r in caplog.records if "not confirmed" in r.getMessage()]
    assert len(said) == 1, said
    # Batches of 10, each acknowledged in one call: the count is of deliveries.
    counted = int(said[0].split("acknowledgements of ")[1].split(" deliveries")[0])
    assert counted in (10, 20, 30), said
