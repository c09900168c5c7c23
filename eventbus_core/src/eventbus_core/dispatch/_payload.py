"""`PayloadPreparer`: the one place an event becomes what a sink receives.

Transform (the `LLMTransformer` or a custom `transform`), fall back to the event's bare facts
with a `transform_error` if the transformer raises, then redact. The dispatcher and
`eventbus replay` both use it, so a replayed event reaches a sink in the shape the dispatcher
gave it the first time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from eventbus_core._errors import clipped, message_of
from eventbus_core._event import Event
from eventbus_core._log import get_logger, scrub
from eventbus_core.redact._masked_values import masked_values
from eventbus_core.redact._redact import MASK, Redactor
from eventbus_core.transform._llm import LLMTransformer, Payload, Transform

if TYPE_CHECKING:
    from eventbus_core._settings import EventBusSettings

__all__ = ["PayloadPreparer"]

log = get_logger("eventbus.dispatcher")


class PayloadPreparer:
    """Turn an event into a sink's payload: transform, fall back on failure, redact.

    Args:
        transform: `transform(event) -> dict`; the `LLMTransformer` by default.
        redactor: The redaction rules; None means the default rules plus the environment's
            `EVENTBUS_REDACT_HEADERS` and `EVENTBUS_REDACT_PATTERNS`
            (`Redactor.from_environment()`). Pass `NO_REDACTION` to hand payloads on
            unredacted.
    """

    def __init__(
        self, transform: Transform | None = None, redactor: Redactor | None = None
    ) -> None:
        self.transform: Transform = transform or LLMTransformer()
        self.redactor: Redactor = Redactor.from_environment() if redactor is None else redactor
        self._transform_failures = 0
        # A custom transformer's payload is checked for values JSON cannot encode: the sinks
        # wrote them as their repr, silently (trial 145). The built-in one makes none.
        self._check_values = type(self.transform) is not LLMTransformer

    @classmethod
    def from_settings(cls, settings: EventBusSettings) -> PayloadPreparer:
        """The transformer and redaction `eventbus dispatch` uses for `settings`
        (`EVENTBUS_TRANSFORMER`, `EVENTBUS_BODY_*`, `EVENTBUS_REDACT*`)."""
        from eventbus_core.dispatch._setup import redactor_from_settings, transform_from_settings

        return cls(transform_from_settings(settings), redactor_from_settings(settings))

    def __call__(self, event: Event) -> Payload:
        """The payload of `event`, redacted; never raises for a transformer's failure."""
        try:
            made = self.transform(event)
            if not isinstance(made, Mapping):
                raise TypeError(
                    f"the transformer {_name_of(self.transform)} returned "
                    f"{type(made).__name__}, not a dict of the payload's fields"
                )
            payload = dict(made)
            if self._check_values:
                _refuse_unencodable(payload, self.transform)
        except KeyboardInterrupt:
            raise  # `eventbus replay` prepares in the main thread: the user's Ctrl-C
        except BaseException as exc:
            # A transformer bug must not lose events: ship the bare facts and say why. Any
            # BaseException too (GeneratorExit, SystemExit, a library's own): one ended the
            # dispatcher's reader, and Dispatcher.run() with it (review 202).
            reason = _error_text(exc, event, self.redactor)
            self._transform_failures += 1
            failures = self._transform_failures
            # A broken transformer fails every event: the first few are logged, then every
            # _LOG_EVERY-th (each payload carries its own `transform_error`).
            if failures <= _LOGGED_FIRST or failures % _LOG_EVERY == 0:
                log.warning(
                    "transform failed for log_id=%s request_id=%s: %s%s",
                    event.log_id,
                    event.request_id,
                    reason,
                    f" ({failures} failures so far; the first {_LOGGED_FIRST} and every "
                    f"{_LOG_EVERY}th are logged)"
                    if failures >= _LOGGED_FIRST
                    else "",
                )
            payload = _bare_facts(event, "transform_error", reason)
        try:
            redacted: dict[str, Any] = self.redactor.payload(payload)
        except RecursionError:
            # A body nested hundreds deep (JSON allows it) takes the redaction's walk past the
            # recursion limit. Raising here made the dispatcher retry the read for ever; shipping
            # the unredacted payload is not an option. Ship the bare facts and say why.
            reason = (
                "RecursionError: the payload is nested too deeply to redact; its bodies and "
                "headers are left out"
            )
            log.warning(
                "redaction failed for log_id=%s request_id=%s: %s",
                event.log_id,
                event.request_id,
                reason,
            )
            redacted = self.redactor.payload(_bare_facts(event, "redaction_error", reason))
        return redacted

    def __repr__(self) -> str:
        return f"PayloadPreparer(transform={self.transform!r}, redactor={self.redactor!r})"


_LOGGED_FIRST = 5
_LOG_EVERY = 1000


def _name_of(transform: Transform) -> str:
    """How a message names the transformer: `module:function`, as EVENTBUS_TRANSFORMER does."""
    module = getattr(transform, "__module__", None)
    name = getattr(transform, "__qualname__", None)
    if module and name:
        return f"{module}:{name}"
    return repr(transform)


_JSON_LEAVES = (str, int, float, bool, type(None))
_EXACT_LEAVES = frozenset(_JSON_LEAVES)  # a set lookup first: most values are exactly these
# Deeper than this is refused as JSON would (its encoder stops at the recursion limit), and a
# payload that holds itself is caught by it rather than walked for ever.
_MAX_DEPTH = 500


def _refuse_unencodable(payload: Mapping[str, Any], transform: Transform) -> None:
    """Raise TypeError naming the first value of `payload` that JSON cannot encode (a
    datetime, a set, an object), and where it is, as `payload['a'][0]`."""
    trail = _unencodable(payload, 0)
    if trail is None:
        return
    keys, value = trail
    where = "payload" + "".join(f"[{key!r}]" for key in reversed(keys))
    name = _name_of(transform)
    if value is _TOO_DEEP:
        raise TypeError(
            f"the transformer {name} returned a payload nested more than {_MAX_DEPTH} deep "
            "(or holding itself), which JSON cannot encode"
        )
    if isinstance(value, _BadKey):
        raise TypeError(
            f"the transformer {name} returned a key of type {value.kind} in {where}, which "
            "JSON cannot encode: use str keys"
        )
    raise TypeError(
        f"the transformer {name} returned a value of type {type(value).__name__} at {where}, "
        "which JSON cannot encode: return str, int, float, bool, None, lists and dicts of them "
        "(a datetime as an ISO 8601 str, a mapping such as the event's headers as a dict)"
    )


class _BadKey:
    def __init__(self, key: object) -> None:
        self.kind = type(key).__name__


_TOO_DEEP = object()


def _unencodable(value: Any, depth: int) -> tuple[list[Any], Any] | None:
    """None if JSON can encode `value`; else (the keys to the culprit, innermost first, and
    the culprit). Recursive: cheaper than a stack, and bounded by _MAX_DEPTH."""
    if depth > _MAX_DEPTH:
        return [], _TOO_DEEP
    if isinstance(value, dict):  # JSON encodes dicts only: a mappingproxy is a culprit
        for key, item in value.items():
            if type(key) not in _EXACT_LEAVES and not isinstance(key, _JSON_LEAVES):
                return [], _BadKey(key)
            if type(item) not in _EXACT_LEAVES:
                found = _unencodable(item, depth + 1)
                if found is not None:
                    found[0].append(key)
                    return found
        return None
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if type(item) not in _EXACT_LEAVES:
                found = _unencodable(item, depth + 1)
                if found is not None:
                    found[0].append(i)
                    return found
        return None
    return None if isinstance(value, _JSON_LEAVES) else ([], value)


def _bare_facts(event: Event, error_field: str, reason: str) -> dict[str, Any]:
    """The payload of an event whose full payload could not be made: its facts, no body or
    header, and why (`error_field`)."""
    return {
        "type": "llm.request",
        "log_id": event.log_id,
        "request_id": event.request_id,
        "method": event.method,
        "path": event.path,
        "status": event.status,
        "duration_ms": event.duration_ns / 1e6,
        error_field: reason,
    }


def _quoted_forms(value: str) -> set[str]:
    """`value` as a message may hold it: as it is, and escaped as JSON (`"` as `\\"`, with and
    without non-ASCII as `\\u` escapes) and as Python's repr escapes it."""
    return {
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        repr(value)[1:-1],
    }


def _error_text(exc: BaseException, event: Event, redactor: Redactor) -> str:
    """`"<type>: <message>"` of a transformer's exception, with every value the redaction masks
    in the event (credential headers' values and the `user:password` of a Basic one, what it
    masks in the path and the bodies: `masked_values`) masked wherever the message quotes it,
    in whatever form (the repr of the headers' tuples, JSON, an f-string): the text rules
    recognise a credential by its name or shape, which such a message may not put next to it
    (`KeyError: 'hunter2'`). The log line and the payload's `transform_error` both get this
    text."""
    secrets = {form for value in masked_values(event, redactor) for form in _quoted_forms(value)}

    def mask(text: str) -> str:
        for form in sorted(secrets, key=len, reverse=True):  # a value inside another: later
            text = text.replace(form, MASK)
        # The text rules too, before the cut (they run again on the payload and the log
        # line): a key the cut halves is no longer one they recognise (review 202).
        return scrub(redactor.text(text))

    return clipped(f"{type(exc).__name__}: {message_of(exc)}", mask)
