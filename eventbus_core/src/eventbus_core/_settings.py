"""`EventBusSettings`: configuration from the environment, read with pydantic-settings.

Every field has exactly one environment variable (listed in `ENV_VARS` and in
`docs/configuration.md`); an invalid value raises `SettingsError` naming that variable.
"""

from __future__ import annotations

import re
from typing import Any, Final

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventbus_core._errors import SettingsError
from eventbus_core.redact._secrets import RedactedURL, redact_url

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
    redis_addr: str | None = _env(
        "REDIS_ADDR",
        default=None,
        description="Redis host:port as the Go llm-proxy reads it; used when REDIS_URL is unset.",
    )
    redis_db: int = _env(
        "REDIS_DB",
        default=0,
        ge=0,
        description="Redis database number with REDIS_ADDR (the Go llm-proxy's variable).",
    )
    stop_timeout: float = _env(
        "EVENTBUS_STOP_TIMEOUT",
        default=5.0,
        ge=0,
        description="Seconds stop() waits at most to deliver what was accepted.",
    )
    redis_key: str = _env(
        "EVENTBUS_REDIS_KEY",
        default="llm-proxy-events",
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

    # --- dispatcher and sinks (docs/configuration.md, "Dispatcher and sinks") ---
    sinks: str = _env(
        "EVENTBUS_SINKS",
        default="console",
        description="Comma-separated sink names the dispatcher sends to, e.g. jsonl,webhook.",
    )
    batch_size: int = _env(
        "EVENTBUS_BATCH_SIZE",
        default=100,
        ge=1,
        le=100_000,
        description="Most events per batch handed to a sink.",
    )
    flush_interval: float = _env(
        "EVENTBUS_FLUSH_INTERVAL",
        default=5.0,
        gt=0,
        description="Seconds a partial batch waits at most before it is sent.",
    )
    sink_queue_size: int = _env(
        "EVENTBUS_SINK_QUEUE_SIZE",
        default=1000,
        ge=1,
        description="Events each sink's queue holds before reading pauses (back-pressure).",
    )
    stall_timeout: float = _env(
        "EVENTBUS_STALL_TIMEOUT",
        default=5.0,
        ge=0,
        description="Shared consumer mode: seconds a sink's full queue may hold reading back "
        "before its share is dead-lettered (0: wait as long as it takes).",
    )
    dispatch_buffer: int = _env(
        "EVENTBUS_DISPATCH_BUFFER",
        default=10_000,
        ge=1,
        le=10_000_000,
        description="Events each subscription the dispatcher reads from a bus holds (bursts).",
    )
    retries: int = _env(
        "EVENTBUS_RETRIES",
        default=3,
        ge=0,
        le=100,
        description="Resends of a failed batch before it is dead-lettered.",
    )
    retry_base: float = _env(
        "EVENTBUS_RETRY_BASE",
        default=1.0,
        ge=0,
        description="Seconds before the first retry; doubles each retry, with jitter.",
    )
    retry_cap: float = _env(
        "EVENTBUS_RETRY_CAP",
        default=30.0,
        ge=0,
        description="Longest backoff delay in seconds.",
    )
    retry_after_max: float = _env(
        "EVENTBUS_RETRY_AFTER_MAX",
        default=300.0,
        ge=0,
        description="Longest wait a sink's Retry-After may impose, in seconds.",
    )
    dead_letter_path: str = _env(
        "EVENTBUS_DEAD_LETTER_PATH",
        default="eventbus-dead-letter.jsonl",
        description="JSONL file of dead-lettered events (empty: none; failures are dropped).",
    )
    shutdown_timeout: float = _env(
        "EVENTBUS_SHUTDOWN_TIMEOUT",
        default=10.0,
        ge=0,
        description="Seconds the dispatcher takes at most to send what it holds when stopped.",
    )
    stats_interval: float = _env(
        "EVENTBUS_STATS_INTERVAL",
        default=60.0,
        ge=0,
        description="Seconds between DEBUG log lines of the dispatcher's figures (0: never).",
    )
    consumer_groups: str = _env(
        "EVENTBUS_CONSUMER_GROUPS",
        default="per-sink",
        pattern="^(per-sink|shared)$",
        description="per-sink: a subscription/consumer group per sink; shared: one for all.",
    )
    consumer_name: str | None = _env(
        "EVENTBUS_CONSUMER_NAME",
        default=None,
        description="Consumer name within a Redis streams group (default: host and pid).",
    )
    transformer: str = _env(
        "EVENTBUS_TRANSFORMER",
        default="",
        description="Custom transformer as package.module:function (empty: the LLM one).",
    )
    body_binary: str = _env(
        "EVENTBUS_BODY_BINARY",
        default="base64",
        pattern="^(base64|placeholder)$",
        description="How the transformer keeps binary bodies: base64 or placeholder.",
    )
    body_max_bytes: int = _env(
        "EVENTBUS_BODY_MAX_BYTES",
        default=1_048_576,
        ge=0,
        description="Decoded bodies larger than this become a placeholder in payloads.",
    )
    redact: bool = _env(
        "EVENTBUS_REDACT",
        default=True,
        description="Redact payloads before sinks see them (headers always, bodies too).",
    )
    redact_on_publish: bool = _env(
        "EVENTBUS_REDACT_ON_PUBLISH",
        default=False,
        description="Also redact each event in publish(), before any backend stores it.",
    )
    redact_headers: str = _env(
        "EVENTBUS_REDACT_HEADERS",
        default="",
        description="Further comma-separated header names to mask.",
    )
    redact_patterns: str = _env(
        "EVENTBUS_REDACT_PATTERNS",
        default="",
        description="Further regular expressions to mask in bodies, separated by newlines.",
    )

    # --- metrics and health (docs/operations.md) ---
    metrics_port: int = _env(
        "EVENTBUS_METRICS_PORT",
        default=0,
        ge=0,
        le=65_535,
        description="Port where eventbus dispatch serves /metrics, /healthz, /readyz (0: off).",
    )
    metrics_host: str = _env(
        "EVENTBUS_METRICS_HOST",
        default="0.0.0.0",
        min_length=1,
        description="Address the metrics and health endpoint listens on.",
    )
    ready_max_lag: float = _env(
        "EVENTBUS_READY_MAX_LAG",
        default=300.0,
        ge=0,
        description="Seconds a sink's oldest unsent event may wait before /readyz fails (0: off).",
    )

    # --- sinks of observability products (docs/sinks/) ---
    otlp_capture_content: bool = _env(
        "EVENTBUS_OTLP_CAPTURE_CONTENT",
        default=False,
        description="The otlp sink adds prompts and completions (redacted) as span events.",
    )
    proxy_api_key: SecretStr | None = _env(
        "LLM_PROXY_API_KEY",
        default=None,
        description="The Go dispatcher's --api-key: the helicone or lunary sink's key when "
        "its api_key option (EVENTBUS_SINK_<NAME>_API_KEY) is not set.",
    )

    _redis_url_from: str = PrivateAttr(default="REDIS_URL")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            problems = _problems(exc)
            raise SettingsError(_explain(problems), problems=problems) from None

    @property
    def redis_url_source(self) -> str:
        """The variable(s) `redis_url` came from: `REDIS_URL`, or `REDIS_ADDR`/`REDIS_DB`."""
        return self._redis_url_from

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

    @model_validator(mode="after")
    def _redis_url_from_go_variables(self) -> EventBusSettings:
        # The Go llm-proxy reads REDIS_ADDR (host:port) and REDIS_DB; REDIS_URL, when set, takes
        # precedence, and REDIS_ADDR is then not used (nor checked).
        if self.redis_url is None and self.redis_addr and self.redis_addr.strip():
            address = _check_redis_addr(self.redis_addr.strip())
            self.redis_url = RedactedURL(f"redis://{address}/{self.redis_db}")
            self._redis_url_from = "REDIS_ADDR/REDIS_DB"
        return self

    @field_validator("sinks", mode="before")
    @classmethod
    def _normalise_sinks(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            value = ",".join(str(v) for v in value)
        if isinstance(value, str):
            return ",".join(n.strip().lower() for n in value.split(",") if n.strip())
        return value

    @field_validator("redact_patterns", mode="after")
    @classmethod
    def _check_patterns(cls, value: str) -> str:
        for pattern in value.splitlines():
            if pattern.strip():
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
        return value

    @property
    def sink_names(self) -> list[str]:
        """`EVENTBUS_SINKS` as a list of names."""
        return [n for n in self.sinks.split(",") if n]

    @property
    def redact_header_names(self) -> list[str]:
        """`EVENTBUS_REDACT_HEADERS` as a list."""
        return [h.strip() for h in self.redact_headers.split(",") if h.strip()]

    @property
    def redact_pattern_list(self) -> list[str]:
        """`EVENTBUS_REDACT_PATTERNS` as a list (one regular expression per line)."""
        return [p for p in self.redact_patterns.splitlines() if p.strip()]

    def env_var(self, field: str) -> str:
        """Return the environment variable that sets `field`."""
        return ENV_VARS[field]


ENV_VARS: Final[dict[str, str]] = {
    name: str(info.validation_alias) for name, info in EventBusSettings.model_fields.items()
}
"""Field name to environment variable, for every setting."""


def _check_redis_addr(value: str) -> str:
    host, colon, port = value.rpartition(":")
    # Never echo a password someone put there: mask it as in a URL.
    shown = redact_url(value if "://" in value else f"redis://{value}").removeprefix("redis://")
    if "://" in value or not colon or not host or any(c in host for c in "/@?#"):
        raise ValueError(
            f"REDIS_ADDR={shown!r} must be host:port, as the Go llm-proxy reads it (e.g. "
            "localhost:6379 or [::1]:6379); for a URL, a password or TLS, set REDIS_URL instead"
        )
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"REDIS_ADDR={shown!r}: port {port!r} is not a number from 1 to 65535 "
            "(e.g. localhost:6379)"
        )
    return value


def _problems(exc: ValidationError) -> list[tuple[str, str, str]]:
    """Each invalid field as `(field, shown value, reason)`, a URL's password masked."""
    found = []
    fields = {variable: field for field, variable in ENV_VARS.items()}
    for err in exc.errors():
        if not err["loc"]:  # a check across settings: its message names the variables
            found.append(("", "", str(err["msg"]).removeprefix("Value error, ")))
            continue
        loc = str(err["loc"][0])
        field = fields.get(loc, loc)  # from the environment, pydantic names the variable
        given = err.get("input")
        shown = "" if isinstance(given, dict) else repr(given)
        if field == "redis_url" and isinstance(given, str):
            shown = repr(RedactedURL(given))
        reason = str(err["msg"]).removeprefix("Value error, ")
        found.append((field, shown, reason))
    return found


def _explain(problems: list[tuple[str, str, str]]) -> str:
    detail = "; ".join(
        f"{ENV_VARS.get(field, field)}{'=' + shown if shown else ''}: {reason}" if field else reason
        for field, shown, reason in problems
    )
    return f"invalid eventbus setting: {detail} (fix the environment variable or the argument)"
