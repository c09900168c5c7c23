"""API keys of the sinks of hosted products: found in options or settings, kept as
`SecretStr` (never shown by a repr, a log line or an error message)."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import SecretStr

from eventbus_core._errors import SettingsError
from eventbus_core._settings import EventBusSettings

__all__ = ["api_key"]


def _value(secret: SecretStr | None) -> str:
    return secret.get_secret_value().strip() if secret is not None else ""


def api_key(sink: str, options: Mapping[str, str], settings: EventBusSettings) -> SecretStr:
    """The key of `sink`: its `api_key` option (`EVENTBUS_SINK_<NAME>_API_KEY`), else the Go
    dispatcher's `LLM_PROXY_API_KEY`.

    Raises:
        SettingsError: none is set (the message says where to put it).
    """
    for candidate in (options.get("api_key", "").strip(), _value(settings.proxy_api_key)):
        if candidate:
            return SecretStr(candidate)
    raise SettingsError(
        f"the {sink} sink needs an API key: set EVENTBUS_SINK_{sink.upper()}_API_KEY (or the "
        "Go dispatcher's LLM_PROXY_API_KEY); the sink option api_key (--sink-opt) works too, "
        "but shows the key in the process list"
    )
