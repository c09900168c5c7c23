"""`utc_now_iso()`: what `datetime.now(UTC).isoformat()` writes, read from the same clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from eventbus_core._utc import iso_from_ns, utc_now_iso


def _reference(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=rest // 1000)
    return moment.isoformat()


def test_every_instant_is_written_as_isoformat_writes_it() -> None:
    rng = random.Random(5)
    instants = [0, 999, 1_000, 999_999_999, 1_000_000_000, 1_764_000_000_000_000_000]
    instants += [rng.randint(0, 4_102_444_800 * 10**9) for _ in range(3_000)]  # to 2100
    # Whole seconds and whole microseconds, where isoformat() leaves the fraction out.
    instants += [rng.randint(0, 4_102_444_800) * 10**9 + rng.randint(0, 999) for _ in range(300)]
    # Neighbours: the cached second must not leak into the next one, nor back.
    second = rng.randint(1_700_000_000, 1_800_000_000) * 10**9
    instants += [second - 1, second, second + 1, second - 1, second + 999_999_999]
    for ns in instants:
        assert iso_from_ns(ns) == _reference(ns), ns


def test_now_is_read_from_the_clock_datetime_reads() -> None:
    before = datetime.now(UTC)
    stamped = datetime.fromisoformat(utc_now_iso())
    after = datetime.now(UTC)
    assert before <= stamped <= after
