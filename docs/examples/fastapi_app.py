"""A FastAPI "LLM proxy" instrumented by eventbus in one line.

Run it (from the repository root, with the development environment):

    .venv/bin/uvicorn --app-dir docs/examples fastapi_app:app --port 8000

Events go to the backend chosen by the environment (`LLM_PROXY_EVENT_BUS`, memory by default;
redis-streams when it is unset and the Go proxy's `REDIS_ADDR` is set).
With `LLM_PROXY_EVENT_BUS=redis REDIS_URL=redis://localhost:6379/0`, watch them from another
terminal with `eventbus tail`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from eventbus_core import EventBusMiddleware, create_bus

bus = create_bus()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Deliver what is still buffered when the server shuts down."""
    yield
    await asyncio.to_thread(bus.stop)


app = FastAPI(lifespan=lifespan)
# The one line: every request becomes one event. Health checks are left out.
app.add_middleware(EventBusMiddleware, bus=bus, exclude_paths=["/health"])


@app.get("/health")
async def health() -> dict[str, str]:
    """Liveness probe: excluded from the events."""
    return {"status": "ok"}


@app.post("/v1/chat/completions", response_model=None)
async def chat_completions(request: Request) -> JSONResponse | StreamingResponse:
    """Answer like OpenAI's chat completions API, streamed (SSE) when asked to."""
    payload: dict[str, Any] = await request.json()
    model = payload.get("model", "gpt-4o-mini")
    words = ["Hello", " from", " a", " proxy", "!"]
    if payload.get("stream"):

        async def sse() -> AsyncIterator[bytes]:
            for word in words:
                chunk = {"model": model, "choices": [{"index": 0, "delta": {"content": word}}]}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream")
    return JSONResponse(
        {
            "id": "chatcmpl-example",
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(words)}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
        }
    )
