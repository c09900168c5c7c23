"""The loggers of eventbus, each of which scrubs credentials out of what it logs.

Every module of eventbus (core, memory, redis) gets its logger from `get_logger()`, which
attaches one `ScrubFilter`. The filter formats a record's message with its arguments, masks
credentials in it (the default redaction rules, passwords in URLs, and any patterns added with
`add_patterns()`), and replaces the traceback and stack by scrubbed text. So a secret inside an
exception message (a transformer quoting the body it could not parse, a sink quoting a
response, a Redis error quoting a URL) never reaches a handler, whatever handlers the
application installs.

The filter sits on each logger rather than once on `eventbus`: Python runs a logger's filters
only for records created by that very logger, never for records its children propagate.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

from eventbus_core.redact._loose_names import names_a_credential_loosely
from eventbus_core.redact._redact import MASK, Redactor, is_credential_name
from eventbus_core.redact._secrets import redact_url

__all__ = [
    "LineBudget",
    "ScrubFilter",
    "add_patterns",
    "first_time",
    "get_logger",
    "scrub",
    "scrub_data",
]

_lock = threading.Lock()
_redactor = Redactor()
_formatter = logging.Formatter()


def scrub(text: str) -> str:
    """`text` with credentials masked, as every eventbus log line is."""
    return _redactor.text(redact_url(text))


def scrub_data(value: Any) -> Any:
    """Plain data (mappings, lists, strings, numbers) with credentials masked as `scrub` masks
    text, and a credential-named field's value (`password`, `Authorization`, `api_key`) masked
    whole: for figures a plugin hands over to be printed (`Describable.describe()`).

    Configuration figures name credentials more loosely than a payload does: a field whose
    name has the word `token`, `credentials`, `pwd`, `bearer`, `creds`, `jwt`, `nkey`, `auth`,
    `signature` or `dsn` (`nats_token`, `NATS TOKEN`, `authToken`; the list is
    `redact/_loose_names.py`'s, shared with header names), or the words `signing key`, `session
    key`, `connection string` and the like, is masked whole too (a payload's `token` is the
    text of a logprob, left alone there), and so is the password of `user:password@host` (or
    `:password@host`) without a scheme (trials 155 and 159). Numbers, booleans and None are
    figures, never masked: a counter named `password_errors` is no credential (review 158)."""
    return _config_masked(value)


# `user:password@host` (or `:password@host`) with no scheme before it (`redact_url` masks
# those with one).
_BARE_USERINFO: Final = re.compile(r"(?<![\w/:@.%+-])([\w.%+-]*):([^\s@/:]+)@(?=[\w.\[-])")


def _config_masked(value: Any) -> Any:
    if isinstance(value, str):
        return _BARE_USERINFO.sub(r"\1:***@", scrub(value))
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key)
            holds_text = isinstance(item, str | Mapping | list | tuple) and len(item) > 0
            if holds_text and (is_credential_name(name) or names_a_credential_loosely(name)):
                out[name] = MASK
            else:
                out[name] = _config_masked(item)
        return out
    if isinstance(value, list | tuple):
        return [_config_masked(v) for v in value]
    return value


_warned: set[str] = set()  # the keys of the once-per-process warnings given so far
_warned_lock = threading.Lock()


def first_time(key: str) -> bool:
    """True the first time a once-per-process warning keyed `key` is due (from any thread)."""
    with _warned_lock:
        if key in _warned:
            return False
        _warned.add(key)
        return True


class LineBudget:
    """Lets `burst` log lines of one kind through per `every` seconds; the last one says that
    more within that time are not logged one by one, and where they are counted instead.

    For a line per entry that can come by the thousand (a dead letter each: 2,647 lines in 8 s,
    trial 226), where the figure is exact and the log needs only examples. No lock: two
    threads may let one line more through, never fewer (a fork cannot leave it held).

    Args:
        burst: Lines said per window.
        every: The window, in seconds, from its first line.
    """

    def __init__(self, burst: int = 10, every: float = 30.0) -> None:
        self._burst = burst
        self._every = every
        self._since = float("-inf")
        self._count = 0

    def warning(self, logger: logging.Logger, counted_in: str, msg: str, *args: object) -> None:
        """Log `msg % args` at WARNING if the budget allows; `counted_in` names the figure that
        counts every one of them ("stats dead_lettered")."""
        now = time.monotonic()
        if now - self._since >= self._every:
            self._since, self._count = now, 0
        self._count += 1
        if self._count > self._burst:
            return
        if self._count == self._burst:
            msg += (
                " (%d such lines in %g s: more are not logged one by one until then; %s counts "
                "each)"
            )
            args = (*args, self._burst, self._every, counted_in)
        logger.warning(msg, *args)


def add_patterns(patterns: Iterable[str]) -> None:
    """Mask these regular expressions too in every log line from now on (process-wide).

    The dispatcher calls it with `EVENTBUS_REDACT_PATTERNS` (its redactor's extra patterns), so
    what it masks in payloads it also masks in its logs.
    """
    global _redactor
    with _lock:
        known = _redactor.extra_patterns
        new = [p for p in dict.fromkeys(patterns) if p and p not in known]
        if new:
            _redactor = Redactor(extra_patterns=[*known, *new])


class ScrubFilter(logging.Filter):
    """Scrubs each record in place (message, traceback, stack); never rejects one."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Scrub `record`; always True."""
        try:
            message = record.getMessage()
        except Exception:  # a wrong format string: keep what it was meant to say
            message = f"{record.msg} {record.args!r}"
        record.msg = scrub(message)
        record.args = None
        if record.exc_info:
            # The formatted traceback stands in for the exception: handlers print `exc_text`
            # when there is no `exc_info`, and the exception object itself holds the secret.
            if not record.exc_text:
                record.exc_text = _formatter.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


_FILTER = ScrubFilter()


def get_logger(name: str) -> logging.Logger:
    """`logging.getLogger(name)` with the scrubbing filter attached (once)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, ScrubFilter) for f in logger.filters):
        logger.addFilter(_FILTER)
    return logger
