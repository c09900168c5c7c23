"""EventBusMiddleware end to end: a Starlette app served by uvicorn on 127.0.0.1, driven by httpx.

Every scenario is sent to two servers of the same application, one without and one with the
middleware: the responses must be byte-for-byte identical (apart from uvicorn's `date` header),
and the instrumented one must publish exactly one correct event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from eventbus_core import BusStats, Event, EventBusMiddleware
from eventbus_core.asgi import DEFAULT_MAX_REQUEST_BODY, DEFAULT_MAX_RESPONSE_BODY
from eventbus_memory import InMemoryEventBus

pytestmark = pytest.mark.timeout(30)

SSE_CHUNKS = [
    b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n',
    b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n',
    b'data: {"choices":[{"delta":{"content":"lo"}}]}\n\n',
    b"data: [DONE]\n\n",
]


class Gates:
    """Lets a test hold a streaming handler between chunks, to prove nothing is buffered."""

    def __init__(self) -> None:
        self.first_chunk_read = threading.Event()
        self.stream_closed = threading.Event()


def make_app(gates: Gates) -> Starlette:
    """The application under test: a tiny chat-completions imitation."""

    async def completions(request: Request) -> Response:
        body = await request.body()
        payload = json.loads(body)
        if payload.get("stream"):

            async def sse() -> AsyncIterator[bytes]:
                yield SSE_CHUNKS[0]
                # Wait until the client has seen the first chunk: with buffering, it never would.
                await asyncio.to_thread(gates.first_chunk_read.wait, 10)
                for chunk in SSE_CHUNKS[1:]:
                    yield chunk

            return StreamingResponse(
                sse(), media_type="text/event-stream", headers={"x-request-id": "resp-sse"}
            )
        return JSONResponse(
            {"id": "chatcmpl-1", "model": payload["model"], "echo_len": len(body)},
            headers={"set-cookie": "session=secret", "x-trace": "a"},
        )

    async def endless(request: Request) -> StreamingResponse:
        async def sse() -> AsyncIterator[bytes]:
            try:
                n = 0
                while True:
                    yield f"data: {n}\n\n".encode()
                    n += 1
                    await asyncio.sleep(0.01)  # pacing of the fake model, not synchronisation
            finally:
                gates.stream_closed.set()

        return StreamingResponse(sse(), media_type="text/event-stream")

    async def fail(request: Request) -> Response:
        return JSONResponse({"error": "upstream failed"}, status_code=500)

    async def crash(request: Request) -> Response:
        raise RuntimeError("boom")

    async def big(request: Request) -> Response:
        body = await request.body()
        return Response(body * 5, media_type="application/octet-stream")

    async def health(request: Request) -> Response:
        return Response("ok")

    async def cached(request: Request) -> Response:
        return JSONResponse({"cached": True}, headers={"X-PROXY-CACHE": "HIT"})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/v1/endless", endless),
            Route("/v1/fail", fail),
            Route("/v1/crash", crash),
            Route("/v1/big", big, methods=["POST"]),
            Route("/health", health),
            Route("/v1/cached", cached),
        ]
    )


# uvicorn's own stack, and the one `uvicorn[standard]` brings (and uvicorn then picks): they
# deliver the same ASGI messages differently (how a body is split, when a disconnect shows).
STACKS: dict[str, tuple[str, str]] = {
    "h11-asyncio": ("h11", "asyncio"),
    "httptools-uvloop": ("httptools", "uvloop"),
}


@contextmanager
def serve(
    app: Any,
    *,
    lifespan: Literal["auto", "on", "off"] = "off",
    stack: str = "h11-asyncio",
) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yield its base URL."""
    # IPPROTO_TCP so that asyncio sets TCP_NODELAY on the accepted connections.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    http, loop = STACKS[stack]
    config = uvicorn.Config(app, log_level="warning", lifespan=lifespan, http=http, loop=loop)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            threading.Event().wait(0.01)  # polling uvicorn's start flag; nothing to await
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


class Pair:
    """The same application served twice: plain and with the middleware."""

    def __init__(self, plain: str, instrumented: str, bus: InMemoryEventBus) -> None:
        self.plain = plain
        self.instrumented = instrumented
        self.bus = bus
        self.sub = bus.subscribe("test")

    def both(self, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, httpx.Response]:
        """Send the same request to both servers."""
        responses = []
        for base in (self.plain, self.instrumented):
            with httpx.Client(base_url=base, timeout=10) as client:
                responses.append(client.request(method, path, **kwargs))
        return responses[0], responses[1]

    def event(self) -> Event:
        """The one event of the last request; fails if there are more."""
        event = self.sub.get(timeout=10)
        self.bus.flush(timeout=5)
        extra = self.sub.get_batch(timeout=0)
        assert extra == [], f"expected one event, got more: {extra}"
        return event


def same_response(a: httpx.Response, b: httpx.Response) -> None:
    """Assert two responses are identical on the wire, apart from the `date` header."""
    assert a.status_code == b.status_code
    assert [(k, v) for k, v in a.headers.raw if k.lower() != b"date"] == [
        (k, v) for k, v in b.headers.raw if k.lower() != b"date"
    ]
    assert a.content == b.content


@pytest.fixture(scope="module")
def gates() -> Gates:
    return Gates()


@pytest.fixture(scope="module", params=list(STACKS))
def pair(gates: Gates, request: pytest.FixtureRequest) -> Iterator[Pair]:
    if request.param == "httptools-uvloop":
        pytest.importorskip("httptools")
        pytest.importorskip("uvloop")
    bus = InMemoryEventBus(buffer_size=1000)
    plain_app = make_app(gates)
    app = make_app(gates)
    app.add_middleware(EventBusMiddleware, bus=bus, exclude_paths=["/health"])
    with (
        serve(plain_app, stack=request.param) as plain,
        serve(app, stack=request.param) as instrumented,
    ):
        yield Pair(plain, instrumented, bus)
    bus.stop()


def test_json_request(pair: Pair) -> None:
    body = json.dumps({"model": "gpt-4o", "messages": []}).encode()
    plain, resp = pair.both(
        "POST",
        "/v1/chat/completions?debug=1",
        content=body,
        headers={"X-Request-ID": "req-json", "content-type": "application/json"},
    )
    same_response(plain, resp)
    evt = pair.event()
    assert (evt.request_id, evt.method, evt.path, evt.status) == (
        "req-json",
        "POST",
        "/v1/chat/completions?debug=1",
        200,
    )
    assert evt.request_body == body
    assert evt.response_body == resp.content
    assert evt.duration_ns > 0
    # Go's canonical header names, credentials masked, everything else as sent.
    assert evt.response_headers is not None
    assert evt.response_headers["Content-Type"] == ("application/json",)
    assert evt.response_headers["Content-Length"] == (str(len(resp.content)),)
    assert evt.response_headers["X-Trace"] == ("a",)
    assert evt.response_headers["Set-Cookie"] == ("[REDACTED]",)
    assert Event.from_json(evt.to_json()) == evt


def test_streamed_chat_completion_passes_chunk_by_chunk(pair: Pair, gates: Gates) -> None:
    body = json.dumps({"model": "gpt-4o", "stream": True}).encode()
    received: list[list[bytes]] = []
    for base in (pair.plain, pair.instrumented):
        gates.first_chunk_read.clear()
        chunks: list[bytes] = []
        with (
            httpx.Client(base_url=base, timeout=10) as client,
            client.stream("POST", "/v1/chat/completions", content=body) as resp,
        ):
            assert resp.status_code == 200
            for chunk in resp.iter_raw():
                chunks.append(chunk)
                # The handler holds the rest back until we have seen the first chunk.
                gates.first_chunk_read.set()
        received.append(chunks)
    assert b"".join(received[0]) == b"".join(received[1]) == b"".join(SSE_CHUNKS)
    assert received[1][0] == SSE_CHUNKS[0]
    evt = pair.event()
    assert evt.request_id == "resp-sse"  # from the response, as the request had none
    assert evt.status == 200
    assert evt.response_body == b"".join(SSE_CHUNKS)
    assert evt.header("content-type") == "text/event-stream; charset=utf-8"


@pytest.mark.parametrize(("path", "status"), [("/v1/fail", 500), ("/v1/crash", 500)])
def test_server_errors(pair: Pair, path: str, status: int) -> None:
    plain, resp = pair.both("GET", path)
    same_response(plain, resp)
    assert resp.status_code == status
    evt = pair.event()
    assert (evt.path, evt.status) == (path, status)
    assert len(evt.request_id) == 36  # generated: neither request nor response carried one


def test_client_disconnects_mid_stream(pair: Pair, gates: Gates) -> None:
    gates.stream_closed.clear()
    with (
        httpx.Client(base_url=pair.instrumented, timeout=10) as client,
        client.stream("GET", "/v1/endless", headers={"x-request-id": "req-gone"}) as resp,
    ):
        first = next(resp.iter_raw())
    assert first.startswith(b"data: 0\n\n")
    evt = pair.event()
    assert gates.stream_closed.wait(10)
    assert (evt.request_id, evt.status, evt.path) == ("req-gone", 200, "/v1/endless")
    assert evt.response_body is not None
    assert evt.response_body.startswith(first)


def test_bodies_larger_than_limits(pair: Pair) -> None:
    body = bytes(range(256)) * 400  # 100 KiB; the response is 500 KiB
    plain, resp = pair.both("POST", "/v1/big", content=body)
    same_response(plain, resp)
    assert resp.content == body * 5
    evt = pair.event()
    assert evt.request_body == body[:DEFAULT_MAX_REQUEST_BODY]
    assert evt.response_body == (body * 5)[:DEFAULT_MAX_RESPONSE_BODY]


def test_excluded_paths_and_cache_hits_publish_nothing(pair: Pair) -> None:
    for path in ("/health", "/v1/cached"):
        plain, resp = pair.both("GET", path)
        same_response(plain, resp)
    # A request after them: the only event that arrives is its own.
    pair.both("GET", "/v1/fail", headers={"x-request-id": "after"})
    assert pair.event().request_id == "after"


class FlushRecordingBus:
    """A bus whose flush() is recorded (and may say it ran out of time)."""

    def __init__(self, delivered: bool = True) -> None:
        self.flushes: list[float | None] = []
        self.delivered = delivered
        self.events: list[Event] = []

    def publish(self, event: Event) -> None:
        self.events.append(event)

    def flush(self, timeout: float | None = 5.0) -> bool:
        self.flushes.append(timeout)
        return self.delivered


async def run_lifespan(app: Any) -> list[str]:
    """Drive the ASGI lifespan (startup, then shutdown) as a server does; the messages the app
    sent, with "flushed:<n>" noted where the bus had been flushed n times by then."""
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for message in ({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}):
        incoming.put_nowait(message)
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return await incoming.get()

    async def send(message: dict[str, Any]) -> None:
        sent.append(f"{message['type']} flushed:{len(app.bus.flushes)}")

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    return sent


def test_the_bus_delivers_before_the_server_hears_the_shutdown_is_complete(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = FlushRecordingBus()
    app = EventBusMiddleware(Starlette(), bus=bus, shutdown_flush_timeout=2.5)
    assert asyncio.run(run_lifespan(app)) == [
        "lifespan.startup.complete flushed:0",
        "lifespan.shutdown.complete flushed:1",
    ]
    # No request was being served: the flush is given the whole of it.
    assert bus.flushes == [2.5]

    late = EventBusMiddleware(Starlette(), bus=FlushRecordingBus(delivered=False))
    asyncio.run(run_lifespan(late))
    assert "shutdown_flush_timeout" in caplog.text  # what was not delivered in time is said
    assert "not handed on yet" not in caplog.text  # this bus has no stats(): no count made up

    class Holding(FlushRecordingBus):
        def stats(self) -> BusStats:
            return BusStats(len(self.events), 0, queue_depth=7)

    caplog.clear()
    asyncio.run(run_lifespan(EventBusMiddleware(Starlette(), bus=Holding(delivered=False))))
    assert "shutdown_flush_timeout): 7 event(s) not handed on yet (at most that many" in (
        caplog.text
    )

    off = EventBusMiddleware(Starlette(), bus=FlushRecordingBus(), shutdown_flush_timeout=0)
    asyncio.run(run_lifespan(off))
    assert off.bus.flushes == []  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="shutdown_flush_timeout"):
        EventBusMiddleware(Starlette(), bus=bus, shutdown_flush_timeout=-1)


def test_a_request_the_server_cuts_at_shutdown_publishes_before_the_lifespan_stops_the_bus(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # uvicorn's graceful-shutdown timeout cancels a streamed response and starts the lifespan's
    # shutdown at once; the request published as it unwound, into the bus the lifespan was
    # stopping: refused, and said nowhere (trial 267).
    bus = InMemoryEventBus()
    sub = bus.subscribe("test")
    streaming = threading.Event()

    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first"
            streaming.set()
            await asyncio.sleep(30)  # cut by the server's shutdown
            yield b"never"

        return StreamingResponse(chunks())

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(bus.stop, 5)  # as docs/examples/fastapi_app.py

    inner = Starlette(routes=[Route("/stream", stream)], lifespan=lifespan)
    app = EventBusMiddleware(inner, bus=bus)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=0.2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    received: list[bytes] = []

    def client() -> None:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/stream"
        with contextlib.suppress(httpx.HTTPError), httpx.stream("GET", url, timeout=10) as r:
            received.extend(r.iter_raw())

    reader = threading.Thread(target=client, daemon=True)
    try:
        while not server.started:
            assert thread.is_alive(), "uvicorn did not start"
            threading.Event().wait(0.01)
        reader.start()
        assert streaming.wait(10)
        server.should_exit = True
        thread.join(10)
    finally:
        server.should_exit = True
        sock.close()
    reader.join(10)
    assert b"".join(received).startswith(b"first")
    assert bus.stats().dropped == 0
    events = list(sub)  # the stop ended the subscription: this returns
    assert [(e.path, e.status, e.response_body) for e in events] == [("/stream", 200, b"first")]
    assert "after stop() had begun" not in caplog.text


def test_a_request_still_served_at_the_shutdown_holds_it_within_the_one_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A server that starts the lifespan's shutdown without cancelling a request: the wait for
    # it takes half of `shutdown_flush_timeout` at most, the bus's flush the rest, and the
    # request is counted.
    bus = FlushRecordingBus()
    hold = asyncio.Event()

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await Starlette()(scope, receive, send)
            return
        await hold.wait()

    app = EventBusMiddleware(inner, bus=bus, shutdown_flush_timeout=0.6)

    async def main() -> tuple[list[str], float]:
        request = asyncio.create_task(
            app({"type": "http", "method": "GET", "path": "/", "headers": []}, None, None)
        )
        await asyncio.sleep(0)
        started = asyncio.get_running_loop().time()
        sent = await run_lifespan(app)
        took = asyncio.get_running_loop().time() - started
        hold.set()
        await request
        return sent, took

    sent, took = asyncio.run(main())
    assert sent[-1].startswith("lifespan.shutdown.complete")
    assert 0.25 < took < 2.0
    # Half the budget for the request at most; the flush gets what that wait left.
    assert len(bus.flushes) == 1 and 0.25 <= (bus.flushes[0] or 0) <= 0.31, bus.flushes
    assert "1 request(s) still being served 0.3 s into the lifespan's shutdown" in caplog.text
