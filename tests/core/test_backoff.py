"""`eventbus_core.Backoff`: the one retry-delay policy (backend loops, dispatcher retries)."""

from __future__ import annotations

import pytest

from eventbus_core import Backoff, RetryPolicy, backoff_delay


def test_the_delay_doubles_from_base_to_cap() -> None:
    delays = [backoff_delay(n, 0.1, 0.8, jitter=False) for n in range(6)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 0.8, 0.8]
    assert backoff_delay(10_000, 0.1, 0.8, jitter=False) == 0.8  # no float overflow
    assert backoff_delay(-1, 0.1, 0.8, jitter=False) == 0.1


def test_jitter_stays_between_half_and_all_of_the_delay() -> None:
    for n in range(8):
        ceiling = backoff_delay(n, 0.1, 0.8, jitter=False)
        assert all(ceiling / 2 <= backoff_delay(n, 0.1, 0.8) <= ceiling for _ in range(50))


def test_next_counts_failures_and_reset_starts_over() -> None:
    backoff = Backoff(base=0.1, cap=0.4, jitter=False)
    assert [backoff.next() for _ in range(4)] == [0.1, 0.2, 0.4, 0.4]
    assert backoff.failures == 4
    backoff.reset()
    assert backoff.next() == 0.1
    with pytest.raises(ValueError, match="base"):
        Backoff(base=0, cap=1)
    with pytest.raises(ValueError, match="cap"):
        Backoff(base=1, cap=0.5)


def test_the_dispatchers_retry_policy_uses_the_same_delays() -> None:
    policy = RetryPolicy(retries=5, base=1.0, cap=4.0, jitter=False)
    assert [policy.delay(r) for r in range(1, 6)] == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert RetryPolicy(base=0.0, jitter=False).delay(3) == 0.0  # base 0: no wait, as before
    assert policy.delay(1, retry_after=9.0) == 9.0  # Retry-After replaces the backoff
