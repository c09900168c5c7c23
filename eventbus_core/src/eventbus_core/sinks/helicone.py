"""The `helicone` sink: the Go dispatcher's Helicone plugin, with its defects fixed.

Events go one at a time, in order, each its own `POST` to Helicone's custom-model logger
(default `https://api.worker.helicone.ai/custom/v1/log`) with `Content-Type:
application/json` and `Authorization: Bearer <key>`; the body is the Go plugin's
`{"providerRequest", "providerResponse", "timing"}`. Differences (docs/sinks/helicone.md):
a 500 is retried (Go dead-drops the batch), 401/403/404 are dead-lettered (Go retries
them), a 400, 413 or 422 dead-letters that event alone and the events after it are sent on
(Go drops the whole batch), a failure on one event sends only the events not yet delivered
again (Go resends the whole batch), `providerResponse.json` is the real response with its
token usage (Go sends a wrapper without usage), `timing` spans the real call (Go gives zero
latency), events without a response body are sent too (Go skips them and counts them as
sent), and nothing of a payload or a response body reaches the log.

Options (`--sink-opt key=value` or `EVENTBUS_SINK_HELICONE_<KEY>`):
    api_key: The Helicone API key (default: LLM_PROXY_API_KEY, as the Go dispatcher).
    endpoint: The logger URL (e.g. https://api.helicone.ai/custom/v1/log outside the US).
    timeout: Seconds per request (default 30, as Go).
    provider: `provider` / `Helicone-Provider` in `meta` (default: guessed from the path:
        `anthropic`, `google`, `azure`, else `openai`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from eventbus_core._errors import mark_delivered
from eventbus_core._settings import EventBusSettings
from eventbus_core._sink import check_options, option_float, option_where
from eventbus_core.hookspecs import RegisterFn, hookimpl
from eventbus_core.redact._secrets import redact_one_url
from eventbus_core.sinks import _genai
from eventbus_core.sinks._go_payload import go_event_payload, timing
from eventbus_core.sinks._http import HttpTarget, check_url
from eventbus_core.sinks._keys import api_key, bearer

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DEFAULT_ENDPOINT",
    "HeliconeSink",
    "build_sink",
    "eventbus_register_sinks",
    "log_request",
]

DEFAULT_ENDPOINT = "https://api.worker.helicone.ai/custom/v1/log"
# Helicone's names for the providers the path reveals (OpenTelemetry's names on the left).
# Statuses about the one event whose request got them (its body: malformed, too large,
# refused), not about the key or the endpoint, which every event shares (401, 403, 404).
_THIS_EVENT_ONLY = frozenset({400, 413, 422})

_HELICONE_PROVIDERS = {"gcp.gemini": "google", "azure.ai.openai": "azure"}


def log_request(payload: Mapping[str, Any], provider: str | None = None) -> dict[str, Any]:
    """The body Helicone receives for one payload (the Go plugin's mapping, fixed)."""
    go = go_event_payload(payload)
    metadata = go["metadata"]
    meta = {k: v for k, v in metadata.items() if isinstance(v, str)}  # Go keeps strings only
    guessed = _genai.provider_name(payload)
    name = provider or _HELICONE_PROVIDERS.get(guessed, guessed)
    meta.setdefault("provider", name)
    meta.setdefault("Helicone-Provider", meta["provider"])
    request = go.get("input")
    response: dict[str, Any] = {
        "status": metadata["status"] if metadata["status"] > 0 else 200,
        "headers": {},
    }
    output = go.get("output")
    if isinstance(output, dict):
        body = dict(output)
        usage = payload.get("usage")
        if "usage" not in body and isinstance(usage, dict) and usage:
            body["usage"] = usage  # Helicone prices the call from it
        response["json"] = body
    else:
        response["json"] = {}
        # No body at all is not "not JSON" (trial 133); a binary one is (review 138).
        if "output_base64" in go or output not in (None, ""):
            response["note"] = "response was not JSON; omitted"
        if isinstance(output, str) and output:
            response["textBody"] = output
    if "output_base64" in go:
        response["base64"] = go["output_base64"]
    start, end = _genai.span_times(payload)
    return {
        "providerRequest": {
            "url": metadata["path"] or "custom-model-nopath",
            "json": request if isinstance(request, dict) else {},
            "meta": meta,
        },
        "providerResponse": response,
        "timing": {"startTime": timing(start), "endTime": timing(end)},
    }


class HeliconeSink:
    """POST events one by one to Helicone (see the module docstring).

    Args:
        api_key: The Helicone API key (sent as a Bearer token, never shown).
        endpoint: The logger URL.
        timeout: Seconds per request.
        provider: `provider` in `meta` (None: guessed per event).
        client: A ready `httpx.AsyncClient` (not closed here).
        name: The sink's name in stats and dead letters.
    """

    def __init__(
        self,
        api_key: SecretStr | str,
        *,
        endpoint: str = DEFAULT_ENDPOINT,
        timeout: float = 30.0,
        provider: str | None = None,
        client: httpx.AsyncClient | None = None,
        name: str = "helicone",
    ) -> None:
        self.endpoint = check_url(endpoint, option_where("helicone", "endpoint"))
        self.provider = provider
        self.name = name
        self.target = HttpTarget(
            self.endpoint,
            headers={
                "content-type": "application/json",
                "authorization": bearer(api_key, "helicone"),
            },
            timeout=timeout,
            connect_timeout=min(timeout, 10.0) or 10.0,
            client=client,
            where="sink 'helicone' (its API key: EVENTBUS_SINK_HELICONE_API_KEY, the option "
            "api_key or LLM_PROXY_API_KEY)",
            url_where=option_where("helicone", "endpoint"),
        )

    async def send(self, batch: Sequence[Mapping[str, Any]]) -> None:
        """POST each event in order; on the first failure, raise with `delivered` set to the
        events already logged, so that only the rest is retried or dead-lettered (and with
        `refused=1` when Helicone refused that one event's request: only it is dead-lettered)."""
        done = 0
        try:
            for done, payload in enumerate(batch):
                body = json.dumps(
                    log_request(payload, self.provider),
                    ensure_ascii=False,
                    separators=(",", ":"),
                    default=str,
                ).encode()
                response = await self.target.post(body, delivered=done)
                error = self.target.error_for(response, delivered=done)
                if error is not None:
                    if response.status_code in _THIS_EVENT_ONLY:
                        error.refused = 1
                    raise error
        except asyncio.CancelledError as cancelled:
            # The dispatcher's stop cut this batch off: the events logged so far are not handed
            # back to be logged again after a restart (trial 234: 6 of 10 logged twice).
            mark_delivered(cancelled, done)
            raise

    async def close(self) -> None:
        """Close the HTTP client."""
        await self.target.close()

    def __repr__(self) -> str:
        endpoint = redact_one_url(self.endpoint)
        return f"<HeliconeSink {self.name!r} endpoint={endpoint!r} api_key=***>"


def build_sink(settings: EventBusSettings, options: Mapping[str, str]) -> HeliconeSink:
    """Sink factory: `helicone` with its options."""
    check_options(options, "helicone", ("api_key", "endpoint", "timeout", "provider"))
    return HeliconeSink(
        api_key("helicone", options, settings),
        endpoint=options.get("endpoint") or DEFAULT_ENDPOINT,
        timeout=option_float(options, "helicone", "timeout", 30.0, positive=True),
        provider=options.get("provider") or None,
    )


@hookimpl
def eventbus_register_sinks(register: RegisterFn) -> None:
    """Register the `helicone` sink."""
    register("helicone", build_sink)
