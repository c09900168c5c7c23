"""The Go dispatcher's `EventPayload`, built from our payload, for the sinks that must send
what the Go plugins send (lunary as is, helicone mapped from it).

Same keys, in the same order, with the same types (docs/sinks/lunary.md lists them), but
filled better than the Go transformer fills them:

- `runId` is derived from the event (LogID and request id), not random per attempt, so a
  batch sent again, or an event delivered again, can be de-duplicated by the receiver;
- `timestamp` is when the request started (end minus duration), not when it was dispatched;
- `output` is the provider's real response (streams merged), not a wrapper around it, and
  `tokensUsage` carries the response's token counts;
- `name` is the model; `log_id` is the real LogID;
- binary bodies go in `input_base64` / `output_base64`, as the Go struct intended.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from eventbus_core.sinks import _genai
from eventbus_core.transform._binary import is_binary_body

__all__ = ["go_event_payload", "rfc3339", "run_id", "timing"]

_RUN_NAMESPACE: Final = uuid.UUID("6f1e3c2a-8b0d-4e5f-9a7b-3c2d1e0f4a5b")


def run_id(payload: Mapping[str, Any]) -> str:
    """A UUID that is the same every time this event is sent (UUIDv5 of LogID and request
    id; the timestamp is added when either is missing)."""
    log_id, request_id = payload.get("log_id") or 0, payload.get("request_id") or ""
    key = f"{log_id}|{request_id}"
    if not (log_id and request_id):
        key += f"|{payload.get('timestamp')}|{payload.get('path')}"
    return str(uuid.uuid5(_RUN_NAMESPACE, key))


def rfc3339(ns: int) -> str:
    """Nanoseconds since the epoch as RFC 3339 in UTC, with microseconds."""
    moment = datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC).replace(
        microsecond=(ns % 1_000_000_000) // 1_000
    )
    return moment.isoformat().replace("+00:00", "Z")


def timing(ns: int) -> dict[str, int]:
    """Helicone's `{seconds, milliseconds}` for a time in nanoseconds."""
    return {"seconds": ns // 1_000_000_000, "milliseconds": (ns % 1_000_000_000) // 1_000_000}


def go_metadata(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The Go payload's `metadata`: duration_ms (int), method, path, request_id, status
    (keys sorted, as Go writes a map)."""
    status = payload.get("status")
    return {
        "duration_ms": _genai.payload_duration_ns(payload) // 1_000_000,
        "method": str(payload.get("method") or ""),
        # The path alone, as the Go proxy's events carry it: the middleware's keeps the query
        # string, which may hold a credential no name marks (`hmac=`, a signed URL's signature)
        # and should not reach a third-party service (trial 163; the otlp sink drops it too).
        "path": str(payload.get("path") or "").split("?", 1)[0],
        "request_id": str(payload.get("request_id") or ""),
        "status": status if isinstance(status, int) else 0,
    }


def go_event_payload(payload: Mapping[str, Any], *, event: str = "start") -> dict[str, Any]:
    """The Go `EventPayload` of one payload (see the module docstring).

    Args:
        event: `start` (what Go sends: input and output together) or `end` (the closing
            event Lunary's API asks for: output and token usage, at the end time).
    """
    start, end = _genai.span_times(payload)
    out: dict[str, Any] = {"type": "llm", "event": event, "runId": run_id(payload)}
    model = _genai.response_model(payload) or _genai.request_model(payload)
    if model:
        out["name"] = model
    out["timestamp"] = rfc3339(end if event == "end" else start)
    request, response = payload.get("input"), payload.get("output")
    if event == "start" and request is not None:
        if is_binary_body(request):
            out["input_base64"] = request["base64"]
        else:
            out["input"] = request
    if response is not None:
        if is_binary_body(response):
            out["output_base64"] = response["base64"]
        else:
            out["output"] = response
    prompt, completion = _genai.usage_tokens(payload)
    if prompt is not None or completion is not None:
        out["tokensUsage"] = {"completion": completion or 0, "prompt": prompt or 0}
    out["metadata"] = go_metadata(payload)
    log_id = payload.get("log_id")
    out["log_id"] = log_id if isinstance(log_id, int) else 0
    return out
