"""What an LLM payload says in OpenTelemetry GenAI terms: operation, provider, models, usage,
finish reasons, request parameters, and when the call started and ended.

Reads the `LLMTransformer`'s payload (`path`, `input`, `output`, `usage`, `timestamp`,
`duration_ms`, `metadata.duration_ns`) and tolerates anything missing, so a custom
transformer's payload works as far as it goes. Pure functions, no I/O.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from eventbus_core._event import _INT64_MAX as INT64_MAX

__all__ = [
    "finish_reasons",
    "operation_name",
    "payload_duration_ns",
    "provider_name",
    "request_attributes",
    "request_model",
    "response_id",
    "response_model",
    "span_times",
    "timestamp_ns",
    "usage_tokens",
]

# Longest suffix first: /chat/completions before /completions.
_OPERATIONS: Final = (
    ("/chat/completions", "chat"),
    ("/completions", "text_completion"),
    ("/embeddings", "embeddings"),
    ("/messages", "chat"),
    ("/responses", "chat"),
    (":generatecontent", "generate_content"),
    (":streamgeneratecontent", "generate_content"),
)

_FRACTION = re.compile(r"^(.*T\d{2}:\d{2}:\d{2})\.(\d+)(.*)$")
_GEMINI_MODEL = re.compile(r"/models/([^/:]+):")


def _path(payload: Mapping[str, Any]) -> str:
    return str(payload.get("path") or "").split("?", 1)[0].rstrip("/")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def operation_name(payload: Mapping[str, Any]) -> str | None:
    """`gen_ai.operation.name` from the request path (`chat`, `text_completion`, ...), or
    None for a path that is not a model call (`/v1/models`, health checks)."""
    path = _path(payload).lower()
    for suffix, operation in _OPERATIONS:
        if path.endswith(suffix):
            return operation
    return None


def provider_name(payload: Mapping[str, Any]) -> str:
    """`gen_ai.provider.name`: `anthropic` for the Messages API, `gcp.gemini` for
    generateContent, `azure.ai.openai` for Azure deployments, otherwise `openai`."""
    path = _path(payload).lower()
    output = _dict(payload.get("output"))
    if path.endswith("/messages") or output.get("type") == "message":
        return "anthropic"
    if "generatecontent" in path:
        return "gcp.gemini"
    if "/openai/deployments/" in path:
        return "azure.ai.openai"
    return "openai"


def request_model(payload: Mapping[str, Any]) -> str | None:
    """The model the client asked for (request body `model`, or Gemini's path)."""
    model = _dict(payload.get("input")).get("model")
    if isinstance(model, str) and model:
        return model
    found = _GEMINI_MODEL.search(_path(payload))
    return found.group(1) if found else None


def response_model(payload: Mapping[str, Any]) -> str | None:
    """The model that answered (response `model`, Gemini's `modelVersion`)."""
    output = _dict(payload.get("output"))
    for key in ("model", "modelVersion"):
        if isinstance(output.get(key), str) and output[key]:
            return str(output[key])
    return None


def response_id(payload: Mapping[str, Any]) -> str | None:
    """The response's id (`id`; Gemini's `responseId`, which was left out: trial 250)."""
    output = _dict(payload.get("output"))
    for key in ("id", "responseId"):
        if isinstance(output.get(key), str) and output[key]:
            return str(output[key])
    return None


def usage_tokens(payload: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """`(input tokens, output tokens)` from the payload's `usage`, where known: a count is a
    whole number from 0 to 2**63 - 1 (OTLP's int64). Others are left out: 2**70 went out as a
    string, -1 as it was (trial 250)."""
    usage = _dict(payload.get("usage"))

    def count(*keys: str) -> int | None:
        for key in keys:
            value = usage.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return value if 0 <= value <= INT64_MAX else None
        return None

    return (
        count("prompt_tokens", "input_tokens"),
        count("completion_tokens", "output_tokens"),
    )


def finish_reasons(payload: Mapping[str, Any]) -> list[str]:
    """Why the model stopped, one per choice: OpenAI `finish_reason`, Anthropic
    `stop_reason`, the Responses API's `status`, Gemini's `finishReason`."""
    output = _dict(payload.get("output"))
    reasons: list[str] = []
    for choice in output.get("choices") or []:
        reason = _dict(choice).get("finish_reason")
        if isinstance(reason, str) and reason:
            reasons.append(reason)
    for candidate in output.get("candidates") or []:
        reason = _dict(candidate).get("finishReason")
        if isinstance(reason, str) and reason:
            reasons.append(reason)
    if isinstance(output.get("stop_reason"), str):
        reasons.append(output["stop_reason"])
    if output.get("object") == "response" and isinstance(output.get("status"), str):
        reasons.append(output["status"])
    return reasons


# Gemini's `generationConfig` names, as the OpenAI-style names read below (trial 189: a
# Gemini request's parameters were not read, though the docs name Gemini).
_GEMINI_PARAMETERS: Final = {
    "maxOutputTokens": "max_output_tokens",
    "temperature": "temperature",
    "topP": "top_p",
    "topK": "top_k",
    "frequencyPenalty": "frequency_penalty",
    "presencePenalty": "presence_penalty",
    "seed": "seed",
    "stopSequences": "stop_sequences",
    "candidateCount": "n",
    # The same in snake case, which Gemini's REST API takes too (review 194).
    "max_output_tokens": "max_output_tokens",
    "top_p": "top_p",
    "top_k": "top_k",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "stop_sequences": "stop_sequences",
    "candidate_count": "n",
}


def _request_parameters(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The request body, with Gemini's `generationConfig` read under the names used for the
    other APIs, and `stream` from Gemini's path (`:streamGenerateContent`)."""
    body = _dict(payload.get("input"))
    config = _dict(body.get("generationConfig") or body.get("generation_config"))
    streaming = "streamgeneratecontent" in _path(payload).lower()
    if not config and not streaming:
        return body
    merged = dict(body)
    for gemini, name in _GEMINI_PARAMETERS.items():
        if gemini in config:
            merged.setdefault(name, config[gemini])
    if streaming:
        merged.setdefault("stream", True)
    return merged


def request_attributes(payload: Mapping[str, Any]) -> dict[str, Any]:
    """`gen_ai.request.*` parameters the client set (max tokens, temperature, ...)."""
    body = _request_parameters(payload)
    out: dict[str, Any] = {}
    for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        if isinstance(body.get(key), int) and not isinstance(body.get(key), bool):
            out["gen_ai.request.max_tokens"] = body[key]
            break
    for key in ("temperature", "top_p", "frequency_penalty", "presence_penalty"):
        value = body.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[f"gen_ai.request.{key}"] = float(value)
    if isinstance(body.get("top_k"), int | float) and not isinstance(body.get("top_k"), bool):
        out["gen_ai.request.top_k"] = float(body["top_k"])
    if isinstance(body.get("seed"), int) and not isinstance(body.get("seed"), bool):
        out["gen_ai.request.seed"] = body["seed"]
    stop = body.get("stop", body.get("stop_sequences"))
    if isinstance(stop, str):
        stop = [stop]
    if isinstance(stop, list) and stop and all(isinstance(s, str) for s in stop):
        out["gen_ai.request.stop_sequences"] = list(stop)
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n != 1:
        out["gen_ai.request.choice.count"] = n
    if isinstance(body.get("stream"), bool):
        out["gen_ai.request.stream"] = body["stream"]
    return out


def timestamp_ns(value: Any) -> int | None:
    """An RFC 3339 / ISO 8601 time as nanoseconds since the epoch, exactly (nine fraction
    digits are kept, as Go writes them); None if absent or unreadable. A time without an
    offset is taken as UTC."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    fraction_ns = 0
    match = _FRACTION.match(text)
    if match:
        digits = match.group(2)[:9]
        fraction_ns = int(digits.ljust(9, "0"))
        text = match.group(1) + match.group(3)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        from datetime import UTC

        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000_000 + fraction_ns


def payload_duration_ns(payload: Mapping[str, Any]) -> int:
    """The request's duration in nanoseconds: exact from `metadata.duration_ns`, else from
    `duration_ms`; 0 if neither is there."""
    exact = _dict(payload.get("metadata")).get("duration_ns")
    if isinstance(exact, int) and not isinstance(exact, bool) and exact >= 0:
        return exact
    millis = payload.get("duration_ms")
    if isinstance(millis, int | float) and not isinstance(millis, bool) and millis >= 0:
        return round(millis * 1_000_000)
    return 0


def span_times(payload: Mapping[str, Any]) -> tuple[int, int]:
    """`(start, end)` of the call in nanoseconds since the epoch.

    The payload's `timestamp` marks the end (the transformer stamps it once the response
    is complete); the start is the end minus the exact duration, so `end - start` is the
    event's `duration_ns` to the nanosecond. Without a timestamp, now is the end.
    """
    end = timestamp_ns(payload.get("timestamp"))
    if end is None:
        end = time.time_ns()
    return end - payload_duration_ns(payload), end
