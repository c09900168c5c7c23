"""Retry policy of the dispatcher: capped exponential backoff with jitter, and error classes.

Which failures are worth retrying:

- a sink raising `PermanentSinkError` is never retried (the batch is dead-lettered at once);
- `TransientSinkError` and any other exception are retried, up to `retries` times;
- over HTTP (`classify_status`): 2xx is success; 408 (request timeout), 429 (too many
  requests) and every 5xx are transient; every other 4xx, and 3xx (a URL that redirects is
  a misconfiguration the dispatcher will not guess around), are permanent.
"""

from __future__ import annotations

import email.utils
import math
import time
from dataclasses import dataclass
from typing import Final

from eventbus_core._backoff import backoff_delay
from eventbus_core._bus import check_count, check_seconds
from eventbus_core._errors import PermanentSinkError, SinkError, TransientSinkError

__all__ = ["RetryPolicy", "classify_status", "parse_retry_after"]

_TRANSIENT_4XX: Final = frozenset({408, 429})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long the dispatcher waits before resending a failed batch.

    The delays are `eventbus_core.Backoff`'s (`backoff_delay()`), unless a sink says when to
    come back (`Retry-After`).

    Args:
        retries: Resends after the first attempt (Go original: 3); 0 disables retries.
        base: Delay before the first retry, in seconds; it doubles on each further retry.
        cap: Longest backoff delay, in seconds.
        retry_after_max: Longest wait a sink's `Retry-After` may impose, in seconds.
        jitter: Randomise each delay within [delay/2, delay] so that many dispatchers that
            failed together do not retry in lockstep.
    """

    retries: int = 3
    base: float = 1.0
    cap: float = 30.0
    retry_after_max: float = 300.0
    jitter: bool = True

    def __post_init__(self) -> None:
        check_count("retries", self.retries, 0, "0: no retries")  # 1.5 ran as 1 (trial 134)
        for label, value in (
            ("base", self.base),
            ("cap", self.cap),
            ("retry_after_max", self.retry_after_max),
        ):
            check_seconds(f"retry {label}", value)  # nan passed a `value < 0` test

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (1 for the first retry).

        When the sink reports a `retry_after` (HTTP `Retry-After`), it replaces the backoff, as
        urllib3 does: the destination knows when it will be ready. It is bounded by
        `retry_after_max` so that a hostile or broken value cannot stall a sink for hours.
        """
        if retry_after is not None and math.isfinite(retry_after):
            return min(max(retry_after, 0.0), self.retry_after_max)
        return backoff_delay(retry - 1, self.base, self.cap, jitter=self.jitter)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Parse an HTTP `Retry-After` header: delta-seconds or an HTTP date; None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        current = time.time() if now is None else now
        return max(0.0, when.timestamp() - current)  # a date in the past: now
    if not math.isfinite(seconds) or seconds < 0:
        return None  # "nan", "inf", "-5": no delay a server meant; the backoff applies
    return seconds


def classify_status(
    status: int, detail: str = "", *, retry_after: float | None = None
) -> SinkError | None:
    """Map an HTTP status to the error a sink should raise, or None for success (2xx).

    Args:
        status: The HTTP status code of the destination's response.
        detail: Extra text for the message (e.g. the start of the response body).
        retry_after: Parsed `Retry-After`, attached to transient errors.

    The error's `error_type` (the label of `eventbus.sink.failed`) is the status, e.g. `"503"`.
    """
    if 200 <= status < 300:
        return None
    message = f"HTTP {status}" + (f": {detail}" if detail else "")
    if status >= 500 or status in _TRANSIENT_4XX:
        return TransientSinkError(message, retry_after=retry_after, error_type=str(status))
    return PermanentSinkError(message, error_type=str(status))
