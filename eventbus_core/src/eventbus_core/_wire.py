"""The Go llm-proxy wire format: what Go's `encoding/json` writes for its `eventbus.Event`.

Keys `LogID`, `RequestID`, `Method`, `Path`, `Status`, `Duration` (integer nanoseconds),
`ResponseHeaders` (object of string to list of strings, or null), `ResponseBody` and
`RequestBody` (standard base64, or null). Reading follows Go's decoder: key names match in any
letter case, `null` leaves a field at its zero value, unknown keys are ignored, base64 may carry
line breaks, and a byte slice may also be given as an array of numbers. Where Go differs on input
it never writes (a repeated key, deep nesting), docs/go-interop.md says how.
"""

from __future__ import annotations

import binascii
import codecs
import json
import re
import sys
from collections.abc import Callable
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, Final, TypeVar

import msgspec
import orjson

from eventbus_core._base64 import (
    ACCELERATED,
    FAST_FROM,
    b64decode,
    b64decode_plain,
    b64encode,
)
from eventbus_core._errors import WireFormatError

if TYPE_CHECKING:
    # Only for annotations: `_event` imports this module, and the decoder is handed the
    # constructor it builds with, so the codec does not depend on the class at import time.
    from eventbus_core._event import Event

T = TypeVar("T")

__all__ = ["decode_event", "decode_event_careful", "encode_event"]

# Not `bytes | str`, which builds a union object each time it runs (once per event decoded).
_BYTES_OR_STR: Final = (bytes, str)
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

# For an event with a body of 16 KB or more (see `_WHOLE_BELOW`), or with a lone surrogate:
# base64 needs no JSON escaping, so splicing it in as bytes spares the JSON encoder a scan of
# the largest fields (most of such an event's bytes), which made encoding 3-4x faster. The
# quotes go in the separators, so each body is copied once, by the final join.


def _head(event: Event, *, log_id: bool) -> memoryview:
    """The event's JSON up to its bodies (no closing brace), from `{"LogID":` or, without
    `log_id`, from `"RequestID":`.

    orjson writes it (5-7x faster than the json module: this runs on the Redis writer's path,
    on the publishing loop, for events with a large body), escaping strings as the json module does
    (tests/core/test_wire.py compares them). What orjson refuses (lone surrogates) the json
    module writes.
    """
    # An event's headers are a MappingProxyType, whose copy() is a dict orjson writes (8x
    # cheaper than dict(proxy)).
    headers: Any = event.response_headers
    fields = {
        "LogID": event.log_id,
        "RequestID": event.request_id,
        "Method": event.method,
        "Path": event.path,
        "Status": event.status,
        "Duration": event.duration_ns,
        "ResponseHeaders": None if headers is None else headers.copy(),
    }
    try:
        head = orjson.dumps(fields)
    except TypeError:  # orjson.JSONEncodeError
        try:
            head = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()
        except UnicodeEncodeError:
            # A lone surrogate cannot be UTF-8; as an escape Go's decoder turns it into U+FFFD.
            head = json.dumps(fields, separators=(",", ":")).encode("ascii")
    # The bodies follow: no closing brace. The LogID has no comma, so the first one ends it.
    return memoryview(head)[:-1] if log_id else memoryview(head)[head.index(b",") + 1 : -1]


# Bodies below this size are encoded by msgspec with the rest of the event, in one call: it
# writes bytes as standard base64 itself, in C and without releasing the GIL, 2x faster than
# the splice below for a usual event (0.63 µs against 1.29 µs for a 0.3 KB one). Larger bodies
# are spliced in from pybase64 (msgspec's base64 is 7x slower than pybase64 on 20 KB bodies);
# without pybase64, msgspec's is the faster of the two at any size.
_WHOLE_BELOW: Final = FAST_FROM if ACCELERATED else sys.maxsize
_encode_whole: Final = msgspec.json.Encoder().encode


def encode_event(event: Event, *, log_id: bool = True) -> bytes:
    """Encode `event` as the Go wire format (UTF-8 JSON bytes, keys in Go's field order).

    With `log_id=False` the leading `{"LogID":<n>,` is left out: the Redis writers stamp the
    LogID in front when it is assigned.
    """
    resp, req = event.response_body, event.request_body
    if (resp is None or len(resp) < _WHOLE_BELOW) and (req is None or len(req) < _WHOLE_BELOW):
        headers: Any = event.response_headers
        fields: dict[str, Any] = {"LogID": event.log_id} if log_id else {}
        fields["RequestID"] = event.request_id
        fields["Method"] = event.method
        fields["Path"] = event.path
        fields["Status"] = event.status
        fields["Duration"] = event.duration_ns
        fields["ResponseHeaders"] = None if headers is None else headers.copy()
        fields["ResponseBody"] = resp
        fields["RequestBody"] = req
        try:
            # Strings escaped as the json module escapes them (tests/core/test_wire.py).
            encoded: bytes = _encode_whole(fields)
            # Without the LogID the writer puts `{"LogID":<n>,` in front: no brace of our own.
            return encoded if log_id else encoded[1:]
        except UnicodeEncodeError:
            pass  # a lone surrogate, which UTF-8 cannot carry: the path below escapes it
    parts: list[bytes | memoryview] = [_head(event, log_id=log_id)]
    if resp is None:
        parts.append(b',"ResponseBody":null')
    else:
        parts += (b',"ResponseBody":"', b64encode(resp), b'"')
    if req is None:
        parts.append(b',"RequestBody":null}')
    else:
        parts += (b',"RequestBody":"', b64encode(req), b'"}')
    return b"".join(parts)


class _Float(float):
    """A JSON number with a fraction or exponent: Go refuses it for integer fields. Keeps the
    text it was read from, which an error shows (`1E2`, not `100.0`; `1e400`, not `inf`)."""

    text: str

    def __new__(cls, text: str) -> _Float:
        number = super().__new__(cls, text)
        number.text = text
        return number


class _HugeInt:
    """A JSON integer of more digits than Python converts (`sys.get_int_max_str_digits()`):
    Go skips one in an unknown key, and refuses it for a field, as a 64-bit overflow."""

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _parse_int(text: str) -> int | _HugeInt:
    try:
        return int(text)
    except ValueError:  # past the interpreter's limit on digits converted
        return _HugeInt(len(text.lstrip("-")))


def _go_replace(error: UnicodeError) -> tuple[str, int]:
    """One U+FFFD per byte that is not UTF-8, as Go's decoder reads it (Python's "replace"
    gives one for a whole cut-off sequence: `b"\\xe2\\x82"` is two here, as in Go)."""
    if not isinstance(error, UnicodeDecodeError):
        raise error  # registered for decoding only
    return "\ufffd" * (error.end - error.start), error.end


codecs.register_error("eventbus-go-replace", _go_replace)


_JSON_KINDS: Final = {type(None): "null", str: "string", bool: "boolean", list: "array"}
_JSON_KINDS[dict] = "object"


def _kind(value: Any) -> str:
    """What a JSON value is, as an error message names it (not the decoder's own classes)."""
    # As JSON names them, not Python ("NoneType", "str", "dict": trials 169, 172).
    if isinstance(value, float | int | _HugeInt) and not isinstance(value, bool):
        return "number"
    return _JSON_KINDS.get(type(value), type(value).__name__)


def _shown(value: Any) -> str:
    """`: value` for a number, which holds no secret; for text and containers (a token in the
    wrong field, say), only their size: the message reaches logs and clients."""
    if isinstance(value, _Float):
        # As written, but not a megabyte of digits (trial 169 got a 5 KB error line).
        text = value.text
        return f": {text}" if len(text) <= 40 else f" of {len(text)} characters"
    if isinstance(value, _HugeInt):
        return f" of {value.digits} digits"
    if isinstance(value, bool) or value is None:
        return f": {json.dumps(value)}"  # as the input wrote it: true, not True (trial 174)
    if isinstance(value, int | float):
        return f": {value!r}"
    if isinstance(value, str | list | dict):
        return f" of {len(value)} {'character' if isinstance(value, str) else 'item'}(s)"
    return ""


def _reject_constant(name: str) -> Any:
    raise WireFormatError(f"invalid JSON: {name} is not a JSON value")


def _int(field: str, value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, _HugeInt):
        raise WireFormatError(
            f"field {field!r} overflows a 64-bit integer: a number of {value.digits} digits"
        )
    if isinstance(value, bool) or not isinstance(value, int):
        kind = "number with a fraction or exponent" if isinstance(value, float) else _kind(value)
        raise WireFormatError(f"field {field!r} must be an integer, got {kind}{_shown(value)}")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise WireFormatError(f"field {field!r} overflows a 64-bit integer: {value}")
    return value


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _replace_surrogates(kwargs: dict[str, Any]) -> None:
    """Read a lone surrogate (`"\\ud800"`, which `json` keeps and the fast readers refuse) as
    U+FFFD, as Go's decoder does: one could not be printed or written as UTF-8 (`eventbus tail`
    ended on such an event, and a sink failed the whole batch it was in)."""

    def fixed(text: str) -> str:
        return text if text.isascii() else _SURROGATE.sub("\ufffd", text)

    for field in ("request_id", "method", "path"):
        kwargs[field] = fixed(kwargs[field])
    headers = kwargs["response_headers"]
    if headers is not None:
        out: dict[str, list[str]] = {}
        for name, values in headers.items():
            out[fixed(name)] = [fixed(v) for v in values]  # names made equal: the last wins
        kwargs["response_headers"] = out


def _str(field: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise WireFormatError(
            f"field {field!r} must be a string, got {_kind(value)}{_shown(value)}"
        )
    return value


def _bytes(field: str, value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        data = (
            value.replace("\r", "").replace("\n", "") if "\n" in value or "\r" in value else value
        )
        try:
            return b64decode(data)
        except (binascii.Error, ValueError) as exc:
            raise WireFormatError(
                f"field {field!r} must be standard base64 (as Go encodes []byte): {exc}"
            ) from exc
    if isinstance(value, list):
        # Go's decoder also fills a []byte from an array of numbers 0..255.
        if all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in value):
            return bytes(value)
        raise WireFormatError(
            f"field {field!r}: an array for a byte slice must hold integers 0..255"
        )
    raise WireFormatError(f"field {field!r} must be a base64 string or null, got {_kind(value)}")


def _headers(value: Any) -> dict[str, list[str]] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise WireFormatError(
            f"field 'ResponseHeaders' must be an object of header name to list of strings, "
            f"got {_kind(value)}"
        )
    out: dict[str, list[str]] = {}
    for name, values in value.items():
        if values is None:
            out[name] = []
            continue
        if not isinstance(values, list):
            raise WireFormatError(
                f"header {name!r} in 'ResponseHeaders' must be a list of strings, "
                f"got {_kind(values)}"
            )
        items: list[str] = []
        for v in values:
            if v is None:
                items.append("")
            elif isinstance(v, str):
                items.append(v)
            else:
                raise WireFormatError(
                    f"header {name!r} in 'ResponseHeaders' holds a non-string value"
                    f" ({_kind(v)}{_shown(v)})"
                )
        out[name] = items
    return out


_FIELDS: Final = {
    "logid": "log_id",
    "requestid": "request_id",
    "method": "method",
    "path": "path",
    "status": "status",
    "duration": "duration",
    "responseheaders": "response_headers",
    "responsebody": "response_body",
    "requestbody": "request_body",
}
_GO_NAMES: Final = {
    "log_id": "LogID",
    "request_id": "RequestID",
    "method": "Method",
    "path": "Path",
    "status": "Status",
    "duration": "Duration",
    "response_headers": "ResponseHeaders",
    "response_body": "ResponseBody",
    "request_body": "RequestBody",
}


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Go applies keys in document order, so the last spelling of a field wins even across
    # letter case ({"LogID": 1, "logid": 2, "LogID": 3} is 3): a repeated key moves to the end.
    out: dict[str, Any] = {}
    for key, value in pairs:
        out.pop(key, None)
        out[key] = value
    return out


_EXACT_KEYS: Final = frozenset(_GO_NAMES.values())
_B64_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _plain_b64decode(text: str) -> bytes | None:
    """Decode base64 that is plainly valid (ASCII, alphabet only, a multiple of 4 long, at most
    two `=` at the end), or None for anything else. On such input the lenient decoder gives what
    the strict one does, and is faster (strict mode checks as it goes, 1.5x the cost)."""
    if ACCELERATED:
        return b64decode_plain(text)  # the same check and result, in SIMD
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        return None
    n = len(raw)
    if n % 4:
        return None
    core = raw[: n - 2] if raw.endswith(b"==") else raw[: n - 1] if raw.endswith(b"=") else raw
    if core.translate(None, _B64_ALPHABET):
        return None  # a character outside the alphabet, or padding inside
    return binascii.a2b_base64(raw)


class _UsualEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The usual event as msgspec reads it: keys spelled exactly as Go writes them (any other
    key is refused, so letter-case variants, whose order would matter, go the careful way),
    integers within 64 bits, headers as lists of strings, bodies as standard base64 (padded, no
    line breaks), null as the zero value. Refused means decoded the careful way, never wrong."""

    LogID: Annotated[int, msgspec.Meta(ge=_INT64_MIN, le=_INT64_MAX)] | None = None
    RequestID: str | None = None
    Method: str | None = None
    Path: str | None = None
    Status: Annotated[int, msgspec.Meta(ge=_INT64_MIN, le=_INT64_MAX)] | None = None
    Duration: Annotated[int, msgspec.Meta(ge=_INT64_MIN, le=_INT64_MAX)] | None = None
    # Tuples: what an event holds, so building it copies no list.
    ResponseHeaders: dict[str, tuple[str, ...]] | None = None
    ResponseBody: bytes | None = None
    RequestBody: bytes | None = None


_USUAL: Final = msgspec.json.Decoder(_UsualEvent)
# Up to this many bytes (characters, for a str) of wire JSON, msgspec reads an event about
# twice as fast as orjson with the checks in Python: 3.1 against 5.1 µs for issue 12's 2.8 KB
# chat event. Past about 10 KB its reading of long strings (the bodies) is the slower one:
# 14.1 against 11.3 µs at 19 KB (benchmarks/bench_dispatch.py's events, bodies grown).
_SMALL: Final = 8192


def _decode_small(data: bytes | str, build: Callable[..., T]) -> T | None:
    """The usual event of up to `_SMALL` bytes, read by msgspec; None for anything else."""
    try:
        doc = _USUAL.decode(data)
    except (msgspec.DecodeError, UnicodeEncodeError):  # DecodeError: ValidationError too
        # Invalid JSON or UTF-8, a lone surrogate (escaped, or raw in a str: no UTF-8), an
        # unknown key, a wrong type.
        return None
    headers = doc.ResponseHeaders
    return build(
        doc.RequestID or "",
        doc.Method or "",
        doc.Path or "",
        doc.Status or 0,
        doc.Duration or 0,
        # Read-only already: a dict of tuples that nothing else holds (`build` keeps it).
        None if headers is None else MappingProxyType(headers),
        doc.ResponseBody,
        doc.RequestBody,
        doc.LogID or 0,
    )


def _decode_large(data: bytes | str, build: Callable[..., T]) -> T | None:
    """The usual event past `_SMALL` bytes, decoded with orjson (3-4x faster than `json` with a
    pairs hook); None for anything else, which `decode_event` then reads the careful way.

    "The usual" is: valid UTF-8 JSON, an object whose keys are all spelled exactly as Go
    writes them (so no letter-case duplicates, whose order would matter; an exact duplicate
    is last-wins in both), and every field of its expected type. Any doubt means None, so
    what is accepted, refused, and every error message stay those of the careful path.
    """
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None  # invalid UTF-8 (read as U+FFFD there), NaN, or an error to word there
    if type(doc) is not dict or not doc.keys() <= _EXACT_KEYS:
        return None
    get = doc.get
    ints = (get("LogID"), get("Status"), get("Duration"))
    strs = (get("RequestID"), get("Method"), get("Path"))
    for v in ints:
        if v is not None and (type(v) is not int or not _INT64_MIN <= v <= _INT64_MAX):
            return None
    for v in strs:
        if v is not None and type(v) is not str:
            return None
    headers = get("ResponseHeaders")
    if headers is not None:
        if type(headers) is not dict:
            return None
        for values in headers.values():
            if type(values) is not list:
                return None  # null: the careful path spells it out
            for v in values:
                if type(v) is not str:
                    return None
        # Checked; `build` copies them into the event's own read-only mapping of tuples.
    resp, req = get("ResponseBody"), get("RequestBody")
    if (resp is not None and type(resp) is not str) or (req is not None and type(req) is not str):
        return None
    resp_bytes = req_bytes = None
    if resp is not None and (resp_bytes := _plain_b64decode(resp)) is None:
        return None  # line breaks, or an error reported by the careful path
    if req is not None and (req_bytes := _plain_b64decode(req)) is None:
        return None
    log_id, status, duration = ints
    request_id, method, path = strs
    return build(
        request_id or "",
        method or "",
        path or "",
        status or 0,
        duration or 0,
        headers,
        resp_bytes,
        req_bytes,
        log_id or 0,
    )


def decode_event(data: bytes | bytearray | memoryview | str, build: Callable[..., T]) -> T:
    """Decode one event from the Go wire format; `build` makes the event from its nine fields
    (request_id, method, path, status, duration, headers, response body, request body, log_id).

    Raises:
        WireFormatError: the input is not JSON, not an object, or a field has the wrong type.
    """
    if isinstance(data, _BYTES_OR_STR):
        fast = _decode_small(data, build) if len(data) <= _SMALL else _decode_large(data, build)
        if fast is not None:
            return fast
    return decode_event_careful(data, build)


def _loads(text: str) -> Any:
    """`text` parsed the careful way. An integer past Python's limit on digits converted (an
    unknown key's, which Go skips) is read as a `_HugeInt` on a second pass: a `parse_int` of
    ours on every pass would call Python for each integer (review 170)."""
    hooks: dict[str, Any] = {
        "parse_float": _Float,
        "parse_constant": _reject_constant,
        "object_pairs_hook": _pairs,
    }
    try:
        return json.loads(text, **hooks)
    except (json.JSONDecodeError, WireFormatError):
        raise
    except ValueError:  # int() refused a number of too many digits
        return json.loads(text, parse_int=_parse_int, **hooks)


def decode_event_careful(data: bytes | bytearray | memoryview | str, build: Callable[..., T]) -> T:
    """`decode_event` without the fast paths (msgspec, orjson): every input the slow, exact
    way (kept reachable for the tests that compare them, and for `bench_dispatch.py`)."""
    if isinstance(data, memoryview | bytearray):
        data = bytes(data)
    if not isinstance(data, bytes | str):
        raise WireFormatError(f"an event must be given as bytes or str, not {type(data).__name__}")
    if isinstance(data, bytes):
        # Go reads invalid UTF-8 inside strings as U+FFFD rather than failing the event.
        data = data.decode("utf-8", errors="eventbus-go-replace")
    try:
        doc = _loads(data)
    except WireFormatError:
        raise
    except ValueError as exc:
        # JSONDecodeError (an integer of any length is read: `_loads`).
        # No quote of the input: it may hold a token or a cookie, and an application may log
        # this message or answer it to a client. JSONDecodeError says where, not what.
        raise WireFormatError(f"invalid JSON for an event ({exc}; {len(data)} characters)") from exc
    except RecursionError as exc:
        # Arrays or objects nested past the interpreter's recursion limit (about a thousand
        # deep; Go's decoder allows 10,000). A WireFormatError, so that a reader dead-letters or
        # skips the entry: any other exception read as an outage, and a dispatcher retried the
        # same entry for ever.
        raise WireFormatError(
            f"invalid JSON for an event: nested deeper than this decoder reads (about "
            f"{sys.getrecursionlimit()} levels; {len(data)} characters)"
        ) from exc
    if not isinstance(doc, dict):
        raise WireFormatError(
            f"an event must be a JSON object with keys like 'RequestID', got {_kind(doc)}"
        )
    raw: dict[str, Any] = {}
    for key, value in doc.items():
        # Go matches names under Unicode simple case folding: besides ASCII, the long s folds
        # to "s" and the Kelvin sign to "k" (which `lower()` already gives).
        field = _FIELDS.get(key.lower() if key.isascii() else key.lower().replace("\u017f", "s"))
        if field is not None:
            raw[field] = value
    kwargs: dict[str, Any] = {
        "request_id": "",
        "method": "",
        "path": "",
        "status": 0,
        "duration": 0,
        "response_headers": None,
        "response_body": None,
        "request_body": None,
        "log_id": 0,
    }
    for field, value in raw.items():
        go = _GO_NAMES[field]
        if field in ("log_id", "status", "duration"):
            kwargs[field] = _int(go, value)
        elif field in ("request_id", "method", "path"):
            kwargs[field] = _str(go, value)
        elif field == "response_headers":
            kwargs[field] = _headers(value)
        else:
            kwargs[field] = _bytes(go, value)
    _replace_surrogates(kwargs)
    # Checked for type above, and not for range: what Go wrote is read as it is (a status of
    # -1, a negative duration), as Go's own decoder reads it.
    return build(
        kwargs["request_id"],
        kwargs["method"],
        kwargs["path"],
        kwargs["status"],
        kwargs["duration"],
        kwargs["response_headers"],
        kwargs["response_body"],
        kwargs["request_body"],
        kwargs["log_id"],
    )
