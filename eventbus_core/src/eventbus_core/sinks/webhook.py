"""The `webhook` sink: POSTs each batch as a JSON array to a URL, with httpx.

Responses: 2xx is success; 408, 429 and 5xx are transient (retried, honouring `Retry-After`);
any other status is permanent (dead-lettered at once). Connection errors and timeouts are
transient. Receivers should de-duplicate by `log_id` (delivery is at-least-once).

Options (`--sink-opt key=value` or `EVENTBUS_SINK_WEBHOOK_<KEY>`):
    url: Where to POST (required).
    timeout: Seconds for the whole request (default 10).
    connect_timeout: Seconds to connect (default 5).
    headers: Extra request headers as a JSON object, e.g. `{"Authorization": "Bearer ..."}`.
    header_<name>: One extra header; underscores in `<name>` become dashes
        (`EVENTBUS_SINK_WEBHOOK_HEADER_X_API_KEY=...` sends `x-api-key: ...`).
Header values are never logged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from eventbus_core._bus import check_positive_seconds
from eventbus_core._errors import SettingsError
from eventbus_core._settings import EventBusSettings
from eventbus_core._sink import check_options, option_float, option_where
from eventbus_core.hookspecs import RegisterFn, hookimpl
from eventbus_core.redact._secrets import MaskedMapping
from eventbus_core.sinks._http import HttpTarget, check_url, shown_sink_url

if TYPE_CHECKING:
    import httpx

__all__ = ["WebhookSink", "build_sink", "eventbus_register_sinks"]


class WebhookSink:
    """POST batches to `url` (see the module docstring).

    Errors carry the `error_type` that dead letters and `eventbus_sink_failed_total` show:
    the HTTP status, `timeout` or `connection` (the mapping is `HttpTarget`'s, shared with
    the other HTTP sinks).

    Args:
        url: The endpoint (the `url` attribute shows it with its credentials masked).
        headers: Extra request headers (credentials for the receiver, for instance).
        timeout: Seconds for a whole request.
        connect_timeout: Seconds to establish the connection.
        client: A ready `httpx.AsyncClient` to use instead of building one (not closed here).
        name: The sink's name in stats and dead letters.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        client: httpx.AsyncClient | None = None,
        name: str = "webhook",
    ) -> None:
        check_url(url, option_where("webhook", "url"))
        # As the sink's options are checked: timeout="5" failed and dropped every batch
        # (trial 159).
        for label, seconds in (("timeout", timeout), ("connect_timeout", connect_timeout)):
            check_positive_seconds(label, seconds)
        if client is not None and not callable(getattr(client, "post", None)):
            # client="x" failed every batch (trial 161).
            raise TypeError(
                f"client must be an httpx.AsyncClient (or None), not {type(client).__name__}"
            )
        # Shown masked: a URL's password or token read off the sink (its repr, a log of its
        # fields) left the process as it was (trial 157). The request uses the URL as given.
        self.url = shown_sink_url(url)  # scrub() missed a password with a space in it
        if headers is not None and not isinstance(headers, Mapping):
            # `{**headers}` below would raise Python's own error, naming nothing (trial 234);
            # the names and values are checked with the rest by `HttpTarget`.
            raise TypeError(
                f"headers must be a mapping of names to values, not {type(headers).__name__}"
            )
        self.headers = MaskedMapping({"content-type": "application/json", **(headers or {})})
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.name = name
        self._target = HttpTarget(
            url,
            headers=self.headers,
            timeout=timeout,
            connect_timeout=connect_timeout,
            client=client,
            where="sink 'webhook' (its 'headers' or 'header_<name>' options, "
            "EVENTBUS_SINK_WEBHOOK_HEADER_<NAME>)",
        )

    async def send(self, batch: Sequence[Mapping[str, Any]]) -> None:
        """POST the batch; raise a `SinkError` subclass unless the receiver answered 2xx."""
        body = json.dumps(
            list(batch), ensure_ascii=False, separators=(",", ":"), default=str
        ).encode()
        error = self._target.error_for(await self._target.post(body))
        if error is not None:
            raise error

    async def close(self) -> None:
        """Close the HTTP client (if this sink built it)."""
        await self._target.close()

    def __repr__(self) -> str:
        # As the other HTTP sinks show themselves: the URL masked, header names only.
        names = ", ".join(sorted(self.headers))
        return f"<WebhookSink {self.name!r} url={self.url!r} headers=[{names}]>"


def _headers(options: Mapping[str, str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    raw = options.get("headers")
    if raw:
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise SettingsError(
                f"{option_where('webhook', 'headers')} must be a JSON object such as "
                '{"X-Token": "..."} (its value is not shown here)'
            )
        for name, value in parsed.items():
            # JSON's null, true, a list: Python's str() of them ("None", "True") reached the
            # wire as the header's value (trial 236); a number is the digits as written.
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                # null and true/false said as JSON spells them; anything else by its kind
                # only (a list may hold the credential).
                kind = json.dumps(value) if value is None or isinstance(value, bool) else "a "
                kind += "" if value is None or isinstance(value, bool) else type(value).__name__
                raise SettingsError(
                    f"{option_where('webhook', 'headers')}: header {str(name)!r} must have a "
                    f"string (or number) value, not {kind}"
                )
            headers[str(name)] = value if isinstance(value, str) else json.dumps(value)
    for key, value in options.items():
        for prefix in ("header_", "header."):
            if key.startswith(prefix) and len(key) > len(prefix):
                name = key[len(prefix) :]
                headers[name.replace("_", "-") if prefix == "header_" else name] = value
    return headers


def build_sink(settings: EventBusSettings, options: Mapping[str, str]) -> WebhookSink:
    """Sink factory: `webhook` with its options."""
    check_options(
        options,
        "webhook",
        ("url", "timeout", "connect_timeout", "headers"),
        prefixes=("header_", "header."),
    )
    url = options.get("url")
    if not url:
        raise SettingsError(
            "the webhook sink needs a URL: --sink-opt url=https://... or "
            "EVENTBUS_SINK_WEBHOOK_URL=https://..."
        )
    return WebhookSink(
        url,
        headers=_headers(options),
        timeout=option_float(options, "webhook", "timeout", 10.0, positive=True),
        connect_timeout=option_float(options, "webhook", "connect_timeout", 5.0, positive=True),
    )


@hookimpl
def eventbus_register_sinks(register: RegisterFn) -> None:
    """Register the `webhook` sink."""
    register("webhook", build_sink)
