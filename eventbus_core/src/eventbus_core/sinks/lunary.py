"""The `lunary` sink: the Go dispatcher's Lunary plugin, with its defects fixed.

Each batch is one `POST` to Lunary's run-ingestion endpoint (default
`https://api.lunary.ai/v1/runs/ingest`) with `Content-Type: application/json` and
`Authorization: Bearer <key>`; the body is a bare JSON array of the Go dispatcher's
`EventPayload` objects (`type` "llm", `event` "start", `runId`, `timestamp`, `input`, `output`,
`tokensUsage`, `metadata`, `log_id`), as the Go plugin sends them. Differences
(docs/sinks/lunary.md): 4xx other than 408/429 are dead-lettered instead of retried three
times, `Retry-After` is obeyed, `tokensUsage` is filled, `runId` is stable across retries.

Options (`--sink-opt key=value` or `EVENTBUS_SINK_LUNARY_<KEY>`):
    api_key: The project key (default: LLM_PROXY_API_KEY, as the Go dispatcher).
    endpoint: The ingestion URL.
    timeout: Seconds per request (default 30, as Go).
    end_events: Also send the `end` event Lunary's API asks for to complete a run
        (default false: exactly the Go plugin's one `start` event per request).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from eventbus_core._settings import EventBusSettings
from eventbus_core._sink import check_options, option_bool, option_float, option_where
from eventbus_core.hookspecs import RegisterFn, hookimpl
from eventbus_core.redact._secrets import redact_one_url
from eventbus_core.sinks._go_payload import go_event_payload
from eventbus_core.sinks._http import HttpTarget, check_url
from eventbus_core.sinks._keys import api_key, bearer

if TYPE_CHECKING:
    import httpx

__all__ = ["DEFAULT_ENDPOINT", "LunarySink", "build_sink", "eventbus_register_sinks"]

DEFAULT_ENDPOINT = "https://api.lunary.ai/v1/runs/ingest"


class LunarySink:
    """POST batches to Lunary (see the module docstring).

    Args:
        api_key: The project key (sent as a Bearer token, never shown).
        endpoint: The ingestion URL.
        timeout: Seconds per request.
        end_events: Send an `end` event after each `start` event.
        client: A ready `httpx.AsyncClient` (not closed here).
        name: The sink's name in stats and dead letters.
    """

    def __init__(
        self,
        api_key: SecretStr | str,
        *,
        endpoint: str = DEFAULT_ENDPOINT,
        timeout: float = 30.0,
        end_events: bool = False,
        client: httpx.AsyncClient | None = None,
        name: str = "lunary",
    ) -> None:
        self.endpoint = check_url(endpoint, option_where("lunary", "endpoint"))
        self.end_events = end_events
        self.name = name
        self.target = HttpTarget(
            self.endpoint,
            headers={
                "content-type": "application/json",
                "authorization": bearer(api_key, "lunary"),
            },
            timeout=timeout,
            connect_timeout=min(timeout, 10.0) or 10.0,
            client=client,
            where="sink 'lunary' (its API key: EVENTBUS_SINK_LUNARY_API_KEY, the option "
            "api_key or LLM_PROXY_API_KEY)",
            url_where=option_where("lunary", "endpoint"),
        )

    def body(self, batch: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The JSON array sent for `batch`."""
        out = []
        for payload in batch:
            out.append(go_event_payload(payload))
            if self.end_events:
                out.append(go_event_payload(payload, event="end"))
        return out

    async def send(self, batch: Sequence[Mapping[str, Any]]) -> None:
        """POST the batch as one request (nothing for an empty batch)."""
        if not batch:
            return
        body = json.dumps(
            self.body(batch), ensure_ascii=False, separators=(",", ":"), default=str
        ).encode()
        response = await self.target.post(body)
        error = self.target.error_for(response)
        if error is not None:
            raise error

    async def close(self) -> None:
        """Close the HTTP client."""
        await self.target.close()

    def __repr__(self) -> str:
        return f"<LunarySink {self.name!r} endpoint={redact_one_url(self.endpoint)!r} api_key=***>"


def build_sink(settings: EventBusSettings, options: Mapping[str, str]) -> LunarySink:
    """Sink factory: `lunary` with its options."""
    check_options(options, "lunary", ("api_key", "endpoint", "timeout", "end_events"))
    return LunarySink(
        api_key("lunary", options, settings),
        endpoint=options.get("endpoint") or DEFAULT_ENDPOINT,
        timeout=option_float(options, "lunary", "timeout", 30.0, positive=True),
        end_events=option_bool(options, "lunary", "end_events", False),
    )


@hookimpl
def eventbus_register_sinks(register: RegisterFn) -> None:
    """Register the `lunary` sink."""
    register("lunary", build_sink)
