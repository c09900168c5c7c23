"""Token usage of an LLM response, whatever the provider's spelling.

Normalised to `prompt_tokens`, `completion_tokens`, `total_tokens` (OpenAI's names), from:
OpenAI chat and legacy completions (`usage.prompt_tokens`, streamed or not: a stream with
`stream_options.include_usage` carries it in its last chunk, which `merge_sse` keeps), the
Responses API and Anthropic (`usage.input_tokens` / `output_tokens`; Anthropic's prompt
also counts the tokens written to and read from its prompt cache), and Gemini
(`usageMetadata`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["usage_of"]

_ANTHROPIC_CACHE = ("cache_creation_input_tokens", "cache_read_input_tokens")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def usage_of(body: Any) -> dict[str, int] | None:
    """The usage of a decoded response body, or None when it reports none."""
    if not isinstance(body, dict):
        return None
    usage = body.get("usage")
    if not isinstance(usage, dict):
        gemini = body.get("usageMetadata")
        if not isinstance(gemini, dict):
            return None
        usage = {
            "prompt_tokens": gemini.get("promptTokenCount"),
            "completion_tokens": gemini.get("candidatesTokenCount"),
            "total_tokens": gemini.get("totalTokenCount"),
        }
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    total = usage.get("total_tokens")
    if type(prompt) is int and type(completion) is int and type(total) is int:
        # OpenAI's three counts (bool is not int here): what the rules below make of them.
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
    prompt = _int(prompt)
    if prompt is None:
        prompt = _int(usage.get("input_tokens"))
        if prompt is not None and "total_tokens" not in usage:
            # Anthropic: input_tokens excludes what the prompt cache wrote or served.
            prompt += sum(_int(usage.get(k)) or 0 for k in _ANTHROPIC_CACHE)
    completion = _int(completion)
    if completion is None:
        completion = _int(usage.get("output_tokens"))
    total = _int(total)
    if total is None and prompt is not None:
        total = prompt + (completion or 0)
    found = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
    clean = {k: v for k, v in found.items() if v is not None}
    return clean or None
