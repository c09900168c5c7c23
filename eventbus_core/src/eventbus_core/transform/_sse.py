"""Server-sent-event streams of LLM APIs merged back into one response object.

A streamed chat completion arrives as many `data: {...}` chunks; observability tools want the
completion as if it had not been streamed. `merge_sse()` rebuilds it for OpenAI-style chat
and text completions (content, tool calls, finish reasons, usage of the last chunk) and for
Anthropic message streams; other streams come back as the list of their parsed events.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["looks_like_sse", "merge_sse", "parse_sse"]


def looks_like_sse(text: str, content_type: str | None) -> bool:
    """True if the body is an event stream (by content type, or by its first field)."""
    if content_type and "text/event-stream" in content_type.lower():
        return True
    head = text.lstrip()[:16]
    return head.startswith(("data:", "event:"))


def parse_sse(text: str) -> list[tuple[str | None, str]]:
    """Split an event stream into `(event name, data)` pairs; data lines are joined by \\n."""
    events: list[tuple[str | None, str]] = []
    name: str | None = None
    data: list[str] = []
    for raw in [*text.splitlines(), ""]:
        if not raw:
            if data:
                events.append((name, "\n".join(data)))
            name, data = None, []
            continue
        if raw.startswith(":"):
            continue  # comment / keep-alive
        field, _, value = raw.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    return events


def merge_sse(text: str) -> Any:
    """Merge an LLM event stream into one response object (see the module docstring)."""
    chunks: list[Any] = []
    for _name, data in parse_sse(text):
        if data.strip() == "[DONE]":
            continue
        try:
            chunks.append(json.loads(data))
        except ValueError:
            chunks.append(data)
    dicts = [c for c in chunks if isinstance(c, dict)]
    if dicts and len(dicts) == len(chunks):
        if any(isinstance(c.get("choices"), list) for c in dicts):
            return _merge_openai(dicts)
        if any(c.get("type") == "message_start" for c in dicts):
            return _merge_anthropic(dicts)
        final = _responses_final(dicts)
        if final is not None:
            return final
        if any(isinstance(c.get("candidates"), list) for c in dicts):
            return _merge_gemini(dicts)
    return {"object": "event_stream", "events": chunks}


def _responses_final(chunks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The Responses API sends the whole response, usage included, in its last event
    (`response.completed`, `.incomplete` or `.failed`); earlier ones carry partial copies."""
    for chunk in reversed(chunks):
        kind, response = chunk.get("type"), chunk.get("response")
        if isinstance(kind, str) and kind.startswith("response.") and isinstance(response, dict):
            return response
    return None


def _merge_openai(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    chat = any(c.get("object") == "chat.completion.chunk" for c in chunks) or any(
        "delta" in ch for c in chunks for ch in c.get("choices") or [] if isinstance(ch, dict)
    )
    out: dict[str, Any] = {"object": "chat.completion" if chat else "text_completion"}
    choices: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for key in ("id", "created", "model", "system_fingerprint"):
            if chunk.get(key) is not None and key not in out:
                out[key] = chunk[key]
        if chunk.get("usage"):
            out["usage"] = chunk["usage"]  # only the final chunk carries it
        for ch in chunk.get("choices") or []:
            if not isinstance(ch, dict):
                continue
            index = ch.get("index", 0)
            merged = choices.setdefault(index, {"index": index, "finish_reason": None})
            if ch.get("finish_reason") is not None:
                merged["finish_reason"] = ch["finish_reason"]
            if chat:
                _merge_delta(
                    merged.setdefault("message", {"role": "assistant", "content": ""}),
                    ch.get("delta") or {},
                )
            else:
                merged["text"] = merged.get("text", "") + (ch.get("text") or "")
    out["choices"] = [choices[i] for i in sorted(choices)]
    return out


def _merge_delta(message: dict[str, Any], delta: dict[str, Any]) -> None:
    if delta.get("role"):
        message["role"] = delta["role"]
    if isinstance(delta.get("content"), str):
        message["content"] = (message.get("content") or "") + delta["content"]
    if isinstance(delta.get("refusal"), str):
        message["refusal"] = (message.get("refusal") or "") + delta["refusal"]
    for call in delta.get("tool_calls") or []:
        if not isinstance(call, dict):
            continue
        calls: list[dict[str, Any]] = message.setdefault("tool_calls", [])
        index = call.get("index", len(calls))
        while len(calls) <= index:
            calls.append(
                {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
            )
        target = calls[index]
        if call.get("id"):
            target["id"] = call["id"]
        if call.get("type"):
            target["type"] = call["type"]
        fn = call.get("function") or {}
        target["function"]["name"] += fn.get("name") or ""
        target["function"]["arguments"] += fn.get("arguments") or ""


def _merge_anthropic(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "message", "content": []}
    usage: dict[str, Any] = {}
    blocks: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        kind = chunk.get("type")
        if kind == "message_start" and isinstance(chunk.get("message"), dict):
            msg = chunk["message"]
            for key in ("id", "model", "role"):
                if key in msg:
                    out[key] = msg[key]
            usage.update(msg.get("usage") or {})
        elif kind == "content_block_start":
            blocks[chunk.get("index", 0)] = dict(chunk.get("content_block") or {})
        elif kind == "content_block_delta":
            block = blocks.setdefault(chunk.get("index", 0), {"type": "text", "text": ""})
            delta = chunk.get("delta") or {}
            if "text" in delta:
                block["text"] = block.get("text", "") + delta["text"]
            if "partial_json" in delta:
                block["partial_json"] = block.get("partial_json", "") + delta["partial_json"]
        elif kind == "message_delta":
            delta = chunk.get("delta") or {}
            if "stop_reason" in delta:
                out["stop_reason"] = delta["stop_reason"]
            usage.update(chunk.get("usage") or {})
    out["content"] = [blocks[i] for i in sorted(blocks)]
    if usage:
        out["usage"] = usage
    return out


def _merge_gemini(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Gemini streams candidates' text in pieces; the last chunk has the usage totals."""
    out: dict[str, Any] = {}
    texts: dict[int, list[str]] = {}
    reasons: dict[int, Any] = {}
    for chunk in chunks:
        for key in ("usageMetadata", "modelVersion", "responseId"):
            if chunk.get(key) is not None:
                out[key] = chunk[key]
        for position, candidate in enumerate(chunk.get("candidates") or []):
            if not isinstance(candidate, dict):
                continue
            index = candidate.get("index", position)
            parts = (candidate.get("content") or {}).get("parts") or []
            texts.setdefault(index, []).extend(
                p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)
            )
            if candidate.get("finishReason"):
                reasons[index] = candidate["finishReason"]
    out["candidates"] = [
        {
            "index": i,
            "content": {"role": "model", "parts": [{"text": "".join(texts[i])}]},
            "finishReason": reasons.get(i),
        }
        for i in sorted(texts)
    ]
    return out
