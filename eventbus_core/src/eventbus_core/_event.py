"""The `Event`: one proxied HTTP request, immutable once built."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Final

from eventbus_core._wire import decode_event as _decode_event
from eventbus_core._wire import encode_event as _encode_event

__all__ = ["Event", "Headers"]

Headers = Mapping[str, tuple[str, ...]]
"""Response headers as Go's `http.Header`: header name to its list of values."""

_EMPTY_HEADERS: Final[Headers] = MappingProxyType({})
_NS_PER_US: Final = 1_000
_INT64_MAX: Final = 2**63 - 1

COUNTED_LOG_IDS_BELOW: Final = 2**62
"""LogIDs below this are counted (1, 2, 3, ... in the order the backend added the entries). A
backend that must number entries that carry none (the Go llm-proxy writes LogID 0) derives
theirs from this up, where no counter comes: so in one log such LogIDs are not in reading
order with the counted ones (`eventbus replay` resumes by the counted ones)."""


def _duration_to_ns(duration: timedelta | int) -> int:
    if isinstance(duration, timedelta):
        # Integer arithmetic: a float of seconds would round away nanosecond-scale parts.
        return (duration.days * 86_400 + duration.seconds) * 1_000_000_000 + (
            duration.microseconds * _NS_PER_US
        )
    if isinstance(duration, bool) or not isinstance(duration, int):
        raise TypeError(
            f"Event duration must be a datetime.timedelta or an int of nanoseconds, "
            f"not {type(duration).__name__}"
        )
    return duration


def _freeze_headers(headers: Mapping[str, Iterable[str] | str]) -> Headers:
    # Always a copy, a MappingProxyType included: a proxy the caller made is a view of a dict
    # the caller still holds, and could change after the event was built. Proxies an Event made
    # itself never come here (`replace()` and the decoder reuse or build them directly).
    items = getattr(headers, "items", None)
    if not callable(items):
        raise TypeError(
            f"Event response_headers must be a mapping of header name to value(s), such as "
            f"{{'Content-Type': 'application/json'}}, or None; got {type(headers).__name__}"
        )
    frozen: dict[str, tuple[str, ...]] = {}
    for name, values in items():  # any mapping, or what has items() (http.client's headers)
        # The usual shapes first, checked as cheaply as before; anything else, or anything
        # wrong, goes to `_header_values`, which says what.
        if type(values) is str:
            vals: tuple[str, ...] = (values,)
        elif type(values) in _SEQUENCES:
            vals = tuple(values)
            for value in vals:
                if type(value) is not str:
                    vals = _header_values(name, values)
                    break
        else:
            vals = _header_values(name, values)
        if not isinstance(name, str):
            raise TypeError(
                f"Event response_headers names must be str, got {type(name).__name__}: {name!r}"
            )
        frozen[name] = vals
    return MappingProxyType(frozen)


_SEQUENCES: Final = (tuple, list)


def _header_values(name: object, values: object) -> tuple[str, ...]:
    """One header's values as a tuple of str; refused naming the header (never showing a value,
    which may be a credential)."""
    if isinstance(values, str):
        return (values,)  # a bare string is one value, not a sequence of characters
    items: Iterable[object] = (
        values
        if isinstance(values, Iterable) and not isinstance(values, bytes | bytearray)
        else (values,)
    )
    kept: list[str] = []
    for value in items:
        if not isinstance(value, str):
            raise TypeError(
                f"Event response_headers[{name!r}] must be a str or a sequence of str, "
                f"holds {type(value).__name__}"
            )
        kept.append(value)
    return tuple(kept)


def _check_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"Event {name} must be str, not {type(value).__name__}")
    return str(value)


def _check_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Event {name} must be int, not {type(value).__name__}")


def _refuse_range(status: int, duration_ns: int, log_id: int) -> None:
    """Raise for the value out of range (called only once the cheap test has failed)."""
    if not (status == 0 or 100 <= status <= 599):
        raise ValueError(
            f"Event status must be an HTTP status code 100-599, or 0 for unset; got {status}"
        )
    if not 0 <= duration_ns <= _INT64_MAX:
        what = "negative" if duration_ns < 0 else "beyond a 64-bit integer of nanoseconds"
        raise ValueError(
            f"Event duration must not be {what} (Go's time.Duration); got {duration_ns} ns"
        )
    if not 0 <= log_id <= _INT64_MAX:
        what = "negative" if log_id < 0 else "beyond a 64-bit integer"
        raise ValueError(f"Event log_id must not be {what}; got {log_id}")


def check_ranges(event: Event) -> None:
    """Refuse what `Event()` refuses of a decoded event (`from_json()` reads what Go wrote as it
    is): for input that must be an event eventbus itself could have made.

    Raises:
        ValueError: naming the field, as `Event()` would.
    """
    _refuse_range(event.status, event.duration_ns, event.log_id)


def _check_bytes(name: str, value: object) -> bytes | None:
    if value is None or type(value) is bytes:
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        raise TypeError(f"Event {name} must be bytes, not str: encode it first, e.g. body.encode()")
    raise TypeError(f"Event {name} must be bytes or None, not {type(value).__name__}")


class Event:
    """One observability event: a proxied HTTP request and its response.

    Immutable: a single event object is shared by every subscriber, so nobody may change it.
    Use `replace()` to derive a changed copy.

    Args:
        request_id: The request's unique identifier.
        method: HTTP method.
        path: Request path (with query string, if any).
        status: HTTP status code of the response.
        duration: A `timedelta`, or an `int` of nanoseconds (kept exactly, as Go keeps it).
        response_headers: Header name to a value or a sequence of values; `None` is Go's nil.
        response_body: Response body bytes; `None` is Go's nil slice, `b""` an empty one.
        request_body: Request body bytes, same convention.
        log_id: Monotonic LogID; 0 until a backend that stamps them (Redis) assigns one.

    Raises:
        TypeError: A field has the wrong type.
        ValueError: A value no event can have (the message names the field): a `status`
            other than 0 (unset) or 100-599, a negative `duration` or `log_id`, or one beyond
            a 64-bit integer (Go's decoder would refuse it). `from_json()` does not check
            these: what Go wrote is read as it is.
    """

    __slots__ = (
        "duration_ns",
        "log_id",
        "method",
        "path",
        "request_body",
        "request_id",
        "response_body",
        "response_headers",
        "status",
    )

    log_id: int
    request_id: str
    method: str
    path: str
    status: int
    duration_ns: int
    response_headers: Headers | None
    response_body: bytes | None
    request_body: bytes | None

    def __init__(
        self,
        request_id: str = "",
        method: str = "",
        path: str = "",
        status: int = 0,
        duration: timedelta | int = 0,
        response_headers: Mapping[str, Iterable[str] | str] | None = None,
        response_body: bytes | None = None,
        request_body: bytes | None = None,
        log_id: int = 0,
    ) -> None:
        # Fast path on exact types; the checks cost more than the assignments otherwise.
        if type(request_id) is not str or type(method) is not str or type(path) is not str:
            request_id, method, path = (
                _check_str("request_id", request_id),
                _check_str("method", method),
                _check_str("path", path),
            )
        if type(status) is not int or type(log_id) is not int:
            _check_int("status", status)
            _check_int("log_id", log_id)
        duration_ns = duration if type(duration) is int else _duration_to_ns(duration)
        # One chained test for the usual case (literals: cheaper than a global lookup); what
        # Go's decoder would refuse, or no HTTP response has, is refused here with its name.
        if not (
            0 <= duration_ns <= 9_223_372_036_854_775_807
            and 0 <= log_id <= 9_223_372_036_854_775_807
            and (100 <= status <= 599 or status == 0)
        ):
            _refuse_range(status, duration_ns, log_id)
        headers = None if response_headers is None else _freeze_headers(response_headers)
        if response_body is not None and type(response_body) is not bytes:
            response_body = _check_bytes("response_body", response_body)
        if request_body is not None and type(request_body) is not bytes:
            request_body = _check_bytes("request_body", request_body)
        # Through each slot's own setter: `__setattr__` refuses (see `_SETTERS`).
        _SET_LOG_ID(self, log_id)
        _SET_REQUEST_ID(self, request_id)
        _SET_METHOD(self, method)
        _SET_PATH(self, path)
        _SET_STATUS(self, status)
        _SET_DURATION_NS(self, duration_ns)
        _SET_RESPONSE_HEADERS(self, headers)
        _SET_RESPONSE_BODY(self, response_body)
        _SET_REQUEST_BODY(self, request_body)

    @property
    def duration(self) -> timedelta:
        """The duration as a `timedelta` (microsecond precision; `duration_ns` is exact)."""
        return timedelta(microseconds=self.duration_ns // _NS_PER_US)

    @property
    def headers(self) -> Headers:
        """The response headers, empty when there are none (never `None`)."""
        return self.response_headers if self.response_headers is not None else _EMPTY_HEADERS

    def header(self, name: str) -> str | None:
        """Return the first value of a response header, matched case-insensitively, or None."""
        headers = self.response_headers
        if not headers:
            return None
        values = headers.get(name)
        if values is None:
            lowered = name.lower()
            for key, vals in headers.items():
                if key.lower() == lowered:
                    values = vals
                    break
        return values[0] if values else None

    def replace(self, **changes: Any) -> Event:
        """Return a copy with the given fields changed (`duration` or `duration_ns` for time).

        The changed fields are checked as the constructor checks them; the others are kept as
        they are (an event decoded from Go keeps what Go wrote).

        Raises:
            TypeError: an unknown field, or a changed field of the wrong type.
            ValueError: a changed field out of range (see the constructor).
        """
        if "duration_ns" in changes:
            changes["duration"] = changes.pop("duration_ns")
        unknown = changes.keys() - _FIELD_NAMES
        if unknown:
            raise TypeError(
                f"Event.replace() got unknown field(s) {sorted(unknown)}; "
                f"fields are {sorted(_FIELD_NAMES)}"
            )
        if changes.get("response_headers") is self.response_headers:
            changes.pop("response_headers", None)  # our own read-only proxy: no copy needed
        # An event of only the changes checks and normalises them (every default is valid).
        changed = Event(**changes)
        clone = _Unsealed()
        for name in Event.__slots__:
            source = changed if _SLOT_OF.get(name, name) in changes else self
            setattr(clone, name, getattr(source, name))
        return clone.seal()

    @classmethod
    def _trusted(
        cls,
        request_id: str,
        method: str,
        path: str,
        status: int,
        duration_ns: int,
        response_headers: dict[str, tuple[str, ...]] | None,
        response_body: bytes | None,
        request_body: bytes | None,
    ) -> Event:
        """Build an event without checks or copies, for eventbus's own per-request code (the
        ASGI middleware), which guarantees the types; the caller must never change
        `response_headers` afterwards. The checks and the header copy of `__init__` cost more
        than the rest of the middleware's work per request."""
        return _build(
            0,
            request_id,
            method,
            path,
            status,
            duration_ns,
            None if response_headers is None else MappingProxyType(response_headers),
            response_body,
            request_body,
        )

    def with_log_id(self, log_id: int) -> Event:
        """Return a copy stamped with `log_id` (what a Redis backend stores).

        Raises:
            TypeError: `log_id` is not an int.
            ValueError: `log_id` is negative or beyond a 64-bit integer, as `Event()` refuses.
        """
        if type(log_id) is not int or not 0 <= log_id <= _INT64_MAX:
            _check_int("log_id", log_id)
            _refuse_range(self.status, self.duration_ns, log_id)
        return _build(
            log_id,
            self.request_id,
            self.method,
            self.path,
            self.status,
            self.duration_ns,
            self.response_headers,
            self.response_body,
            self.request_body,
        )

    def to_json(self, *, log_id: bool = True) -> bytes:
        """Encode in the Go llm-proxy wire format (what Go's `encoding/json` writes).

        Args:
            log_id: False leaves out the leading `{"LogID":<n>,`, for a writer that stamps the
                LogID in front once it is assigned (the Redis backends do).
        """
        return _encode_event(self, log_id=log_id)

    @classmethod
    def from_json(cls, data: bytes | bytearray | memoryview | str) -> Event:
        """Decode the Go llm-proxy wire format.

        Accepts what Go's decoder accepts for these fields: key names in any letter case,
        `null` for any field, base64 with line breaks; unknown keys are ignored. A whole
        `null`, which Go reads as an empty event, is refused: it is no event.

        Raises:
            WireFormatError: (a `ValueError`) the input is not a valid event; the message says why.
        """
        return _decode_event(data, _restore)

    def _key(self) -> tuple[Any, ...]:
        headers = self.response_headers
        return (
            self.log_id,
            self.request_id,
            self.method,
            self.path,
            self.status,
            self.duration_ns,
            None if headers is None else dict(headers),
            self.response_body,
            self.request_body,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(
            (
                self.log_id,
                self.request_id,
                self.method,
                self.path,
                self.status,
                self.duration_ns,
                self.response_body,
                self.request_body,
            )
        )

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(
            f"Event is immutable; use event.replace({name}=...) for a changed copy"
        )

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Event is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        headers = None if self.response_headers is None else dict(self.response_headers)
        # Rebuilt unchecked, as decoded: an event read from Go survives a pickle as it is.
        return (
            _restore,
            (
                self.request_id,
                self.method,
                self.path,
                self.status,
                self.duration_ns,
                headers,
                self.response_body,
                self.request_body,
                self.log_id,
            ),
        )

    def __repr__(self) -> str:
        # Bodies and header values may hold secrets and megabytes: show sizes and names only.
        # The path may carry a key in its query string (?api_key=...): masked as sinks get it.
        from eventbus_core.redact._redact import redact_text  # it imports this module

        def size(body: bytes | None) -> str:
            return "None" if body is None else f"<{len(body)} bytes>"

        headers = (
            "None" if self.response_headers is None else f"<{len(self.response_headers)} headers>"
        )
        return (
            f"Event(log_id={self.log_id}, request_id={self.request_id!r}, method={self.method!r}, "
            f"path={redact_text(self.path)!r}, status={self.status}, "
            f"duration_ns={self.duration_ns}, "
            f"response_headers={headers}, response_body={size(self.response_body)}, "
            f"request_body={size(self.request_body)})"
        )


_FIELD_NAMES: Final = frozenset(
    {
        "request_id",
        "method",
        "path",
        "status",
        "duration",
        "response_headers",
        "response_body",
        "request_body",
        "log_id",
    }
)
_SLOT_OF: Final = {"duration_ns": "duration"}  # slot name -> the argument that sets it


# Each slot's own setter. An event is immutable (`__setattr__` refuses), so the constructor
# fills it through these: half the cost of `object.__setattr__`, which first looks the name up
# on the type. The middleware, the decoder and the Redis writers build theirs faster still, as
# an `_Unsealed` event sealed afterwards.
_SETTERS: Final[dict[str, Any]] = {name: Event.__dict__[name].__set__ for name in Event.__slots__}
_SET_LOG_ID: Final = _SETTERS["log_id"]
_SET_REQUEST_ID: Final = _SETTERS["request_id"]
_SET_METHOD: Final = _SETTERS["method"]
_SET_PATH: Final = _SETTERS["path"]
_SET_STATUS: Final = _SETTERS["status"]
_SET_DURATION_NS: Final = _SETTERS["duration_ns"]
_SET_RESPONSE_HEADERS: Final = _SETTERS["response_headers"]
_SET_RESPONSE_BODY: Final = _SETTERS["response_body"]
_SET_REQUEST_BODY: Final = _SETTERS["request_body"]


class _Unsealed:
    """An event being built: `Event`'s slots without its refusing `__setattr__`, so each field
    is one plain attribute store. `seal()` then turns it into an `Event` by assigning
    `__class__`, which Python allows between classes of the same slots and base. That costs
    less than the nine slot-setter calls it replaces (about 200 ns against 590 ns an event),
    paid per request by the middleware and per event by the decoder and the Redis writers."""

    __slots__ = Event.__slots__

    log_id: int
    request_id: str
    method: str
    path: str
    status: int
    duration_ns: int
    response_headers: Headers | None
    response_body: bytes | None
    request_body: bytes | None

    def seal(self) -> Event:
        self.__class__ = Event  # type: ignore[assignment]
        return self  # type: ignore[return-value]


def _build(
    log_id: int,
    request_id: str,
    method: str,
    path: str,
    status: int,
    duration_ns: int,
    response_headers: Headers | None,
    response_body: bytes | None,
    request_body: bytes | None,
) -> Event:
    """A new event of exactly these fields, unchecked (the caller vouches for them)."""
    event = _Unsealed()
    event.log_id = log_id
    event.request_id = request_id
    event.method = method
    event.path = path
    event.status = status
    event.duration_ns = duration_ns
    event.response_headers = response_headers
    event.response_body = response_body
    event.request_body = request_body
    return event.seal()


def _restore(
    request_id: str,
    method: str,
    path: str,
    status: int,
    duration_ns: int,
    response_headers: Mapping[str, Iterable[str]] | None,
    response_body: bytes | None,
    request_body: bytes | None,
    log_id: int,
) -> Event:
    """Build an event from values already checked for type, without the range checks.

    For the decoder (`Event.from_json`, which reads what Go's decoder reads, out-of-range
    values included) and for unpickling. `response_headers` is copied into a new proxy, unless
    it is one already: the decoder's fast path hands over a proxy of the dict of tuples it has
    just made, which nothing else holds (copying it again cost a sixth of decoding an event).
    """
    headers: Any = response_headers
    if headers is not None and type(headers) is not MappingProxyType:
        headers = MappingProxyType({k: tuple(v) for k, v in headers.items()})
    return _build(
        log_id,
        request_id,
        method,
        path,
        status,
        duration_ns,
        headers,
        response_body,
        request_body,
    )
