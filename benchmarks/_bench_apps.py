"""The apps `bench_middleware.py` serves: endpoints, and each variant's middleware and bus.

Endpoints (`ENDPOINTS`):

- `minimal`: answers at once with a canned completion (~0.3 KB each way): the least work per
  request a server can do, so the largest share any middleware can take;
- `minimal-no-id`: the same without the `X-Request-ID` the other endpoints answer with, so the
  middleware generates each request's id;
- `realistic`: a chat completion as an LLM proxy sees one: ~20 KB request and response bodies,
  the request parsed and the response encoded, and ~1.5 ms of CPU work in the handler
  (`REALISTIC_WORK`, measured with the thread's CPU clock, so a busy machine does not shorten it);
- `proxy`: forwards the request upstream with httpx (a stand-in LLM API) and hands the answer
  back.

Variants (`VARIANTS`): `plain` (no middleware), `null` (EventBusMiddleware on a discarding bus),
`memory` (InMemoryEventBus drained by a thread, `EVENTBUS_PUBLISH_PATH=thread`, read by a
consumer thread), `memory-asyncio` (InMemoryEventBus drained by the server's event loop, read
by a consumer task on it), `redis` (RedisEventBus log, written from the server's event loop
through an asyncio connection: the default path), `redis-thread` (the same bus written by its
thread, `EVENTBUS_PUBLISH_PATH=thread`), `otel` (OpenTelemetry's ASGI middleware,
every request a span, BatchSpanProcessor exporting to a discarding exporter), `sentry`
(sentry-sdk's ASGI middleware with tracing on every request, a transport that discards).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from eventbus_core import EventBusMiddleware
from eventbus_memory import InMemoryEventBus

try:
    from eventbus_redis import RedisEventBus

    HAVE_REDIS_BUS = True
except ImportError:  # the Redis backend is optional: its variant is skipped without it
    HAVE_REDIS_BUS = False

PATH: Final = "/v1/chat/completions"
REDIS_URL: Final = os.environ.get("EVENTBUS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
ENDPOINTS: Final = ("minimal", "minimal-no-id", "realistic", "proxy")
VARIANTS: Final = (
    "plain",
    "null",
    "memory",
    "memory-asyncio",
    "redis",
    "redis-thread",
    "otel",
    "sentry",
)
REDIS_VARIANTS: Final = ("redis", "redis-thread")
REALISTIC_WORK: Final = 0.0015  # seconds of CPU in the realistic handler

MINIMAL_REQUEST = json.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say hello to the benchmark, please." * 3}],
        "temperature": 0.2,
    }
).encode()

MINIMAL_RESPONSE = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Hello, benchmark! " * 12},
        }
    ],
    "usage": {"prompt_tokens": 31, "completion_tokens": 36, "total_tokens": 67},
}


def _chat_text(words: int, seed: int) -> str:
    vocabulary = "the model reads a long conversation and answers with care about every detail"
    parts = vocabulary.split()
    return " ".join(parts[(i * 7 + seed) % len(parts)] for i in range(words))


# ~20 KB each: a conversation of 12 turns in, a long answer out.
REALISTIC_REQUEST = json.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "user" if i % 2 == 0 else "assistant", "content": _chat_text(260, i)}
            for i in range(12)
        ],
        "temperature": 0.2,
        "stream": False,
    }
).encode()

REALISTIC_RESPONSE = {
    **MINIMAL_RESPONSE,
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": _chat_text(3_300, 5)},
        }
    ],
    "usage": {"prompt_tokens": 4_100, "completion_tokens": 4_300, "total_tokens": 8_400},
}


def asgi_scope() -> dict[str, Any]:
    """The ASGI scope of one POST to PATH, for calling an app directly (no server)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }


def request_body(endpoint: str) -> bytes:
    """The body the load generator sends to `endpoint`."""
    return REALISTIC_REQUEST if endpoint == "realistic" else MINIMAL_REQUEST


def _work(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def _endpoint(endpoint: str, upstream: int) -> Callable[[Request], Any]:
    async def minimal(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse(MINIMAL_RESPONSE, headers={"x-request-id": uuid.uuid4().hex})

    async def minimal_no_id(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse(MINIMAL_RESPONSE)

    async def realistic(request: Request) -> JSONResponse:
        started = time.thread_time()
        chat = json.loads(await request.body())
        answer = dict(REALISTIC_RESPONSE, model=chat["model"])
        response = JSONResponse(answer, headers={"x-request-id": uuid.uuid4().hex})
        _work(REALISTIC_WORK - (time.thread_time() - started))
        return response

    llm: httpx.AsyncClient | None = None

    async def proxied(request: Request) -> Response:
        # What an LLM proxy does: forward the request upstream, hand the answer back.
        nonlocal llm
        if llm is None:
            llm = httpx.AsyncClient(base_url=f"http://127.0.0.1:{upstream}", timeout=30)
        answer = await llm.post(
            PATH, content=await request.body(), headers={"content-type": "application/json"}
        )
        return Response(
            answer.content,
            status_code=answer.status_code,
            headers={"x-request-id": answer.headers.get("x-request-id", "")},
            media_type="application/json",
        )

    return {
        "minimal": minimal,
        "minimal-no-id": minimal_no_id,
        "realistic": realistic,
        "proxy": proxied,
    }[endpoint]


class _NullBus:
    def publish(self, event: Any) -> None:
        pass

    def stats(self) -> tuple[int, int]:
        return (0, 0)

    def stop(self) -> None:
        pass


def _consume_in_thread(bus: InMemoryEventBus) -> None:
    """A consumer as a dispatcher thread would be: takes batches off a subscription."""
    sub = bus.subscribe("bench-consumer")

    def run() -> None:
        for _ in sub.batches(1000):
            pass

    threading.Thread(target=run, name="bench-consumer", daemon=True).start()


async def _consume_on_loop(bus: InMemoryEventBus) -> None:
    """A consumer as an in-app async dispatcher would be: a task on the server's loop."""
    sub = bus.subscribe("bench-consumer")
    while not sub.exhausted:
        await sub.aget_batch(1000)


def discarding_tracer_provider() -> Any:
    """An OpenTelemetry TracerProvider whose BatchSpanProcessor exports to nowhere."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    return provider


def init_discarding_sentry() -> None:
    """sentry-sdk with tracing on every request and a transport that discards."""
    import sentry_sdk
    from sentry_sdk.transport import Transport

    class Discard(Transport):
        def capture_envelope(self, envelope: Any) -> None:
            pass

    sentry_sdk.init(
        dsn="http://public@127.0.0.1:9/1",  # never contacted: the transport discards
        transport=Discard,
        traces_sample_rate=1.0,
        auto_enabling_integrations=False,
    )


def _otel(app: Any) -> Any:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(app, tracer_provider=discarding_tracer_provider())


def _sentry(app: Any) -> Any:
    from sentry_sdk.integrations.asgi import SentryAsgiMiddleware

    init_discarding_sentry()
    return SentryAsgiMiddleware(app)


def build_app(variant: str, endpoint: str, redis_key: str, upstream: int = 0) -> tuple[Any, Any]:
    """The ASGI app of `variant` serving `endpoint`, and its bus (None without one)."""
    bus: Any = None
    if variant == "null":
        bus = _NullBus()
    elif variant == "memory":
        bus = InMemoryEventBus(buffer_size=10_000, publish_path="thread")
    elif variant == "memory-asyncio":
        bus = InMemoryEventBus(buffer_size=10_000, publish_path="asyncio")
    elif variant in REDIS_VARIANTS:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        path = "thread" if variant == "redis-thread" else "auto"
        bus = RedisEventBus.log(client, redis_key, ttl=600, max_len=10_000, publish_path=path)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        consumer = None
        if variant == "memory":
            _consume_in_thread(bus)
        elif variant == "memory-asyncio":
            consumer = asyncio.create_task(_consume_on_loop(bus))
        yield
        if consumer is not None:
            consumer.cancel()

    route = Route(PATH, _endpoint(endpoint, upstream), methods=["POST"])
    app: Any = Starlette(routes=[route], lifespan=lifespan)
    if bus is not None:
        app.add_middleware(EventBusMiddleware, bus=bus)
    if variant == "otel":
        app = _otel(app)
    elif variant == "sentry":
        app = _sentry(app)
    return app, bus
