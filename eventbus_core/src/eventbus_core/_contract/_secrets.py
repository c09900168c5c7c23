"""Contract test of secrets: what a bus says of itself carries no credential of its events.

A bus carries events whole (redaction is the dispatcher's, or `EVENTBUS_REDACT_ON_PUBLISH`'s),
but nothing it says about them may: its log lines at any level, tracebacks included, its
`repr()`, its figures and the errors it raises. A backend that logged a dropped event's headers
through a plain logger, or kept the last event in its repr, passed the whole suite (trial 245).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from eventbus_core._bus import EventBus
from eventbus_core._contract._base import ContractBase, make_event
from eventbus_core._event import Event
from eventbus_core._subscription import Subscription, SubscriptionClosed

__all__ = ["SecretsContract"]

# Shapes every default rule knows, so that a backend logging through `get_logger()` (whose
# filter masks them) passes, and one logging them plainly does not.
_BEARER: Final = "sk-proj-Contract7Secret0Token4Value9xY"
_QUERY_KEY: Final = "contractQueryKey0x7Ab9Cd3Ef"
_COOKIE: Final = "contractCookie0x5Fa1Bb2Cc"
_SECRETS: Final = (
    ("Authorization header", _BEARER),
    ("api_key in the path", _QUERY_KEY),
    ("Cookie header", _COOKIE),
)


def secret_event(n: int) -> Event:
    """`make_event(n)` carrying a credential in a header, the path's query and a cookie."""
    return make_event(
        n,
        path=f"/v1/chat/completions?api_key={_QUERY_KEY}",
        response_headers={
            "Content-Type": ["application/json"],
            "Authorization": [f"Bearer {_BEARER}"],
            "Cookie": [f"session={_COOKIE}"],
        },
    )


def _text_of(record: logging.LogRecord) -> str:
    """The record as a handler would write it: message, traceback and stack."""
    try:
        return logging.Formatter().format(record)
    except Exception:  # a wrong format string: what it holds all the same
        return f"{record.msg} {record.args!r} {record.exc_text or ''} {record.stack_info or ''}"


# One capture at a time: the patch is of the class, for every logger of the process.
_CAPTURING = threading.Lock()


def _snapshot() -> list[logging.Logger]:
    """The root and every logger made so far, read under logging's own lock (a logger made
    meanwhile by another thread changed the dict being read)."""
    with logging._lock:  # type: ignore[attr-defined]  # what getLogger() itself holds
        found = list(logging.Logger.manager.loggerDict.values())
    return [logging.getLogger()] + [x for x in found if isinstance(x, logging.Logger)]


def _level_before(logger: logging.Logger, levels: dict[logging.Logger, int]) -> int:
    """The level `logger` had before the capture: its own, or its nearest ancestor's (a logger
    made during the capture is judged as its parents made it, not as the root)."""
    node: logging.Logger | None = logger
    while node is not None:
        level = levels.get(node, node.level)
        if level:
            return level
        node = node.parent
    return logging.WARNING


@contextmanager
def every_log_record() -> Iterator[list[logging.LogRecord]]:
    """Every record any logger hands its handlers meanwhile, DEBUG included (each as its
    handlers get it: after the logger's own filters, which is where a scrubbing filter works).
    Handlers see only what they would have seen otherwise (the levels as they were).

    Loggers that were disabled (`logging.config`'s `disable_existing_loggers`) are enabled
    meanwhile, so that their records are seen too (and not handed on). Levels, `disabled` and
    the class's `callHandlers` are put back as they were, the patch only if it is still ours.
    """
    with _CAPTURING:
        records: list[logging.LogRecord] = []
        loggers = _snapshot()
        levels = {logger: logger.level for logger in loggers}
        disabled = {logger for logger in loggers if logger.disabled}
        shut_off = logging.root.manager.disable
        hand_over = logging.Logger.callHandlers

        def capture(self: logging.Logger, record: logging.LogRecord) -> None:
            records.append(record)
            if (
                self not in disabled
                and record.levelno >= _level_before(self, levels)
                and record.levelno > shut_off
            ):
                hand_over(self, record)

        logging.disable(logging.NOTSET)
        for logger in loggers:
            logger.setLevel(logging.DEBUG)
            logger.disabled = False
        logging.Logger.callHandlers = capture  # type: ignore[method-assign]
        try:
            yield records
        finally:
            if logging.Logger.callHandlers is capture:
                logging.Logger.callHandlers = hand_over  # type: ignore[method-assign]
            for logger, level in levels.items():
                logger.setLevel(level)
                logger.disabled = logger in disabled
            logging.disable(shut_off)


class SecretsContract(ContractBase):
    """No credential of a published event in the bus's logs, repr, figures or errors."""

    def test_no_credential_leaves_through_logs_repr_or_errors(self) -> None:
        said: list[tuple[str, str]] = []
        # Drops, a subscriber's misses, a stop cutting delivery short, a publish after it:
        # where a backend has most to say about the events it handles.
        with every_log_record() as records, self.bus(10) as bus:
            sub = self.subscribe_bounded(bus)  # never read before the stop: it fills
            self.publish_each(bus, (secret_event(i) for i in range(300)))
            self._wait_for_misses(bus, sub)
            said += self._self_descriptions(bus, [sub])
            self.stop_bus(bus, timeout=0.2)
            self.publish_each(bus, [secret_event(300)])
            said += self._errors_of(sub)
            said += self._self_descriptions(bus, [sub])
        said += [(f"a log record of {r.name!r} ({r.levelname})", _text_of(r)) for r in records]
        for what, text in said:
            for name, secret in _SECRETS:
                assert secret not in text, (
                    f"{what} carried the {name} of a published event: "
                    f"{text.replace(secret, '<SECRET>')[:400]!r}; a bus must not log, show or "
                    "raise an event's credentials (log through eventbus_core.get_logger(), "
                    "whose filter masks them, and keep events out of repr() and messages)"
                )

    def _wait_for_misses(self, bus: EventBus, sub: Subscription) -> None:
        """Until the bus has refused some events or `sub` has missed some (`receive_timeout`
        at most): what follows then happens with something dropped."""
        deadline = time.monotonic() + self.receive_timeout
        while time.monotonic() < deadline:
            stats = self.stats_bounded(bus)
            if stats.dropped or self.entry(stats, sub).dropped:
                return
            time.sleep(0.01)

    def _self_descriptions(self, bus: EventBus, subs: list[Subscription]) -> list[tuple[str, str]]:
        out = [("repr(bus)", repr(bus)), ("str(bus)", str(bus))]
        out.append(("repr(bus.stats())", repr(self.stats_bounded(bus))))
        out += [(f"repr() of subscription {s.name!r}", repr(s)) for s in subs]
        return out

    def _errors_of(self, sub: Subscription) -> list[tuple[str, str]]:
        """The messages of what reading a stopped bus's subscription to its end raises."""
        out: list[tuple[str, str]] = []
        self.iterate(sub)  # the buffered events: they carry their credentials, as they should
        try:
            self.bounded(
                self.timed_limit("get(timeout=0) of an ended subscription", 0, "its timeout"),
                sub.get,
                timeout=0,
            )
        except (SubscriptionClosed, TimeoutError) as exc:
            out.append((f"the {type(exc).__name__} of get() after stop()", str(exc)))
        return out
