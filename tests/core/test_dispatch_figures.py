"""The dispatcher's figures behind the metrics and probes: failures by type, partial
delivery (only what a sink did not store is retried), failures since the last send, and
redeliveries."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from eventbus_core import (
    Delivery,
    Dispatcher,
    DispatcherStats,
    MemoryDeadLetter,
    PermanentSinkError,
    RetryPolicy,
    Subscription,
    TransientSinkError,
    classify_status,
)
from tests.core.conftest_dispatch import FAST_RETRY, ListSource, RecordingSink, make_events


def feed(n: int) -> Subscription:
    sub = Subscription(10_000)
    sub.offer(make_events(n))
    sub.finish()
    return sub


async def run_until_sent(d: Dispatcher, sink: RecordingSink, n: int) -> DispatcherStats:
    """Run `d` until `sink` holds `n` events, then stop it; its final figures."""
    running = asyncio.create_task(d.run())
    await sink.wait_for(n)
    d.request_stop()
    return await running


class StoresThenFails(RecordingSink):
    """Stores `keep` events of its first call, then fails with `delivered=keep`."""

    def __init__(self, keep: int, error: type[Exception]) -> None:
        super().__init__("partial")
        self.keep = keep
        self.kind = error
        self.seen: list[list[int]] = []

    async def send(self, batch: Sequence[dict[str, Any]]) -> None:
        self.calls += 1
        self.seen.append([p["log_id"] for p in batch])
        if self.calls == 1:
            self.batches.append(list(batch[: self.keep]))
            raise self.kind("HTTP 503", delivered=self.keep)  # type: ignore[call-arg]
        self.batches.append(list(batch))


async def test_a_partly_stored_batch_is_retried_without_what_was_stored() -> None:
    sink = StoresThenFails(3, TransientSinkError)
    d = Dispatcher(feed(10), [sink], batch_size=10, flush_interval=0.01, retry=FAST_RETRY)
    stats = await d.run()
    assert sink.seen == [list(range(1, 11)), list(range(4, 11))]
    assert sorted(p["log_id"] for p in sink.payloads) == list(range(1, 11))  # each once
    s = stats.sinks["partial"]
    assert (s.sent, s.retried, s.dead_lettered) == (10, 7, 0)


async def test_a_permanent_failure_dead_letters_only_what_was_not_stored() -> None:
    sink = StoresThenFails(4, PermanentSinkError)
    dl = MemoryDeadLetter()
    d = Dispatcher(feed(10), [sink], batch_size=10, flush_interval=0.01, dead_letter=dl)
    stats = await d.run()
    assert [r["log_id"] for r in dl.records] == list(range(5, 11))
    s = stats.sinks["partial"]
    assert (s.sent, s.dead_lettered) == (4, 6)
    assert s.received == s.sent + s.dead_lettered + s.dropped + s.requeued


@pytest.mark.parametrize("error", [TransientSinkError, PermanentSinkError])
async def test_a_batch_stored_whole_despite_the_error_counts_as_sent(
    error: type[Exception],
) -> None:
    # delivered=len(batch) was ignored: the whole batch was sent again (transient), or
    # dead-lettered although stored (permanent), against writing-a-sink.md (an outside trial).
    sink = StoresThenFails(10, error)
    dl = MemoryDeadLetter()
    d = Dispatcher(
        feed(10), [sink], batch_size=10, flush_interval=0.01, retry=FAST_RETRY, dead_letter=dl
    )
    stats = await d.run()
    assert sink.seen == [list(range(1, 11))] and dl.records == []
    s = stats.sinks["partial"]
    assert (s.sent, s.retried, s.dead_lettered) == (10, 0, 0)


async def test_failures_are_counted_by_error_type() -> None:
    errors = iter(
        [
            classify_status(503, retry_after=0.0),
            classify_status(429, retry_after=0.0),
            TimeoutError("slow"),
            classify_status(503, retry_after=0.0),
        ]
    )

    def error() -> Exception:
        found = next(errors)
        assert found is not None
        return found

    sink = RecordingSink(fail_times=4, error=error)
    d = Dispatcher(
        feed(5), [sink], batch_size=10, flush_interval=0.01, retry=RetryPolicy(retries=5, base=0)
    )
    stats = await d.run()
    s = stats.sinks["rec"]
    assert s.failed_by_type == {"503": 2, "429": 1, "TimeoutError": 1}
    assert s.failures == 4 and s.sent == 5


async def test_failed_since_sent_counts_give_ups_until_a_batch_goes_through() -> None:
    outcomes = iter([True, True, False])  # two batches refused, then the sink recovers

    class Flaky(RecordingSink):
        async def send(self, batch: Sequence[dict[str, Any]]) -> None:
            if next(outcomes, False):
                raise PermanentSinkError("HTTP 400")
            await super().send(batch)

    sink = Flaky("flaky")
    source = ListSource(make_events(15))
    d = Dispatcher(
        source, [sink], batch_size=5, flush_interval=0.01, dead_letter=MemoryDeadLetter()
    )
    seen: list[int] = []
    original = sink.send

    async def watch(batch: Sequence[dict[str, Any]]) -> None:
        seen.append(d.stats().sinks["flaky"].failed_since_sent)
        await original(batch)

    sink.send = watch  # type: ignore[method-assign]
    stats = await run_until_sent(d, sink, 5)
    assert seen == [0, 5, 10]  # before each attempt: the give-ups so far
    assert stats.sinks["flaky"].failed_since_sent == 0  # reset by the successful batch


async def test_redeliveries_are_counted_per_lane() -> None:
    class Redelivering(ListSource):
        def read(self, max_items: int, timeout: float) -> list[Delivery]:
            return [
                Delivery(d.event, d.token, attempts=2 if d.token % 2 else 1)
                for d in super().read(max_items, timeout)
            ]

    source = Redelivering(make_events(10))
    sink = RecordingSink()
    stats = await run_until_sent(
        Dispatcher(source, [sink], batch_size=10, flush_interval=0.01), sink, 10
    )
    assert stats.lanes["shared"]["redelivered"] == 5
    assert stats.lanes["shared"]["read_errors"] == 0


async def test_a_source_figure_named_like_the_lanes_own_comes_beside_it() -> None:
    # A Redis consumer's `acked` (what Redis confirmed) used to replace the lane's `acked` (what
    # the lane acknowledged) in the lane's figures; both are kept now.
    class Figured(ListSource):
        def figures(self) -> dict[str, int]:
            return {"acked": 3, "claimed": 1}

    source = Figured(make_events(10))
    sink = RecordingSink()
    stats = await run_until_sent(
        Dispatcher(source, [sink], batch_size=10, flush_interval=0.01), sink, 10
    )
    lane = stats.lanes["shared"]
    assert (lane["acked"], lane["source_acked"], lane["claimed"]) == (10, 3, 1)


@pytest.mark.parametrize("error", [RuntimeError("no"), GeneratorExit()])
def test_a_sinks_failing_figures_fail_nothing(error: BaseException) -> None:
    # Informative only: a plugin's bug there, a BaseException included (review 202), must fail
    # neither the dispatcher's stats nor a replay.
    from eventbus_core._sink import sink_figures

    class Failing(RecordingSink):
        def figures(self) -> dict[str, int]:
            raise error

    assert sink_figures(Failing()) == {}
