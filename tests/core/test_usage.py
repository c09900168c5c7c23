"""Token usage in the transformer's payload, for non-streamed and streamed responses of
OpenAI chat, legacy completions, the Responses API, Anthropic and Gemini (the Go transformer
loses it for every normal response)."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from eventbus_core import Event, LLMTransformer


def sse(*chunks: Any, done: bool = True, named: bool = False) -> bytes:
    lines = []
    for chunk in chunks:
        if named:
            lines.append(f"event: {chunk['type']}")
        lines.append(f"data: {json.dumps(chunk)}\n")
    if done:
        lines.append("data: [DONE]\n")
    return "\n".join(lines).encode()


def transform(body: bytes, path: str = "/v1/chat/completions", **headers: str) -> dict[str, Any]:
    event = Event(
        request_id="r",
        method="POST",
        path=path,
        status=200,
        duration=5_000_000,
        response_headers={k.replace("_", "-"): v for k, v in headers.items()},
        response_body=body,
    )
    return LLMTransformer()(event)


def test_non_streamed_chat_completion() -> None:
    body = {
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
    payload = transform(json.dumps(body).encode(), Content_Type="application/json")
    assert payload["usage"] == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}


def test_non_streamed_gzip_chat_completion() -> None:
    body = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 1}}
    payload = transform(
        gzip.compress(json.dumps(body).encode()),
        Content_Type="application/json",
        Content_Encoding="gzip",
    )
    assert payload["usage"] == {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}


def test_streamed_chat_with_include_usage_takes_the_final_chunk() -> None:
    base = {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-mini"}
    body = sse(
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}], "usage": None},
        {**base, "choices": [{"index": 0, "delta": {"content": "Hel"}}], "usage": None},
        {**base, "choices": [{"index": 0, "delta": {"content": "lo"}}], "usage": None},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None},
        {
            **base,
            "choices": [],
            "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
        },
    )
    payload = transform(body, Content_Type="text/event-stream")
    assert payload["usage"] == {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
    assert payload["output"]["choices"][0]["message"]["content"] == "Hello"
    assert payload["metadata"]["streamed"] is True


def test_streamed_legacy_completion_with_usage() -> None:
    body = sse(
        {"object": "text_completion", "choices": [{"index": 0, "text": "a"}]},
        {
            "object": "text_completion",
            "choices": [],
            "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5},
        },
    )
    payload = transform(body, path="/v1/completions", Content_Type="text/event-stream")
    assert payload["usage"] == {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5}


def test_streamed_chat_without_usage_reports_none() -> None:
    body = sse(
        {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "x"}}]}
    )
    assert transform(body, Content_Type="text/event-stream")["usage"] is None


def test_anthropic_message_counts_the_prompt_cache() -> None:
    body = {
        "type": "message",
        "model": "claude-sonnet-4",
        "content": [{"type": "text", "text": "Hi"}],
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 1000,
            "output_tokens": 5,
        },
    }
    payload = transform(
        json.dumps(body).encode(), path="/v1/messages", Content_Type="application/json"
    )
    assert payload["usage"] == {"prompt_tokens": 1110, "completion_tokens": 5, "total_tokens": 1115}


def test_streamed_anthropic_message() -> None:
    body = sse(
        {
            "type": "message_start",
            "message": {
                "id": "m1",
                "model": "claude-sonnet-4",
                "role": "assistant",
                "usage": {"input_tokens": 25, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 15},
        },
        {"type": "message_stop"},
        done=False,
        named=True,
    )
    payload = transform(body, path="/v1/messages", Content_Type="text/event-stream")
    assert payload["usage"] == {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}


def test_streamed_responses_api_takes_the_completed_response() -> None:
    usage = {"input_tokens": 30, "output_tokens": 8, "total_tokens": 38}
    body = sse(
        {
            "type": "response.created",
            "response": {
                "id": "resp_1",
                "object": "response",
                "status": "in_progress",
                "usage": None,
            },
        },
        {"type": "response.output_text.delta", "delta": "Hi"},
        {
            "type": "response.completed",
            "response": {
                "id": "resp_1",
                "object": "response",
                "model": "gpt-4.1",
                "status": "completed",
                "usage": usage,
            },
        },
        done=False,
        named=True,
    )
    payload = transform(body, path="/v1/responses", Content_Type="text/event-stream")
    assert payload["usage"] == {"prompt_tokens": 30, "completion_tokens": 8, "total_tokens": 38}
    assert payload["model"] == "gpt-4.1"


@pytest.mark.parametrize("stream", [False, True])
def test_gemini_usage_metadata(stream: bool) -> None:
    chunk = {
        "candidates": [{"content": {"parts": [{"text": "Hi"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 6, "candidatesTokenCount": 2, "totalTokenCount": 8},
        "modelVersion": "gemini-2.0-flash",
    }
    body = sse(chunk, done=False) if stream else json.dumps(chunk).encode()
    payload = transform(body, path="/v1beta/models/gemini-2.0-flash:generateContent")
    assert payload["usage"] == {"prompt_tokens": 6, "completion_tokens": 2, "total_tokens": 8}


class _Count(int):
    """An int that is not exactly `int`: usage_of reads it by its general rules."""


def test_the_three_openai_counts_read_as_the_general_rules_read_them() -> None:
    # usage_of returns three plain int counts at once; the same counts as an int subclass go
    # through the general rules, which must give the same. Any other mix goes the general way.
    from eventbus_core.transform._usage import usage_of

    values: list[Any] = [0, 7, 2**70, -1, True, None, "3", 1.0]
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    for p in values:
        for c in values:
            for t in values:
                usage = dict(zip(keys, (p, c, t), strict=True), input_tokens=5, output_tokens=6)
                general = {k: _Count(v) if type(v) is int else v for k, v in usage.items()}
                assert usage_of({"usage": usage}) == usage_of({"usage": general}), usage
    # A bool is not a count, on either path.
    usage = {"prompt_tokens": True, "completion_tokens": 1, "total_tokens": 2}
    assert usage_of({"usage": usage}) == {"completion_tokens": 1, "total_tokens": 2}
