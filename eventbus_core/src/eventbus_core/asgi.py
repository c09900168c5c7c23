"""`EventBusMiddleware`: one `Event` per HTTP request of any ASGI application.

Pure ASGI (no framework import), so it wraps Starlette, FastAPI, LiteLLM's proxy or a bare ASGI
callable alike:

    app.add_middleware(EventBusMiddleware, bus=bus)     # Starlette / FastAPI
    app = EventBusMiddleware(app, bus=bus)              # any ASGI application

How it stays off the request's critical path: it wraps `receive` and `send` of the request it
serves and looks at the messages passing by, forwarding every message object unchanged and at
once (no copy, no buffering, no extra task or thread). When the last response message has been
sent it builds the event and hands it to `bus.publish()`, which only appends to a buffer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final

from eventbus_core._bus import check_seconds
from eventbus_core._event import Event
from eventbus_core._request_observer import (
    DEFAULT_MAX_REQUEST_BODY,
    DEFAULT_MAX_RESPONSE_BODY,
    NAMES,
    EventPublisher,
    RequestObserver,
    canonical_header_name,
    check_app,
    join_chunks,
    keep_chunk,
    log,
    name_info,
    new_request_id,
)
from eventbus_core.redact._redact import MASK

__all__ = [
    "DEFAULT_MAX_REQUEST_BODY",
    "DEFAULT_MAX_RESPONSE_BODY",
    "ASGIApp",
    "EventBusMiddleware",
    "EventPublisher",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "canonical_header_name",
    "new_request_id",
]

Scope = MutableMapping[str, Any]
"""An ASGI connection scope."""
Message = MutableMapping[str, Any]
"""An ASGI event message."""
Receive = Callable[[], Awaitable[Message]]
"""The ASGI `receive` callable."""
Send = Callable[[Message], Awaitable[None]]
"""The ASGI `send` callable."""
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI application."""

# A tuple of types, not `list | tuple`: that expression builds a union object each time it
# runs, 130 ns on the request path.
_SEQUENCES: Final = (list, tuple)

# At the lifespan's shutdown, loop turns given at once to requests unwinding, then the poll.
_QUICK_TURNS: Final = 20
_POLL_SECONDS: Final = 0.01

# Lifespan messages after which the server may end the process.
_SHUTDOWN_DONE: Final = frozenset({"lifespan.shutdown.complete", "lifespan.shutdown.failed"})


class EventBusMiddleware(RequestObserver):
    """Publish one `Event` per HTTP request once its response is complete.

    The event carries the request id, method, path with query string, status, the exact
    duration in nanoseconds, the response headers (credentials masked) and the request and
    response bodies up to the limits. Requests and responses pass through unchanged: the
    application sees the bytes the client sent, the client the bytes the application sent, and
    streamed responses go out chunk by chunk as the application sends them.

    When it publishes:
        - after the last body chunk of the response has been handed to the server;
        - when the client disconnected before that: once the application returns, with the
          status and the part of the body sent until the disconnect;
        - when the application raised: with the status already sent, or 500 (what the server
          answers) if it had not started the response. The exception propagates unchanged.

    What it skips: non-HTTP scopes (websocket, lifespan), excluded paths, and responses marked
    as cache hits (`X-PROXY-CACHE: hit`) unless `skip_cache_hits=False`.

    It never raises into the application: a failure of its own (or of `bus.publish`) is logged
    once, counted in `errors`, and the request carries on.

    Args:
        app: The ASGI application to wrap.
        bus: Where events go (`publish()` must not block, as every eventbus backend's).
        max_request_body: Request body bytes kept in the event (0: none). The application
            always receives the whole body; the event holds the first bytes. Only what the
            application reads is seen.
        max_response_body: Response body bytes kept in the event (0: none).
        exclude_paths: Paths to publish nothing for (health checks, metrics); an entry ending in
            `*` excludes every path starting with the text before it. Compared with the full
            path and with the path within the app (without `root_path`).
        skip_cache_hits: Publish nothing for responses with header `X-PROXY-CACHE: hit`.
        request_id_header: The header carrying the request id, looked up on the request first,
            then on the response. Without either, an id is generated.
        set_request_id: Add the request id header to responses that lack it. Off by default:
            the response is otherwise never changed.
        request_id_factory: Makes an id when neither request nor response has one (UUID4).
        redact: Mask the values of credential headers (`eventbus_core.redact._redact`) in the event.
        extra_sensitive_headers: Further header names to mask.
        shutdown_flush_timeout: At the ASGI lifespan's shutdown, seconds the middleware waits at
            most, in all, for the requests still being served to publish (half of it at most,
            before the application hears of the shutdown: a lifespan that stops the bus would
            refuse their events) and for the bus to deliver what it accepted (`bus.flush()`,
            when the bus has one) before the server is told the shutdown is complete: servers
            such as uvicorn end the process right after it, so a bus nobody stopped would lose
            its buffer. 0: no wait.

    Raises:
        ValueError: a limit is negative; `shutdown_flush_timeout` is not a finite number of
            seconds >= 0; an excluded path does not start with '/'.
        TypeError: `app` is not callable; `bus` has no `publish()`; a list option is one
            string or None, or holds a non-str; `extra_sensitive_headers` holds an empty name;
            `request_id_header` is not a header name; a flag is not a bool;
            `request_id_factory` is not callable.
    """

    __slots__ = ("_in_flight", "app", "shutdown_flush_timeout")

    def __init__(
        self,
        app: ASGIApp,
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
        shutdown_flush_timeout: float = 5.0,
    ) -> None:
        check_app(app, "ASGI")
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
        # Finite: the shutdown waits this long at most (inf or nan would wait without end).
        self.shutdown_flush_timeout = check_seconds(
            "shutdown_flush_timeout", shutdown_flush_timeout
        )
        # HTTP requests being served: at the lifespan's shutdown, those the server cut (its
        # graceful-shutdown timeout cancels them) publish as they unwind (`_await_requests`).
        self._in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection, observing it if it is an HTTP request."""
        if scope["type"] == "lifespan":
            await self.app(scope, *self._lifespan(receive, send))
            return
        if scope["type"] != "http" or (
            self._exclude and self._excluded(scope["path"], scope.get("root_path", ""))
        ):
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(self, scope, receive, send)
        self._in_flight += 1
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except BaseException:
            # Not ours to handle: record what the client got, then let it propagate.
            exchange.finish(failed=True)
            raise
        finally:
            self._in_flight -= 1
        if not exchange.done:  # usually done: the last body chunk published it
            exchange.finish(failed=False)

    async def _await_requests(self, deadline: float) -> None:
        """Wait until no request is being served, or until `deadline` (`time.monotonic()`).

        A server's graceful-shutdown timeout (uvicorn's `--timeout-graceful-shutdown`) cancels
        the requests still running and starts the lifespan's shutdown at once; the cancelled
        requests publish their events as they unwind, a few loop turns later. A lifespan that
        calls `bus.stop()` meanwhile made the bus refuse them (trial 267): one streamed
        response's event, gone but for `stats().dropped` of a process about to end."""
        if not self._in_flight or self.shutdown_flush_timeout <= 0:
            return
        turns = 0
        while self._in_flight and time.monotonic() < deadline:
            # A cancelled request unwinds within a few turns of the loop; one still running
            # (a server that cancels nothing) is polled without spinning.
            await asyncio.sleep(0 if turns < _QUICK_TURNS else _POLL_SECONDS)
            turns += 1
        if self._in_flight:
            log.warning(
                "eventbus middleware: %d request(s) still being served %.1f s into the "
                "lifespan's shutdown (half of shutdown_flush_timeout); their events come after the "
                "application's shutdown: a bus it stopped refuses them, and the process may "
                "end before they are published at all",
                self._in_flight,
                self.shutdown_flush_timeout / 2,
            )

    def _lifespan(self, receive: Receive, send: Send) -> tuple[Receive, Send]:
        """`receive` and `send` for the lifespan: the application hears of the shutdown once the
        requests still being served have published (a lifespan that stops the bus would refuse
        them), waiting half of `shutdown_flush_timeout` at most; the server hears that it is
        complete once the bus has delivered what it holds (after that, the process may end at
        once), waiting what is left of it. The application's own shutdown in between is not
        counted (review 271: a slow one left the flush no time)."""
        waited = [0.0]  # seconds the wait for requests took

        async def receive_after_requests() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.shutdown" and self._in_flight:
                began = time.monotonic()
                await self._await_requests(began + self.shutdown_flush_timeout / 2)
                waited[0] = time.monotonic() - began
            return message

        async def send_after_delivering(message: MutableMapping[str, Any]) -> None:
            if message.get("type") in _SHUTDOWN_DONE:
                await self._deliver_before_exit(self.shutdown_flush_timeout - waited[0])
            await send(message)

        return receive_after_requests, send_after_delivering

    async def _deliver_before_exit(self, timeout: float) -> None:
        """Wait up to `timeout` for the bus to deliver what it accepted; say what it has not."""
        flush = getattr(self.bus, "flush", None)
        if not callable(flush) or self.shutdown_flush_timeout <= 0:
            return
        try:
            # In a thread: a bus the loop drains (and writes) needs the loop free meanwhile.
            delivered = await asyncio.to_thread(flush, timeout)
        except Exception:
            self._failed("flushing the bus at shutdown")
            return
        if delivered is False:
            log.warning(
                "eventbus middleware: the bus had not delivered everything %.1f s into the "
                "server's shutdown (shutdown_flush_timeout)%s; what is left is lost if the "
                "process ends now",
                self.shutdown_flush_timeout,
                self._still_held(),
            )

    def _still_held(self) -> str:
        """`: N event(s) not handed on yet`, from the bus's `stats().queue_depth`, if it says.

        An upper bound of what is lost: a write the backend received and has not answered yet
        (a frozen Redis finishing it when it resumes: trial 207) is among them."""
        try:
            depth = self.bus.stats().queue_depth  # type: ignore[attr-defined]
        except Exception:  # a bus without stats(), or one that fails: the warning stands alone
            return ""
        if not isinstance(depth, int):
            return ""
        return (
            f": {depth} event(s) not handed on yet (at most that many: a write still in "
            "progress may deliver some of them)"
        )


class _Exchange:
    """The observation of one HTTP request: wraps its `receive` and `send`."""

    __slots__ = (
        "_receive",
        "_send",
        "disconnected",
        "done",
        "mw",
        "req_chunks",
        "req_room",
        "request_id",
        "resp_chunks",
        "resp_room",
        "response_headers",
        "scope",
        "skip",
        "start_ns",
        "status",
        "trailers",
    )

    def __init__(self, mw: EventBusMiddleware, scope: Scope, receive: Receive, send: Send) -> None:
        self.start_ns = time.perf_counter_ns()
        self.mw = mw
        self.scope = scope
        self._receive = receive
        self._send = send
        self.status = 0
        self.response_headers: dict[str, tuple[str, ...]] | None = None
        self.req_chunks: list[bytes] = []
        self.req_room = mw.max_request_body
        self.resp_chunks: list[bytes] = []
        # A HEAD response has no body on the wire, whatever the application sends (the server
        # drops it): the event keeps none (trial 126), as the WSGI middleware's.
        self.resp_room = mw.max_response_body if scope.get("method") != "HEAD" else 0
        self.request_id = ""
        self.disconnected = False
        self.skip = False
        self.done = False
        self.trailers = False

    async def receive(self) -> Message:
        message = await self._receive()
        try:
            kind = message["type"]
            if kind == "http.request":
                if self.req_room:
                    body = message.get("body")
                    if body:
                        self.req_room = keep_chunk(self.req_chunks, body, self.req_room)
            elif kind == "http.disconnect":
                self.disconnected = True
        except Exception:
            self.mw._failed("reading a request message")
        return message

    async def send(self, message: Message) -> None:
        final = False
        try:
            kind = message["type"]
            if kind == "http.response.body":
                if self.resp_room and not self.disconnected:
                    body = message.get("body")
                    if body:
                        self.resp_room = keep_chunk(self.resp_chunks, body, self.resp_room)
                final = not message.get("more_body", False) and not self.trailers
            elif kind == "http.response.start":
                message = self.on_start(message)
            elif kind == "http.response.trailers":
                final = not message.get("more_trailers", False)
            elif kind == "http.response.pathsend":
                final = True
        except Exception:
            self.mw._failed("reading a response message")
        await self._send(message)
        if final:
            self.finish(failed=False)

    def on_start(self, message: Message) -> Message:
        """Record status and headers; return the message to send (a copy if it had to change)."""
        self.status = message["status"]
        headers = message.get("headers") or ()
        if not isinstance(headers, _SEQUENCES):
            # ASGI allows any iterable: read it once into a list, and send that list on, so the
            # server still gets every header.
            headers = list(headers)
            message = {**message, "headers": headers}
        self.trailers = bool(message.get("trailers", False))
        mw = self.mw
        id_header = mw._id_header
        request_id = self._request_id_from_scope()
        # One pass over the response headers: the event's copy (Go names, credentials masked),
        # the request id if the request had none, and the cache-hit mark.
        event_headers: dict[str, tuple[str, ...]] = {}
        sensitive = mw._sensitive
        names = NAMES
        has_id = False
        cache = mw._cache_header
        for name, value in headers:
            key, lname, credential = names.get(name) or name_info(name)
            if lname == id_header:
                has_id = True
                if not request_id:
                    request_id = value.decode("latin-1")
            elif lname == cache and mw.skip_cache_hits and value.strip().lower() == b"hit":
                self.skip = True
            masked = lname in sensitive or (credential and mw.redact)
            text = MASK if masked else value.decode("latin-1")
            if key in event_headers:
                event_headers[key] += (text,)  # a repeated header (Set-Cookie, Vary): rare
            else:
                event_headers[key] = (text,)
        if not request_id:
            request_id = mw._new_id()
        self.request_id = request_id
        if mw.set_request_id and not has_id:
            # The application's message and header list stay untouched: send a copy.
            message = {**message, "headers": [*headers, (id_header, request_id.encode("latin-1"))]}
            event_headers[canonical_header_name(id_header)] = (request_id,)
        # Tuples, as the Event keeps them: its constructor reuses them instead of copying.
        self.response_headers = event_headers
        return message

    def finish(self, *, failed: bool) -> None:
        """Publish the event once (after the last chunk, a disconnect, or a failure)."""
        if self.done:
            return
        self.done = True
        duration = time.perf_counter_ns() - self.start_ns
        mw = self.mw
        try:
            if self.skip:
                return
            status = self.status
            if not status:
                # No response was started: the server answers 500 for the application.
                status = 500
                if not self.request_id:
                    self.request_id = self._request_id_from_scope() or mw._new_id()
            # Every field's type is known here (ASGI guarantees str method and path, int status;
            # the header dict is this exchange's own and final): skip the checks and copies.
            event = Event._trusted(
                self.request_id,
                self.scope.get("method", ""),
                _full_path(self.scope),
                status,
                duration,
                self.response_headers,
                join_chunks(self.resp_chunks),
                join_chunks(self.req_chunks),
            )
            mw.bus.publish(event)
        except Exception:
            mw._failed("publishing the event" if not failed else "recording a failed request")

    def _request_id_from_scope(self) -> str:
        # ASGI servers deliver request header names in lower case (the spec requires it), so
        # an exact comparison finds it without lower-casing every header of every request.
        id_header = self.mw._id_header
        for name, value in self.scope.get("headers") or ():
            if name == id_header:
                return str(value.decode("latin-1"))
        return ""


def _full_path(scope: Scope) -> str:
    path: str = scope.get("path", "")
    query = scope.get("query_string")
    if query:
        return f"{path}?{query.decode('latin-1')}"
    return path
