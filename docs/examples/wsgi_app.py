"""A plain WSGI chat-completions endpoint wrapped by EventBusWSGIMiddleware; its bus comes from
the environment (`LLM_PROXY_EVENT_BUS`, default `memory`; `redis-streams` when it is unset and the
Go proxy's `REDIS_ADDR` is set).

Serve it with gunicorn from the repository root, with the development environment, and a Redis
bus so that the events leave the workers:

    LLM_PROXY_EVENT_BUS=redis-streams REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/gunicorn \
        --workers 2 -c docs/examples/gunicorn_conf.py --chdir docs/examples wsgi_app:app

then `curl -X POST localhost:8000/v1/chat/completions -d '{"model": "gpt-4o"}'`, and read the
events with `REDIS_URL=redis://127.0.0.1:6379/0 eventbus tail --backend redis-streams` (or
deliver them with `eventbus dispatch`).
`gunicorn_conf.py` stops each worker's bus as the worker ends, so what it holds is delivered.
Flask: `app.wsgi_app = EventBusWSGIMiddleware(app.wsgi_app, bus=bus)`; Django: wrap the
application of `wsgi.py`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from eventbus_core import EventBusWSGIMiddleware, create_bus

bus = create_bus()  # in the master with --preload (the bus works on after fork), else per worker


def chat(environ: dict[str, object], start_response: Callable[..., object]) -> Iterable[bytes]:
    """Answer like OpenAI's chat completions API (and `/health`)."""
    if environ.get("PATH_INFO") == "/health":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"status": "ok"}']
    length = int(str(environ.get("CONTENT_LENGTH") or 0))
    request = json.loads(environ["wsgi.input"].read(length) or b"{}")  # type: ignore[attr-defined]
    answer = {
        "object": "chat.completion",
        "model": request.get("model", "gpt-4o"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(answer).encode()]


app = EventBusWSGIMiddleware(chat, bus=bus, exclude_paths=["/health"])
