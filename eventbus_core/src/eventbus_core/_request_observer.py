"""What the ASGI and the WSGI middleware share: their options, the event's header copy, the
request id, body capture and their own failures.

Kept free of asyncio and of either protocol, so that `eventbus_core.wsgi` imports no event loop
machinery and neither middleware carries a copy of the other's rules.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

from eventbus_core._event import Event
from eventbus_core._log import get_logger
from eventbus_core.redact._redact import SENSITIVE_HEADERS, is_credential_header

__all__ = [
    "DEFAULT_MAX_REQUEST_BODY",
    "DEFAULT_MAX_RESPONSE_BODY",
    "EventPublisher",
    "RequestObserver",
    "canonical_header_name",
    "check_app",
    "join_chunks",
    "keep_chunk",
    "name_info",
    "new_request_id",
    "text_name_info",
]

DEFAULT_MAX_REQUEST_BODY: Final = 64 * 1024
"""Request body bytes kept in the event by default (as the Go llm-proxy)."""
DEFAULT_MAX_RESPONSE_BODY: Final = 256 * 1024
"""Response body bytes kept in the event by default (as the Go llm-proxy)."""

log = get_logger("eventbus.middleware")

# A header name (RFC 9110 token): what a request or response header can be called.
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# A header value as servers send it (RFC 9110 field-value, Latin-1): visible characters, with
# spaces and tabs only between them.
_HEADER_VALUE: Final = re.compile(
    r"[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?"
)


class EventPublisher(Protocol):
    """What the middleware needs of a bus: `publish()`. Every `EventBus` is one."""

    def publish(self, event: Event) -> None:
        """Hand `event` over without blocking."""


# Header names seen on responses, raw bytes -> Go's canonical form. Bounded so that an
# application echoing arbitrary header names cannot grow it without limit.
_CANONICAL: dict[bytes | str, str] = {}
_CANONICAL_MAX: Final = 2048


def canonical_header_name(raw: bytes | str) -> str:
    """Return `raw` in Go's canonical MIME header form (`x-request-id` -> `X-Request-Id`).

    Go's `http.Header.Get` canonicalises the name it looks up, so a Go consumer only finds
    headers stored under canonical keys; ASGI servers deliver them in lower case. A `str`
    (a header name of an `Event` built by hand) is taken too.
    """
    name = _CANONICAL.get(raw)
    if name is None:
        text = raw if isinstance(raw, str) else raw.decode("latin-1")
        # Go leaves names with spaces or other non-token characters untouched.
        if all(c.isalnum() or c == "-" for c in text) and text.isascii():
            name = "-".join(part[:1].upper() + part[1:].lower() for part in text.split("-"))
        else:
            name = text
        if len(_CANONICAL) < _CANONICAL_MAX:
            _CANONICAL[raw] = name
    return name


# Raw response header name -> (Go canonical name, lower-case raw name, whether it names a
# credential by its words, `is_credential_header`): one lookup per header instead of
# re-deriving them per request. Bounded like _CANONICAL.
NAMES: dict[bytes, tuple[str, bytes, bool]] = {}


def name_info(raw: bytes) -> tuple[str, bytes, bool]:
    """`(canonical name, lower-case name, credential)` of the raw header name `raw`,
    remembered in `NAMES`."""
    key = canonical_header_name(raw)
    info = (key, raw.lower(), is_credential_header(key))
    if len(NAMES) < _CANONICAL_MAX:
        NAMES[raw] = info
    return info


# The same for names as WSGI gives them (native strings), so that the checks both middleware
# make (masking, request id, cache hit) compare the same lower-case bytes.
TEXT_NAMES: dict[str, tuple[str, bytes, bool]] = {}


def text_name_info(name: str) -> tuple[str, bytes, bool]:
    """`name_info()` of a native-string header name, remembered in `TEXT_NAMES`."""
    info = name_info(name.encode("latin-1"))
    if len(TEXT_NAMES) < _CANONICAL_MAX:
        TEXT_NAMES[name] = info
    return info


# Request ids are made in batches: formatting one UUID string costs about 1 us in Python
# (`os.urandom` is a system call, then the hex slicing), which was the largest single step of
# the middleware's work for a request that brings no id. A batch formats `_ID_BATCH` ids with
# C-level copies, about a third of that per id. Each batch is fresh randomness, so ids taken by
# concurrent threads never repeat; a forked child drops the batch it inherited (`_forget_ids`),
# or it would hand out the same ids as its parent.
_ID_BATCH: Final = 256
_ID_RECORD: Final = 37  # 36 characters and a space
# Where each of a UUID's 32 hex digits goes in its record (the dashes sit at 8, 13, 18 and 23).
_ID_DIGIT_AT: Final = tuple(j + (j >= 8) + (j >= 12) + (j >= 16) + (j >= 20) for j in range(32))
# Digit 12 is the version (always 4, already in the template); digit 16 carries the variant.
_ID_COPIED: Final = tuple((at, j) for j, at in enumerate(_ID_DIGIT_AT) if j not in (12, 16))
_ID_TEMPLATE: Final = b"00000000-0000-4000-0000-000000000000 " * _ID_BATCH
# RFC 4122 variant: the top two bits of digit 16 are 10, so it is one of 8, 9, a, b.
_ID_VARIANT: Final = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")
_ids: list[str] = []


def _id_batch() -> list[str]:
    digits = memoryview(os.urandom(16 * _ID_BATCH).hex().encode("ascii"))
    records = bytearray(_ID_TEMPLATE)
    view = memoryview(records)
    for at, j in _ID_COPIED:
        view[at::_ID_RECORD] = digits[j::32]
    view[_ID_DIGIT_AT[16] :: _ID_RECORD] = bytes(digits[16::32]).translate(_ID_VARIANT)
    return records.decode("ascii").split()


def new_request_id() -> str:
    """Return a random RFC 4122 version 4 UUID string, as Go's `uuid.New().String()`.

    From `os.urandom`, like `uuid.uuid4()`, at under a third of its cost per id: ids are
    formatted in batches (see `_ID_BATCH`).
    """
    try:
        return _ids.pop()
    except IndexError:
        # Take ours from the new batch before sharing it: another thread may empty `_ids`
        # between the two steps.
        batch = _id_batch()
        made = batch.pop()
        _ids.extend(batch)
        return made


def _forget_ids() -> None:
    _ids.clear()


os.register_at_fork(after_in_child=_forget_ids)


def keep_chunk(chunks: list[bytes], body: Any, room: int) -> int:
    """Append up to `room` bytes of `body` to `chunks`; return the room left."""
    if type(body) is not bytes:
        # bytearray / memoryview: the sender may reuse its buffer, so keep a copy.
        body = bytes(body)
    if len(body) > room:
        body = body[:room]
    chunks.append(body)
    return room - len(body)


def join_chunks(chunks: list[bytes]) -> bytes | None:
    """The kept chunks as one body, or None when nothing was kept."""
    if not chunks:
        return None
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


def check_app(app: object, kind: str) -> None:
    """Refuse an `app` that cannot be the application a middleware wraps.

    Raises:
        TypeError: `app` is not callable (None, a string, ...): every request would fail.
    """
    if not callable(app):
        raise TypeError(
            f"app must be the {kind} application to wrap (a callable), got {type(app).__name__}"
        )


def _names(label: str, given: Iterable[str]) -> list[str]:
    """`given` as a list of str; a lone string is refused (it would be read letter by letter)."""
    if given is None:
        raise TypeError(f"{label} must be a list of str (empty: none), not None")
    if isinstance(given, str | bytes):
        raise TypeError(f"{label} must be a list of str, not one string: {label}=[{given!r}]")
    names = list(given)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{label} must hold str, got {name!r} ({type(name).__name__})")
    return names


class RequestObserver:
    """The options and bookkeeping every eventbus middleware has (see `EventBusMiddleware` for
    what each option means).

    Raises:
        ValueError: a limit is negative, or an excluded path does not start with '/'.
        TypeError: `bus` has no `publish()`; a list option is one string or None, or holds a
            non-str or an empty name; `request_id_header` is not a header name; a flag is not
            a bool; `request_id_factory` is not callable.
    """

    __slots__ = (
        "__weakref__",
        "_cache_header",
        "_exclude",
        "_exclude_exact",
        "_exclude_prefixes",
        "_id_header",
        "_id_header_name",
        "_new_id",
        "_sensitive",
        "bus",
        "errors",
        "max_request_body",
        "max_response_body",
        "redact",
        "set_request_id",
        "skip_cache_hits",
    )

    def __init__(
        self,
        bus: EventPublisher,
        *,
        max_request_body: int,
        max_response_body: int,
        exclude_paths: Iterable[str],
        skip_cache_hits: bool,
        request_id_header: str,
        set_request_id: bool,
        request_id_factory: Callable[[], str] | None,
        redact: bool,
        extra_sensitive_headers: Iterable[str],
    ) -> None:
        for label, limit in (
            ("max_request_body", max_request_body),
            ("max_response_body", max_response_body),
        ):
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise ValueError(f"{label} must be an int >= 0 (0 keeps no body), got {limit!r}")
        if not callable(getattr(bus, "publish", None)):
            raise TypeError(
                f"bus must have a publish(event) method (a bus from eventbus_core.create_bus()), "
                f"got {type(bus).__name__}"
            )
        paths = _names("exclude_paths", exclude_paths)
        for path in paths:
            if not path.startswith("/"):
                raise ValueError(
                    f"exclude_paths entries are paths, starting with '/': {path!r} would never "
                    f"match (did you mean {'/' + path!r}?)"
                )
        extra_sensitive = _names("extra_sensitive_headers", extra_sensitive_headers)
        if any(not name.strip() for name in extra_sensitive):
            # It could never match a header. (Odd names, spaces and all, are allowed: an
            # application may send such a header, and its value must still be masked.)
            raise TypeError("extra_sensitive_headers must hold header names, got an empty one")
        if not isinstance(request_id_header, str) or not _TOKEN.fullmatch(request_id_header):
            raise TypeError(
                f"request_id_header must be a header name such as 'X-Request-ID' (letters, "
                f"digits and '-', no spaces), got {request_id_header!r}"
            )
        for label, flag in (
            ("skip_cache_hits", skip_cache_hits),
            ("set_request_id", set_request_id),
            ("redact", redact),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"{label} must be True or False, got {flag!r}")
        if request_id_factory is not None and not callable(request_id_factory):
            raise TypeError(
                f"request_id_factory must be a callable returning a str, "
                f"got {type(request_id_factory).__name__}"
            )
        self.bus = bus
        self.max_request_body = max_request_body
        self.max_response_body = max_response_body
        self._exclude_exact = frozenset(p for p in paths if not p.endswith("*"))
        self._exclude_prefixes = tuple(p[:-1] for p in paths if p.endswith("*"))
        self._exclude = bool(paths)
        self.skip_cache_hits = skip_cache_hits
        self._cache_header = b"x-proxy-cache"
        self._id_header_name = request_id_header
        self._id_header = request_id_header.lower().encode("latin-1")
        self.set_request_id = set_request_id
        self._new_id: Callable[[], str] = (
            self._guarded(request_id_factory) if request_id_factory is not None else new_request_id
        )
        self.redact = redact
        # Lower-case raw names whose values are masked: looked up per header on the hot path.
        self._sensitive: frozenset[bytes] = (
            frozenset(
                h.strip().lower().encode("latin-1") for h in (*SENSITIVE_HEADERS, *extra_sensitive)
            )
            if redact
            else frozenset()
        )
        self.errors = 0
        """Failures inside the middleware (or `bus.publish`) so far; requests were unaffected."""

    def _guarded(self, factory: Callable[[], object]) -> Callable[[], str]:
        """`factory` as the request id maker: its result as a str (the event is built without
        checks, and a factory may return a UUID), or a UUID4 when it raises, counted as an
        error, so that the request still gets its event."""

        def make_id() -> str:
            try:
                given = factory()
                if given is None:
                    raise ValueError("request_id_factory returned None")
                # bytes as a header value is: str() would make "b'...'" of it.
                made = given.decode("latin-1") if isinstance(given, bytes) else str(given)
                if not _HEADER_VALUE.fullmatch(made):
                    # It may go out as a response header (set_request_id): CR or LF would
                    # inject headers, and the server refuses anything else here.
                    raise ValueError(
                        f"request_id_factory returned {made[:80]!r}, which cannot be a header "
                        f"value (empty, control characters, beyond Latin-1, or spaces at an end)"
                    )
            except Exception:
                self._failed("request_id_factory")
                return new_request_id()
            return made

        return make_id

    def _excluded(self, path: str, prefix: str = "") -> bool:
        """Whether `path` (the full path) is excluded, or, under a mount or a proxy's prefix
        (`prefix`: ASGI's `root_path`, WSGI's `SCRIPT_NAME`), the path within the app is:
        `exclude_paths=["/health"]` missed `/api/health` behind `--root-path /api` (trial 215)."""
        if self._excluded_path(path):
            return True
        if prefix and path.startswith(prefix) and path[len(prefix) : len(prefix) + 1] in "/":
            return self._excluded_path(path[len(prefix) :] or "/")
        return False

    def _excluded_path(self, path: str) -> bool:
        if path in self._exclude_exact:
            return True
        return bool(self._exclude_prefixes) and path.startswith(self._exclude_prefixes)

    def _failed(self, what: str) -> None:
        self.errors += 1
        if self.errors == 1:
            log.exception(
                "eventbus middleware: %s failed; the request is unaffected "
                "(further failures are logged at debug level)",
                what,
            )
        else:
            log.debug("eventbus middleware: %s failed", what, exc_info=True)
