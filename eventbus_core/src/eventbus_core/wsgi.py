"""`EventBusWSGIMiddleware`: one `Event` per HTTP request of any WSGI application.

Pure WSGI (PEP 3333, no framework import), so it wraps Flask, Django, Falcon, Bottle or a bare
WSGI callable, under gunicorn (sync or thread workers), uWSGI, waitress or wsgiref:

    app.wsgi_app = EventBusWSGIMiddleware(app.wsgi_app, bus=bus)   # Flask
    application = EventBusWSGIMiddleware(get_wsgi_application(), bus=bus)   # Django

It observes the request's `wsgi.input`, the application's `start_response` and the response
iterable as they pass, handing every chunk on unchanged and at once, and publishes the event
when the server has taken the last chunk (or closes the response early). `bus.publish()` only
appends to a buffer; a background thread of the bus does the I/O.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from types import TracebackType
from typing import Any

from eventbus_core._event import Event
from eventbus_core._overrun import run_in_daemon
from eventbus_core._request_observer import (
    DEFAULT_MAX_REQUEST_BODY,
    DEFAULT_MAX_RESPONSE_BODY,
    TEXT_NAMES,
    EventPublisher,
    RequestObserver,
    canonical_header_name,
    check_app,
    join_chunks,
    keep_chunk,
    log,
    text_name_info,
)
from eventbus_core.redact._redact import MASK

__all__ = [
    "Environ",
    "EventBusWSGIMiddleware",
    "StartResponse",
    "WSGIApp",
    "stop_buses",
]

Environ = dict[str, Any]
"""A WSGI environ."""
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], object]]
"""The WSGI `start_response(status, headers, exc_info=None) -> write` callable."""
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
"""A WSGI application."""


def _environ_key(header: str) -> str:
    """Where WSGI puts a request header: `X-Request-ID` -> `HTTP_X_REQUEST_ID`."""
    return "HTTP_" + header.upper().replace("-", "_")


def _event_path(environ: Environ) -> str:
    """`SCRIPT_NAME` + `PATH_INFO` (+ `?QUERY_STRING`), as the ASGI middleware records `path`:
    WSGI hands the path over as bytes decoded as latin-1, so non-ASCII is decoded again as
    UTF-8."""
    path: str = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    if not path.isascii():
        path = path.encode("latin-1", "replace").decode("utf-8", "replace")
    query = environ.get("QUERY_STRING")
    if query:
        return f"{path}?{query}"
    return path


class EventBusWSGIMiddleware(RequestObserver):
    """Publish one `Event` per HTTP request once the server has taken the whole response.

    The WSGI counterpart of `EventBusMiddleware` (ASGI), with the same options and the same
    event: request id, method, path with query string, status, the exact duration in
    nanoseconds, the response headers (credentials masked) and the request and response bodies
    up to the limits. The application and the server see the same bytes, headers and response
    object as without it.

    When it publishes:
        - when the server has taken the last chunk of the response;
        - when the server closes the response before that (the client went away): with the
          part of the body handed over until then;
        - when the application raised: with the status already sent, or 500 (what the server
          answers) and no headers if no chunk, even an empty one, had been handed over. The
          exception propagates unchanged.
        - for a response returned as the server's `wsgi.file_wrapper` (a file the server may
          send with `sendfile`): at once, without the response body. The file goes to the
          server untouched, so the server keeps its fast path.

    What it skips: excluded paths, and responses marked as cache hits (`X-PROXY-CACHE: hit`)
    unless `skip_cache_hits=False`.

    It never raises into the application: a failure of its own (or of `bus.publish`) is logged
    once, counted in `errors`, and the request carries on.

    There is no shutdown event in WSGI: stop the bus when the worker ends, e.g. with
    `stop_buses()` from gunicorn's `worker_exit` hook.

    Args:
        app: The WSGI application to wrap.
        bus: Where events go (`publish()` must not block, as every eventbus backend's).
        max_request_body: Request body bytes kept in the event (0: none). The application
            always reads the whole body; the event holds the first bytes of what it read.
        max_response_body: Response body bytes kept in the event (0: none).
        exclude_paths: Paths (`SCRIPT_NAME` + `PATH_INFO`, or `PATH_INFO` alone) to publish
            nothing for; an entry ending in `*` excludes every path starting with the text
            before it.
        skip_cache_hits: Publish nothing for responses with header `X-PROXY-CACHE: hit`.
        request_id_header: The header carrying the request id, looked up on the request first,
            then on the response. Without either, an id is generated.
        set_request_id: Add the request id header to responses that lack it. Off by default:
            the response is otherwise never changed.
        request_id_factory: Makes an id when neither request nor response has one (UUID4).
        redact: Mask the values of credential headers in the event.
        extra_sensitive_headers: Further header names to mask.

    Raises:
        ValueError: a limit is negative, or an excluded path does not start with '/'.
        TypeError: `app` is not callable; `bus` has no `publish()`; a list option is one
            string or None, or holds a non-str; `extra_sensitive_headers` holds an empty name;
            `request_id_header` is not a header name; a flag is not a bool;
            `request_id_factory` is not callable.
    """

    __slots__ = ("_environ_id_key", "app")

    def __init__(
        self,
        app: WSGIApp,
        bus: EventPublisher,
        *,
        max_request_body: int = DEFAULT_MAX_REQUEST_BODY,
        max_response_body: int = DEFAULT_MAX_RESPONSE_BODY,
        exclude_paths: Iterable[str] = (),
        skip_cache_hits: bool = True,
        request_id_header: str = "X-Request-ID",
        set_request_id: bool = False,
        request_id_factory: Callable[[], str] | None = None,
        redact: bool = True,
        extra_sensitive_headers: Iterable[str] = (),
    ) -> None:
        check_app(app, "WSGI")
        super().__init__(
            bus,
            max_request_body=max_request_body,
            max_response_body=max_response_body,
            exclude_paths=exclude_paths,
            skip_cache_hits=skip_cache_hits,
            request_id_header=request_id_header,
            set_request_id=set_request_id,
            request_id_factory=request_id_factory,
            redact=redact,
            extra_sensitive_headers=extra_sensitive_headers,
        )
        self.app = app
        self._environ_id_key = _environ_key(request_id_header)
        _MADE.add(self)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request, observing it."""
        script_name = environ.get("SCRIPT_NAME", "")
        if self._exclude and self._excluded(
            script_name + environ.get("PATH_INFO", ""), script_name
        ):
            return self.app(environ, start_response)
        exchange = _Exchange(self, environ, start_response)
        try:
            result = self.app(environ, exchange.start_response)
        except BaseException:
            # Not ours to handle: record what the client gets, then let it propagate.
            exchange.finish(failed=True)
            raise
        try:
            # uWSGI's file_wrapper is a function, not a class: its files are observed like any
            # other response (and sent without sendfile).
            file_wrapper = environ.get("wsgi.file_wrapper")
            sent_by_server = isinstance(file_wrapper, type) and isinstance(result, file_wrapper)
            if sent_by_server:
                exchange.finish(failed=False)
                return result
            if hasattr(result, "__len__"):
                # A server may size the response from len() (one chunk: Content-Length).
                return _ObservedSizedBody(exchange, result)
            return _ObservedBody(exchange, result)
        except Exception:
            self._failed("wrapping the response")
            exchange.finish(failed=False)  # the event without its body, rather than none
            return result


# Every middleware made in this process, for `stop_buses()`: a worker's exit hook cannot find them
# otherwise (a framework keeps the middleware where it likes: Flask in `app.wsgi_app`).
_MADE: weakref.WeakSet[EventBusWSGIMiddleware] = weakref.WeakSet()


def stop_buses(timeout: float | None = None) -> int:
    """Stop the bus of every `EventBusWSGIMiddleware` made in this process, each bus once, so
    that what it holds is delivered before the process ends; for a server's worker-exit hook
    (gunicorn's `worker_exit`), since WSGI has no shutdown event. The buses stop side by side,
    so the whole takes as long as the slowest `stop()`, not their sum. A bus that fails to stop
    is logged, and the others are still stopped.

    Args:
        timeout: Seconds each `stop()` may take; None: the bus's own (`EVENTBUS_STOP_TIMEOUT`).

    Returns:
        How many buses were stopped.
    """
    buses: dict[int, Any] = {}
    for middleware in list(_MADE):
        bus = middleware.bus
        if callable(getattr(bus, "stop", None)):
            buses.setdefault(id(bus), bus)
    # Each stop() is bounded by its own deadline: the calls are waited for without one.
    calls = [
        (bus, run_in_daemon(bus.stop if timeout is None else partial(bus.stop, timeout), "stop"))
        for bus in buses.values()
    ]
    stopped = 0
    for bus, call in calls:
        if call.exception() is None:
            stopped += 1
        else:
            log.error(
                "eventbus middleware: stopping %s failed",
                type(bus).__name__,
                exc_info=call.exception(),
            )
    return stopped


class _Exchange:
    """The observation of one WSGI request: wraps its `wsgi.input`, `start_response` and
    `write`."""

    __slots__ = (
        "_server_write",
        "_start_response",
        "body_started",
        "done",
        "environ",
        "mw",
        "request_id",
        "request_input",
        "resp_chunks",
        "resp_room",
        "response_headers",
        "skip",
        "start_ns",
        "status",
    )

    def __init__(
        self, mw: EventBusWSGIMiddleware, environ: Environ, start_response: StartResponse
    ) -> None:
        self.start_ns = time.perf_counter_ns()
        self.mw = mw
        self.environ = environ
        self._start_response = start_response
        self._server_write: Callable[[bytes], object]  # set by start_response()
        self.status = 0
        self.response_headers: dict[str, tuple[str, ...]] | None = None
        self.request_input: _ObservedInput | None = None
        self.resp_chunks: list[bytes] = []
        # A HEAD response has no body on the wire, whatever the application returns (the
        # server drops it): the event keeps none, as the ASGI middleware's (trial 254).
        self.resp_room = mw.max_response_body if environ.get("REQUEST_METHOD") != "HEAD" else 0
        self.request_id = ""
        self.skip = False
        self.done = False
        self.body_started = False
        if mw.max_request_body:
            stream = environ.get("wsgi.input")
            if stream is not None:
                self.request_input = environ["wsgi.input"] = _ObservedInput(
                    stream, mw.max_request_body
                )

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        """The application's `start_response`: record status and headers, pass them on."""
        if exc_info is not None and self.body_started:
            # The headers went out with the first chunk: the server re-raises `exc_info`
            # (PEP 3333), and the client keeps the status it already has; so does the event.
            self._server_write = self._start_response(status, headers, exc_info)
            return self.write
        try:
            headers = self.on_start(status, headers)
        except Exception:
            self.mw._failed("reading the response headers")
        if exc_info is None:
            self._server_write = self._start_response(status, headers)
        else:
            self._server_write = self._start_response(status, headers, exc_info)
        return self.write

    def write(self, data: bytes) -> object:
        """The legacy `write()` callable `start_response` returns (so only once the server's
        own is set): what it is given is observed like a chunk."""
        self.sent(data)
        return self._server_write(data)

    def sent(self, chunk: bytes) -> None:
        """`chunk` of the response body is being handed to the server."""
        # Even an empty one: PEP 3333 lets a server wait for a non-empty chunk to send the
        # headers, but gunicorn and wsgiref send them with the first chunk of any size (what
        # Flask's `yield ""` idiom relies on), so a failure after it leaves the status sent.
        self.body_started = True
        if chunk and self.resp_room:
            try:
                self.resp_room = keep_chunk(self.resp_chunks, chunk, self.resp_room)
            except Exception:
                self.mw._failed("reading a response chunk")

    def on_start(self, status: str, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Record status and headers (again, if the application starts over with `exc_info`);
        return the headers to send on (a new list if the request id is added)."""
        mw = self.mw
        self.status = int(status[:3])
        self.skip = False
        request_id = self.environ.get(mw._environ_id_key) or ""
        id_header = mw._id_header
        # One pass over the response headers: the event's copy (Go names, credentials masked),
        # the request id if the request had none, and the cache-hit mark.
        event_headers: dict[str, tuple[str, ...]] = {}
        sensitive = mw._sensitive
        names = TEXT_NAMES
        has_id = False
        cache = mw._cache_header
        for name, value in headers:
            key, lname, credential = names.get(name) or text_name_info(name)
            text = value if type(value) is str else str(value)
            if lname == id_header:
                has_id = True
                if not request_id:
                    request_id = text
            elif lname == cache and mw.skip_cache_hits and text.strip().lower() == "hit":
                self.skip = True
            if lname in sensitive or (credential and mw.redact):
                text = MASK
            if key in event_headers:
                event_headers[key] += (text,)  # a repeated header (Set-Cookie, Vary): rare
            else:
                event_headers[key] = (text,)
        if not request_id:
            request_id = self.request_id or mw._new_id()
        self.request_id = request_id
        if mw.set_request_id and not has_id:
            # The application's list stays untouched: send a copy.
            headers = [*headers, (mw._id_header_name, request_id)]
            event_headers[canonical_header_name(id_header)] = (request_id,)
        self.response_headers = event_headers
        return headers

    def finish(self, *, failed: bool) -> None:
        """Publish the event once (after the last chunk, an early close, or a failure)."""
        if self.done:
            return
        self.done = True
        duration = time.perf_counter_ns() - self.start_ns
        mw = self.mw
        try:
            if self.skip:
                return
            status = self.status
            headers = self.response_headers
            if not status or (failed and not self.body_started):
                # No body went out: the server answers 500 for the application, with its own
                # headers (the application's never went out), which this cannot see.
                status = 500
                headers = None
            if not self.request_id:
                self.request_id = self.environ.get(mw._environ_id_key) or mw._new_id()
            event = Event._trusted(
                str(self.request_id),
                str(self.environ.get("REQUEST_METHOD", "")),
                _event_path(self.environ),
                status,
                duration,
                headers,
                join_chunks(self.resp_chunks),
                None if self.request_input is None else join_chunks(self.request_input.chunks),
            )
            mw.bus.publish(event)
        except Exception:
            mw._failed("publishing the event" if not failed else "recording a failed request")


class _ObservedInput:
    """`wsgi.input`, with what the application reads kept (up to the limit) for the event.

    Every call is passed on with the arguments it was given: servers' input streams differ in
    what they accept (`read()` without a size may mean "to the end" or be refused). The kept
    chunks live here, not in the exchange: one call less per read on the request path."""

    __slots__ = ("_stream", "chunks", "room")

    def __init__(self, stream: Any, room: int) -> None:
        self._stream = stream
        self.room = room
        self.chunks: list[bytes] = []

    def _seen(self, data: Any) -> Any:
        """Keep what fits of `data`, just read by the application; return it."""
        if self.room and data:
            try:
                self.room = keep_chunk(self.chunks, data, self.room)
            except Exception:  # a stream that returns no bytes-like object: the app's business
                self.room = 0
        return data

    def read(self, *args: Any) -> Any:
        return self._seen(self._stream.read(*args))

    def readinto(self, buffer: Any) -> Any:
        # Not in PEP 3333, but werkzeug (Flask) reads with it whenever the server's stream
        # has it: without this method, `__getattr__` would hand it the stream's own, unseen.
        count = self._stream.readinto(buffer)
        if self.room and count:
            self._seen(memoryview(buffer)[: min(count, self.room)])
        return count

    def read1(self, *args: Any) -> Any:
        return self._seen(self._stream.read1(*args))

    def readline(self, *args: Any) -> Any:
        return self._seen(self._stream.readline(*args))

    def readlines(self, *args: Any) -> Any:
        lines = self._stream.readlines(*args)
        for line in lines:
            self._seen(line)
        return lines

    def __iter__(self) -> Iterator[Any]:
        for line in self._stream:
            yield self._seen(line)

    def __getattr__(self, name: str) -> Any:
        # Whatever else the server's stream offers (gunicorn's, werkzeug's limits) stays there.
        return getattr(self._stream, name)


class _ObservedBody:
    """The response iterable, handed on chunk by chunk; publishes when it is used up or
    closed, and closes the application's iterable as WSGI requires."""

    __slots__ = ("_exchange", "_result")

    def __init__(self, exchange: _Exchange, result: Iterable[bytes]) -> None:
        self._exchange = exchange
        self._result = result

    def __iter__(self) -> Iterator[bytes]:
        exchange = self._exchange
        try:
            for chunk in self._result:
                exchange.sent(chunk)
                yield chunk
        except GeneratorExit:
            raise
        except BaseException:
            exchange.finish(failed=True)
            raise
        exchange.finish(failed=False)

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._exchange.finish(failed=False)


class _ObservedSizedBody(_ObservedBody):
    """An `_ObservedBody` whose iterable has a length (a list of chunks), which it reports."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._result)  # type: ignore[arg-type]
