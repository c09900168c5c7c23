"""Events as `tail` and `replay` print them: redacted as sinks get them, unless --no-redact.

`Redactor.event` scrubs what it can read, and leaves compressed or binary bodies as they are
(the dispatcher scrubs those after decoding). Printed as base64 they would carry what they hold
to the terminal, so here a body that is not UTF-8 text is replaced by a marker instead.
"""

from __future__ import annotations

from typing import Final

from eventbus_core._event import Event
from eventbus_core._log import get_logger
from eventbus_core.redact._redact import NO_REDACTION, Redactor, is_utf8, stripped

log = get_logger("eventbus.cli")

__all__ = ["UNREADABLE_BODY", "printable"]

UNREADABLE_BODY: Final = b"[REDACTED: compressed or binary body; --no-redact prints it]"


def _readable(body: bytes | None) -> bytes | None:
    return body if is_utf8(body) else UNREADABLE_BODY


def printable(event: Event, redactor: Redactor) -> Event:
    """`event` as it may be printed: redacted, with unreadable bodies masked (unchanged for
    `NO_REDACTION`)."""
    if redactor is NO_REDACTION:
        return event
    try:
        event = redactor.event(event)
    except Exception as exc:
        # JSON nested past the walk's depth: `tail` and `replay` ended with "internal error:
        # RecursionError", printing nothing, not even the events after it (trial 248). What
        # cannot be redacted goes out as the publish path sends it: no headers, no bodies.
        log.warning(
            "LogID %d could not be redacted (%s); printed without headers, bodies or query string",
            event.log_id,
            type(exc).__name__,
        )
        return stripped(event)
    request, response = _readable(event.request_body), _readable(event.response_body)
    if request is event.request_body and response is event.response_body:
        return event
    return event.replace(request_body=request, response_body=response)
