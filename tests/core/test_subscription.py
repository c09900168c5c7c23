"""Subscription: the consumer end, used from threads and event loops."""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

import pytest

from eventbus_core import Subscription, SubscriptionClosed
from eventbus_core.testing import make_event


def test_offer_respects_capacity_and_counts() -> None:
    sub = Subscription(3)
    assert sub.offer([make_event(i) for i in range(5)]) == 3
    assert (sub.space(), sub.qsize(), sub.delivered) == (0, 3, 3)
    sub.count_dropped(2)
    assert sub.stats().dropped == 2


def test_blocking_get_wakes_when_a_batch_arrives() -> None:
    sub = Subscription(10)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(sub.get(timeout=10).request_id))
    reader.start()
    sub.offer([make_event(7)])
    reader.join(10)
    assert got == ["req-7"]


def test_get_times_out_and_closed_raises() -> None:
    sub = Subscription(10)
    with pytest.raises(TimeoutError):
        sub.get(timeout=0.01)
    sub.offer([make_event(1)])
    sub.finish()
    assert sub.get().request_id == "req-1"  # buffered events survive the end
    with pytest.raises(SubscriptionClosed):
        sub.get()
    assert sub.offer([make_event(2)]) == 0


def test_batches_end_when_exhausted() -> None:
    sub = Subscription(100)
    sub.offer([make_event(i) for i in range(10)])
    sub.finish()
    batches = list(sub.batches(max_items=4))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sub.exhausted


async def test_async_waiter_is_woken_from_another_thread() -> None:
    sub = Subscription(10)
    loop = asyncio.get_running_loop()
    waiter = asyncio.ensure_future(sub.aget(timeout=10))
    await asyncio.sleep(0)  # let it register as waiting
    await loop.run_in_executor(None, sub.offer, [make_event(3)])
    assert (await waiter).request_id == "req-3"
    batch_task = asyncio.ensure_future(sub.aget_batch(timeout=10))
    await asyncio.sleep(0)
    await loop.run_in_executor(None, sub.finish)
    assert await batch_task == []
    with pytest.raises(SubscriptionClosed):
        await sub.aget()


async def test_aget_times_out() -> None:
    with pytest.raises(TimeoutError):
        await Subscription(1).aget(timeout=0.01)


async def test_ended_async_waits_leave_no_waiter_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 8 item 10: each timed-out or cancelled wait used to stay registered, and the next
    # offer() then scheduled one call_soon_threadsafe per stale wait.
    sub = Subscription(10)
    loop = asyncio.get_running_loop()
    timed_out = await asyncio.gather(
        *(sub.aget_batch(timeout=0.01) for _ in range(1_000)),
        *(sub.aget(timeout=0.01) for _ in range(1_000)),
        return_exceptions=True,
    )
    assert timed_out[:1_000] == [[]] * 1_000
    assert all(isinstance(r, TimeoutError) for r in timed_out[1_000:])
    assert await sub.aget_batch(timeout=0) == []  # an expired wait registers nothing at all
    cancelled = [asyncio.ensure_future(sub.aget()) for _ in range(100)]
    await asyncio.sleep(0)  # let them register as waiting
    for task in cancelled:
        task.cancel()
    await asyncio.gather(*cancelled, return_exceptions=True)
    assert sub._async_waiters == []

    wakes: list[str] = []
    real = loop.call_soon_threadsafe

    def spy(callback: Any, *args: Any, **kwargs: Any) -> Any:
        wakes.append(getattr(callback, "__name__", ""))
        return real(callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", spy)
    await loop.run_in_executor(None, sub.offer, [make_event(1)])
    assert "_wake_future" not in wakes  # nobody waits, so nobody is woken
    assert (await sub.aget(timeout=1)).request_id == "req-1"


def test_close_calls_back_once_and_discards() -> None:
    closed: list[Subscription] = []
    sub = Subscription(5, name="mine", on_close=closed.append)
    sub.offer([make_event(1)])
    sub.close()
    sub.close()
    assert closed == [sub] and sub.exhausted
    assert "mine" in repr(sub)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Subscription(0)


@pytest.mark.parametrize(
    ("call", "error", "said"),
    [
        (lambda s: s.batches(0), ValueError, "batches() max_items must be at least 1"),
        (lambda s: s.batches(-3), ValueError, "batches() max_items must be at least 1"),
        (lambda s: s.get_batch(0), ValueError, "get_batch() max_items must be at least 1"),
        (lambda s: s.get_batch(True), TypeError, "get_batch() max_items must be a whole number"),
        (lambda s: s.get_batch(2.5), TypeError, "get_batch() max_items must be a whole number"),
        (lambda s: s.get(float("nan")), ValueError, "get() timeout must be a number of seconds"),
        (lambda s: s.get("1"), TypeError, "get() timeout must be a number of seconds"),
        (
            lambda s: s.get_batch(5, float("nan")),
            ValueError,
            "get_batch() timeout must be a number of seconds",
        ),
    ],
)
def test_waits_and_batch_sizes_that_cannot_be_kept_are_refused(
    call: Any, error: type[Exception], said: str
) -> None:
    # max_items 0 spun a core for ever in batches(), and get_batch(0) returned nothing with
    # events buffered; a NaN timeout busy-waited a core (trial 261).
    sub = Subscription(10)
    with pytest.raises(error, match=re.escape(said)):
        call(sub)


async def test_async_waits_that_cannot_be_kept_are_refused() -> None:
    sub = Subscription(10)
    with pytest.raises(ValueError, match=r"aget\(\) timeout"):
        await sub.aget(float("nan"))
    with pytest.raises(ValueError, match=r"aget_batch\(\) max_items"):
        await sub.aget_batch(0)


@pytest.mark.parametrize("timeout", [float("inf"), 1e10, 10**400])
def test_a_timeout_longer_than_any_wait_waits_without_a_limit_as_none(timeout: float) -> None:
    # get(inf) and get(1e10) raised OverflowError (trial 261, review 264).
    sub = Subscription(10)
    threading.Timer(0.05, lambda: sub.offer([make_event(1)])).start()
    assert sub.get(timeout).request_id == make_event(1).request_id
