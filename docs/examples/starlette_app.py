"""A plain Starlette app wrapped by EventBusMiddleware, printing its own events.

Run it (from the repository root, with the development environment):

    .venv/bin/uvicorn --app-dir docs/examples starlette_app:app --port 8000

and call it: `curl -X POST localhost:8000/v1/embeddings -d '{"input": "hi"}'`. Each request
prints one line from the subscriber thread below; in production a dispatcher (`eventbus
dispatch`) or `eventbus tail` takes that role.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from eventbus_core import EventBusMiddleware, Subscription
from eventbus_memory import InMemoryEventBus

bus = InMemoryEventBus(buffer_size=1000)


def print_events(subscription: Subscription) -> None:
    """Print one line per event until the bus stops."""
    for event in subscription:
        ms = event.duration_ns / 1e6
        print(f"{event.status} {event.method} {event.path} {ms:.1f} ms id={event.request_id}")


async def embeddings(request: Request) -> JSONResponse:
    """Answer like OpenAI's embeddings API."""
    await request.body()
    return JSONResponse({"object": "list", "data": [{"index": 0, "embedding": [0.1, 0.2]}]})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Start the printer with the server; stop the bus (delivering what is left) at the end."""
    printer = threading.Thread(target=print_events, args=(bus.subscribe("printer"),), daemon=True)
    printer.start()
    yield
    bus.stop()
    printer.join(timeout=5)


app = EventBusMiddleware(
    Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"])], lifespan=lifespan),
    bus=bus,
    set_request_id=True,  # also return the request id to the client (X-Request-ID)
)
