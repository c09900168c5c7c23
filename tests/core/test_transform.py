"""The LLM transformer on real-looking OpenAI and Anthropic traffic."""

from __future__ import annotations

import gzip
import json
import random
import sys
import types
import zlib
from typing import Any

import brotli
import pytest

from eventbus_core import Event, EventBusSettings, LLMTransformer, SettingsError, decode_body
from eventbus_core.transform._llm import _content_headers, load_transform

CHAT_REQUEST = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hi"},
    ],
    "temperature": 0.2,
}
CHAT_RESPONSE = {
    "id": "chatcmpl-9xYz",
    "object": "chat.completion",
    "created": 1732790000,
    "model": "gpt-4o-mini-2024-07-18",
    "system_fingerprint": "fp_0ba0d124f1",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi!", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 19,
        "completion_tokens": 3,
        "total_tokens": 22,
        "prompt_tokens_details": {"cached_tokens": 0},
    },
}


def event(response: bytes | None, request: Any = CHAT_REQUEST, **headers: str) -> Event:
    body = json.dumps(request).encode() if isinstance(request, dict) else request
    hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
    return Event(
        request_id="req-abc",
        method="POST",
        path="/v1/chat/completions",
        status=200,
        duration=1_234_567_890,
        log_id=42,
        request_body=body,
        response_body=response,
        response_headers={"Content-Type": "application/json", **hdrs},
    )


def sse(chunks: list[Any]) -> bytes:
    lines = [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
    return "".join(lines).encode()


def test_openai_chat_completion() -> None:
    p = LLMTransformer()(event(json.dumps(CHAT_RESPONSE).encode()))
    assert p["model"] == "gpt-4o-mini-2024-07-18"  # the response's resolved model wins
    assert p["usage"] == {"prompt_tokens": 19, "completion_tokens": 3, "total_tokens": 22}
    assert p["input"] == CHAT_REQUEST and p["output"] == CHAT_RESPONSE
    assert p["duration_ms"] == pytest.approx(1234.56789)
    meta = p["metadata"]
    assert (meta["log_id"], meta["request_id"], meta["method"], meta["path"], meta["status"]) == (
        42,
        "req-abc",
        "POST",
        "/v1/chat/completions",
        200,
    )
    assert meta["duration_ns"] == 1_234_567_890 and meta["streamed"] is False
    json.dumps(p)  # serialisable as is


def test_streamed_chat_is_merged_into_one_completion() -> None:
    base = {
        "id": "chatcmpl-s1",
        "object": "chat.completion.chunk",
        "created": 1732790001,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_x",
    }
    chunks = [
        {
            **base,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ],
        },
        {**base, "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {"content": "lo!"}, "finish_reason": None}]},
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": '{"ci'},
                            }
                        ]
                    },
                    "finish_reason": None,
                }
            ],
        },
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Oslo"}'}}]
                    },
                    "finish_reason": None,
                }
            ],
        },
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {
            **base,
            "choices": [],
            "usage": {"prompt_tokens": 25, "completion_tokens": 9, "total_tokens": 34},
        },
    ]
    p = LLMTransformer()(
        event(
            sse(chunks),
            {**CHAT_REQUEST, "stream": True},
            Content_Type="text/event-stream; charset=utf-8",
        )
    )
    out = p["output"]
    assert out["object"] == "chat.completion" and out["id"] == "chatcmpl-s1"
    choice = out["choices"][0]
    assert choice["message"]["content"] == "Hello!"
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "call_1" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    assert p["usage"] == {"prompt_tokens": 25, "completion_tokens": 9, "total_tokens": 34}
    assert p["model"] == "gpt-4o-2024-08-06" and p["metadata"]["streamed"] is True


def test_anthropic_stream_is_merged() -> None:
    events = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "role": "assistant",
                    "model": "claude-3-5-sonnet-20241022",
                    "usage": {"input_tokens": 11, "output_tokens": 1},
                },
            },
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Bonjour"},
            },
        ),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 4},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    body = "".join(f"event: {n}\ndata: {json.dumps(d)}\n\n" for n, d in events).encode()
    p = LLMTransformer()(event(body, Content_Type="text/event-stream"))
    assert p["output"]["content"] == [{"type": "text", "text": "Bonjour"}]
    assert p["model"] == "claude-3-5-sonnet-20241022"
    assert p["usage"] == {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}


def test_embeddings() -> None:
    request = {"model": "text-embedding-3-small", "input": ["hello", "world"]}
    response = {
        "object": "list",
        "model": "text-embedding-3-small",
        "data": [
            {"object": "embedding", "index": i, "embedding": [0.01, -0.02, 0.03]} for i in range(2)
        ],
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }
    p = LLMTransformer()(event(json.dumps(response).encode(), request))
    assert p["model"] == "text-embedding-3-small"
    assert p["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    assert len(p["output"]["data"]) == 2


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate"])
def test_compressed_bodies_are_decoded(encoding: str) -> None:
    raw = json.dumps(CHAT_RESPONSE).encode()
    packed = {"gzip": gzip.compress, "br": brotli.compress, "deflate": zlib.compress}[encoding](raw)
    p = LLMTransformer()(event(packed, Content_Encoding=encoding))
    assert p["output"] == CHAT_RESPONSE and p["usage"]["total_tokens"] == 22
    assert p["metadata"]["content_encoding"] == encoding


def test_gzip_request_body_is_sniffed() -> None:
    p = LLMTransformer()(event(None, gzip.compress(json.dumps(CHAT_REQUEST).encode())))
    assert p["input"] == CHAT_REQUEST and p["model"] == "gpt-4o-mini" and p["output"] is None


def test_binary_bodies_as_base64_or_placeholder() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    ev = event(png, Content_Type="image/png")
    p = LLMTransformer()(ev)
    assert p["output"]["content_type"] == "image/png"
    assert p["output"]["base64"].startswith("iVBORw0KGgo")
    q = LLMTransformer(binary="placeholder")(ev)
    assert q["output"] == "[binary body: 264 bytes, image/png]"
    big = LLMTransformer(max_body_bytes=10)(ev)
    assert big["output"].startswith("[body of 264 bytes omitted")


def test_broken_encoding_and_plain_text_do_not_raise() -> None:
    value, info = decode_body(b"not gzip at all", content_encoding="gzip")
    assert value == "not gzip at all" and "could not undo" in info["error"]
    assert decode_body(b"plain words")[0] == "plain words"
    assert decode_body(b"{broken json")[0] == "{broken json"
    assert decode_body(None) == (None, {})


def test_custom_transformer_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("my_observability")
    module.transform = lambda e: {"id": e.request_id, "kind": "custom"}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "my_observability", module)
    from eventbus_core import Dispatcher, Subscription

    settings = EventBusSettings(transformer="my_observability:transform")
    d = Dispatcher.from_settings(settings, bus=Subscription(1), sinks=[("console", {})])
    assert d.transform(event(None)) == {"id": "req-abc", "kind": "custom"}
    with pytest.raises(ValueError, match="EVENTBUS_TRANSFORMER"):
        load_transform("no_colon")
    with pytest.raises(SettingsError, match="has no 'nope'"):
        load_transform("my_observability:nope")


def test_content_headers_are_found_as_event_header_finds_them() -> None:
    # The transformer looks both up in one pass; it must pick what `Event.header` picks, for
    # every spelling, order, duplicate and empty value.
    rng = random.Random(3)
    spellings = [
        "Content-Type", "content-type", "CONTENT-TYPE", "Content-type",
        "Content-Encoding", "content-encoding", "CONTENT-ENCODING", "X-Other", "Date",
    ]  # fmt: skip
    values: list[list[str]] = [[], ["application/json"], ["gzip"], ["br", "gzip"], ["text/plain"]]
    for _ in range(3_000):
        names = rng.sample(spellings, rng.randint(0, len(spellings)))
        headers = {name: rng.choice(values) for name in names}
        event = Event(request_id="r", method="GET", path="/", status=200, response_headers=headers)
        assert _content_headers(event) == (
            event.header("Content-Type"),
            event.header("Content-Encoding"),
        ), headers
    assert _content_headers(Event(request_id="r", method="GET", path="/", status=200)) == (
        None,
        None,
    )


def test_a_stream_too_large_to_keep_is_still_said_streamed() -> None:
    # It said streamed=False once the body passed the size limit (an outside trial).
    from eventbus_core import Event
    from eventbus_core.transform._llm import LLMTransformer

    body = b"".join(b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n' for _ in range(40))
    event = Event(
        status=200,
        response_headers={"Content-Type": ["text/event-stream; charset=utf-8"]},
        response_body=body,
    )
    kept = LLMTransformer()(event)
    cut = LLMTransformer(max_body_bytes=500)(event)
    assert kept["metadata"]["streamed"] is True
    assert cut["metadata"]["streamed"] is True
    assert cut["metadata"]["response_body"] == {
        "bytes": len(body),
        "streamed": True,
        "truncated": True,
    }


def test_a_body_nested_too_deeply_to_parse_is_kept_as_text() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    value, info = decode_body(deep, content_type="application/json")
    assert value == deep.decode() and "nested too deeply" in info["error"]
    payload = LLMTransformer()(event(deep, **{"Content-Type": "application/json"}))
    assert payload["output"] == deep.decode() and "transform_error" not in payload
