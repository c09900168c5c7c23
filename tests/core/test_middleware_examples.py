"""The middleware examples of docs/middleware.md are real applications: serve them and check."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tests.core.test_middleware import serve

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"

pytestmark = pytest.mark.timeout(30)


def load(name: str) -> ModuleType:
    """Import docs/examples/<name>.py afresh (each test gets its own bus)."""
    spec = importlib.util.spec_from_file_location(f"eventbus_docs_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_fastapi_example() -> None:
    example = load("fastapi_app")
    sub = example.bus.subscribe("test")
    with serve(example.app, lifespan="on") as base, httpx.Client(base_url=base) as client:
        assert client.get("/health").json() == {"status": "ok"}
        plain = client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o"},
            headers={"X-Request-ID": "req-fastapi"},
        )
        with client.stream(
            "POST", "/v1/chat/completions", json={"model": "gpt-4o", "stream": True}
        ) as streamed:
            chunks = list(streamed.iter_raw())
    # Leaving `serve` ran the app's shutdown, which stopped the bus: its events are all here.
    events = list(sub)
    assert [e.path for e in events] == ["/v1/chat/completions"] * 2  # /health is excluded
    first, second = events
    assert first.request_id == "req-fastapi"
    assert first.response_body == plain.content
    assert json.loads(first.request_body or b"") == {"model": "gpt-4o"}
    assert second.response_body == b"".join(chunks)
    assert second.response_body.endswith(b"data: [DONE]\n\n")


def test_starlette_example(capsys: pytest.CaptureFixture[str]) -> None:
    example = load("starlette_app")
    sub = example.bus.subscribe("test")
    with serve(example.app, lifespan="on") as base, httpx.Client(base_url=base) as client:
        resp = client.post("/v1/embeddings", json={"input": "hi"})
    assert resp.status_code == 200
    (event,) = list(sub)
    # set_request_id=True: the client got the generated id the event carries.
    assert resp.headers["x-request-id"] == event.request_id
    assert "200 POST /v1/embeddings" in capsys.readouterr().out
