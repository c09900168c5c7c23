"""API keys of the sinks of hosted products: found in options or settings, kept as
`SecretStr` (never shown by a repr, a log line or an error message)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import SecretStr

from eventbus_core._errors import SettingsError
from eventbus_core._settings import EventBusSettings

__all__ = ["api_key", "bearer"]

_KEY = re.compile(r"[\x21-\x7e]+")  # visible ASCII, at least one


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


def bearer(key: SecretStr | str, sink: str) -> str:
    """`Bearer <key>` for `sink`'s key, spaces and newlines at either end dropped (a key read
    from a file ends in one).

    Raises:
        SettingsError: the key has a space, a control character or a non-ASCII character
            inside: an HTTP header may carry a space or a tab, no key does (two values pasted
            into one; the trial's sink sent one with a tab as it was). The message names where
            keys are set, never the key.
    """
    value = (key.get_secret_value() if isinstance(key, SecretStr) else key).strip()
    if not _KEY.fullmatch(value):
        raise SettingsError(
            f"sink {sink!r}: its API key has a space, a control character or a non-ASCII "
            f"character inside it, which no API key has; set EVENTBUS_SINK_{sink.upper()}_API_KEY "
            "(or the option api_key, or LLM_PROXY_API_KEY) to the key alone (the value is not "
            "shown)"
        )
    return f"Bearer {value}"
