"""`EventBusSettings`: configuration from the environment, read with pydantic-settings.

Every field has exactly one environment variable (listed in `ENV_VARS` and in
`docs/configuration.md`); an invalid value raises `SettingsError` naming that variable.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventbus_core._errors import SettingsError
from eventbus_core._secrets import RedactedURL

__all__ = ["BACKEND_ALIASES", "ENV_VARS", "EventBusSettings"]

BACKEND_ALIASES: Final = {"in-memory": "memory", "inmemory": "memory"}
"""Alternative spellings accepted for backend names, mapped to the entry-point name."""

_REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://")


def _env(name: str, **kwargs: Any) -> Any:
    return Field(validation_alias=name, **kwargs)


class EventBusSettings(BaseSettings):
    """Settings of eventbus, read from the environment (and optionally a `.env` file).

    Build with keyword arguments named after the fields to override the environment, e.g.
    `EventBusSettings(backend="redis", redis_url="redis://localhost:6379/0")`.

    Raises:
        SettingsError: (a `ValueError`) a value is invalid; the message names its variable.
    """

    model_config = SettingsConfigDict(
        populate_by_name=True,
        extra="ignore",
        case_sensitive=False,
        env_nested_delimiter=None,
    )

    backend: str = _env(
        "LLM_PROXY_EVENT_BUS",
        default="memory",
        description="Backend name: memory (alias in-memory), redis, redis-streams, or a plugin's.",
    )
    buffer_size: int = _env(
        "OBSERVABILITY_BUFFER_SIZE",
        default=1000,
        ge=1,
        le=10_000_000,
        description="Events held by publish()'s buffer (and by each in-memory subscriber).",
    )
    redis_url: RedactedURL | None = _env(
        "REDIS_URL",
        default=None,
        description="Redis connection URL (redis://, rediss:// for TLS, unix://).",
    )
    stop_timeout: float = _env(
        "EVENTBUS_STOP_TIMEOUT",
        default=5.0,
        ge=0,
        description="Seconds stop() waits at most to deliver what was accepted.",
    )
    redis_key: str = _env(
        "EVENTBUS_REDIS_KEY",
        default="llm-proxy:events",
        min_length=1,
        description="List key of the redis log backend; its LogID counter is KEY:seq.",
    )
    redis_ttl: float = _env(
        "EVENTBUS_REDIS_TTL",
        default=86_400.0,
        ge=0,
        description="Seconds the redis log is kept after the last write (0: no expiry).",
    )
    redis_max_len: int = _env(
        "EVENTBUS_REDIS_MAX_LEN",
        default=10_000,
        ge=0,
        description="Newest events the redis log keeps (0: no trimming).",
    )
    redis_stream: str = _env(
        "EVENTBUS_REDIS_STREAM",
        default="llm-proxy-events",
        min_length=1,
        description="Stream key of the redis-streams backend.",
    )
    redis_group: str = _env(
        "EVENTBUS_REDIS_GROUP",
        default="llm-proxy-dispatchers",
        min_length=1,
        description="Consumer group of the redis-streams backend.",
    )
    redis_stream_max_len: int = _env(
        "EVENTBUS_REDIS_STREAM_MAX_LEN",
        default=10_000,
        ge=0,
        description="Approximate MAXLEN of the stream (0: no trimming).",
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(_explain(exc)) from None

    @field_validator("backend", mode="before")
    @classmethod
    def _normalise_backend(cls, value: Any) -> Any:
        if isinstance(value, str):
            name = value.strip().lower()
            if not name:
                raise ValueError("must not be empty (use 'memory' for the in-process default)")
            return BACKEND_ALIASES.get(name, name)
        return value

    @field_validator("redis_url", mode="after")
    @classmethod
    def _check_redis_url(cls, value: RedactedURL | None) -> RedactedURL | None:
        if value is None or value == "":
            return None
        if not value.lower().startswith(_REDIS_SCHEMES):
            raise ValueError(
                f"{value.redacted!r} is not a Redis URL; use redis://host:6379/0, "
                "rediss://host:6380/0 (TLS) or unix:///path/to/redis.sock"
            )
        return value

    def env_var(self, field: str) -> str:
        """Return the environment variable that sets `field`."""
        return ENV_VARS[field]


ENV_VARS: Final[dict[str, str]] = {
    name: str(info.validation_alias) for name, info in EventBusSettings.model_fields.items()
}
"""Field name to environment variable, for every setting."""


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = str(err["loc"][0]) if err["loc"] else "?"
        var = ENV_VARS.get(loc, loc)
        given = err.get("input")
        shown = "" if isinstance(given, dict) else f"={given!r}"
        if var == "REDIS_URL" and isinstance(given, str):
            shown = f"={RedactedURL(given)!r}"
        lines.append(f"{var}{shown}: {err['msg']}")
    detail = "; ".join(lines)
    return f"invalid eventbus setting: {detail} (fix the environment variable or the argument)"
