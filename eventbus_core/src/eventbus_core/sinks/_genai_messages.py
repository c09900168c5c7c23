"""Prompts and completions in the GenAI semantic conventions' message shape.

`gen_ai.input.messages` / `gen_ai.output.messages` are lists of `{"role", "parts": [...]}`,
parts being `{"type": "text", "content"}`, `{"type": "tool_call", "id", "name",
"arguments"}`, `{"type": "tool_call_response", "id", "response"}`; output messages add a
`finish_reason`. This module converts OpenAI chat, legacy completions, the Responses API,
Anthropic messages and Gemini contents to that shape. Media (images, audio) become a bare
`{"type": ...}` part: spans are no place for base64 blobs. Pure functions, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["input_messages", "output_messages", "system_instructions"]

Message = dict[str, Any]

_TEXT_TYPES = frozenset({"text", "input_text", "output_text"})


def _text(content: Any) -> dict[str, Any]:
    return {"type": "text", "content": content if isinstance(content, str) else _json(content)}


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _block_parts(content: Any) -> list[dict[str, Any]]:
    """Parts of one message's content: a string, or a list of typed blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [_text(content)]
    if not isinstance(content, list):
        return [_text(content)]
    parts: list[dict[str, Any]] = []
    for block in content:
        if isinstance(block, str):
            parts.append(_text(block))
            continue
        if not isinstance(block, dict):
            continue
        kind = str(block.get("type") or "")
        if kind in _TEXT_TYPES or (not kind and "text" in block):
            parts.append(_text(block.get("text", "")))
        elif kind in ("tool_use", "function_call"):
            parts.append(
                {
                    "type": "tool_call",
                    "id": block.get("id") or block.get("call_id"),
                    "name": block.get("name"),
                    "arguments": _arguments(block.get("input", block.get("arguments"))),
                }
            )
        elif kind in ("tool_result", "function_call_output"):
            parts.append(
                {
                    "type": "tool_call_response",
                    "id": block.get("tool_use_id") or block.get("call_id"),
                    "response": block.get("content", block.get("output")),
                }
            )
        elif kind in ("thinking", "reasoning"):
            parts.append({"type": "reasoning", "content": block.get("thinking") or ""})
        else:
            parts.append({"type": kind or "unknown"})
    return parts


def _tool_calls(calls: Any) -> list[dict[str, Any]]:
    parts = []
    for call in calls if isinstance(calls, list) else []:
        if isinstance(call, dict):
            raw = call.get("function")
            fn: dict[str, Any] = raw if isinstance(raw, dict) else {}
            parts.append(
                {
                    "type": "tool_call",
                    "id": call.get("id"),
                    "name": fn.get("name"),
                    "arguments": _arguments(fn.get("arguments")),
                }
            )
    return parts


def _chat_message(message: Mapping[str, Any]) -> Message:
    role = str(message.get("role") or "user")
    if role in ("tool", "function"):
        parts = [
            {
                "type": "tool_call_response",
                "id": message.get("tool_call_id") or message.get("name"),
                "response": message.get("content"),
            }
        ]
    else:
        parts = _block_parts(message.get("content")) + _tool_calls(message.get("tool_calls"))
    return {"role": role, "parts": parts}


def system_instructions(body: Any) -> list[dict[str, Any]] | None:
    """Instructions given beside the messages: Anthropic `system`, the Responses API's
    `instructions`, Gemini's `systemInstruction`; None when there are none."""
    if not isinstance(body, dict):
        return None
    for key in ("system", "instructions"):
        if body.get(key):
            return _block_parts(body[key])
    gemini = body.get("systemInstruction") or body.get("system_instruction")
    if isinstance(gemini, dict):
        return _block_parts(gemini.get("parts"))
    return None


def input_messages(body: Any) -> list[Message]:
    """The conversation the client sent (request body), in order."""
    if isinstance(body, str):
        return [{"role": "user", "parts": [_text(body)]}]
    if not isinstance(body, dict):
        return []
    if isinstance(body.get("messages"), list):
        return [_chat_message(m) for m in body["messages"] if isinstance(m, dict)]
    if isinstance(body.get("contents"), list):  # Gemini
        return [
            {"role": str(c.get("role") or "user"), "parts": _block_parts(c.get("parts"))}
            for c in body["contents"]
            if isinstance(c, dict)
        ]
    for key in ("input", "prompt"):  # Responses API, legacy completions, embeddings
        value = body.get(key)
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            return [
                _chat_message(v) if "role" in v else {"role": "user", "parts": _block_parts([v])}
                for v in value
            ]
        if isinstance(value, list):
            return [{"role": "user", "parts": [_text(v) for v in value]}]
        if value is not None:
            return [{"role": "user", "parts": [_text(value)]}]
    return []


def output_messages(body: Any) -> list[Message]:
    """What the model returned, one message per choice, each with its `finish_reason`."""
    if isinstance(body, str):
        return [{"role": "assistant", "parts": [_text(body)], "finish_reason": "unknown"}]
    if not isinstance(body, dict):
        return []
    if isinstance(body.get("choices"), list):  # OpenAI chat and legacy completions
        out = []
        for choice in body["choices"]:
            if not isinstance(choice, dict):
                continue
            if isinstance(choice.get("message"), dict):
                message = _chat_message(choice["message"])
                message["role"] = choice["message"].get("role") or "assistant"
            else:
                message = {"role": "assistant", "parts": _block_parts(choice.get("text"))}
            message["finish_reason"] = choice.get("finish_reason") or "unknown"
            out.append(message)
        return out
    if body.get("type") == "message":  # Anthropic
        return [
            {
                "role": str(body.get("role") or "assistant"),
                "parts": _block_parts(body.get("content")),
                "finish_reason": body.get("stop_reason") or "unknown",
            }
        ]
    if body.get("object") == "response" and isinstance(body.get("output"), list):
        parts = []
        for item in body["output"]:
            if isinstance(item, dict) and item.get("type") == "message":
                parts += _block_parts(item.get("content"))
            elif isinstance(item, dict):
                parts += _block_parts([item])
        reason = body.get("status") or "unknown"
        return [{"role": "assistant", "parts": parts, "finish_reason": reason}]
    if isinstance(body.get("candidates"), list):  # Gemini
        return [
            {
                "role": "assistant",
                "parts": _block_parts((c.get("content") or {}).get("parts")),
                "finish_reason": c.get("finishReason") or "unknown",
            }
            for c in body["candidates"]
            if isinstance(c, dict)
        ]
    return []
