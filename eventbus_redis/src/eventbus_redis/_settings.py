"""`RedisSettings`: the settings of the `redis` and `redis-streams` backends.

Registered with both backends (`register(name, factory, settings=RedisSettings)`), so
`EventBusSettings` accepts these fields as keywords and attributes (`redis_url`, `redis_key`,
...) and reads and checks their variables whenever eventbus settings are read. `REDIS_URL`, or
the Go llm-proxy's `REDIS_ADDR` and `REDIS_DB`, locate the server; the layout and limits are
`EVENTBUS_REDIS_*` (docs/configuration.md).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Any, ClassVar, Final

from pydantic import Field, PrivateAttr, field_validator, model_validator

from eventbus_core import PluginSettings, RedactedURL, SettingsError, get_logger
from eventbus_core.redact._secrets import redact_one_url

log = get_logger("eventbus.redis")

__all__ = ["REDIS_ENV_VARS", "RedisSettings"]

_REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://")


# Redis expires in whole milliseconds (PEXPIRE), up to a 64-bit count of them.
# The append scripts compute with Lua numbers (doubles), which Redis writes in exponent form
# from 1e17 on ("1e+17": "value is not an integer", after the script had pushed the batch, so
# each retry stored it again). Far more than any log keeps.
MAX_LEN_LIMIT: Final = 10**15
_TTL_MIN: Final = 0.001
_TTL_MAX: Final = float(2**62 // 1000)


def ttl_seconds(ttl: timedelta | float | int | None) -> float:
    """Normalise a TTL given as `timedelta` or seconds; 0 or None means no expiry.

    Raises:
        ValueError: the TTL is negative, not finite, beyond what Redis takes, or between 0 and
            one millisecond (Redis expires in whole milliseconds: it would become no expiry).
    """
    if ttl is None:
        return 0.0
    if isinstance(ttl, bool) or not isinstance(ttl, timedelta | int | float):
        raise ValueError(f"ttl must be a timedelta or a number of seconds, got {ttl!r}")
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    if not (seconds == 0 or _TTL_MIN <= seconds <= _TTL_MAX):  # nan fails every comparison
        raise ValueError(
            f"ttl must be 0 (no expiry) or from {_TTL_MIN} to {_TTL_MAX:.0f} seconds (Redis "
            f"expires in whole milliseconds), got {ttl!r}"
        )
    return seconds


def _env(name: str, **kwargs: Any) -> Any:
    return Field(validation_alias=name, **kwargs)


class RedisSettings(PluginSettings):
    """Settings of the Redis backends, read from the environment.

    Build with keyword arguments named after the fields to override the environment, e.g.
    `RedisSettings(redis_url="redis://localhost:6379/0")`; or pass them to `EventBusSettings`,
    which hands them here.

    Raises:
        SettingsError: (a `ValueError`) a value is invalid; the message names its variable.
    """

    settings_label: ClassVar[str] = "eventbus"
    # The Go llm-proxy's address variable: a process set up as the proxy is (REDIS_ADDR, and
    # LLM_PROXY_EVENT_BUS left at the proxy's default, Redis streams) uses the proxy's stream,
    # where its events are. Not REDIS_URL, which the proxy does not read and a cache may set.
    default_backend_when_set: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"redis_addr": "redis-streams"}
    )

    redis_url: RedactedURL | None = _env(
        "REDIS_URL",
        default=None,
        description="Redis connection URL (redis://, rediss:// for TLS, unix://).",
        json_schema_extra={"cli_flag": "--redis-url"},
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
        le=MAX_LEN_LIMIT,
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
        le=MAX_LEN_LIMIT,
        description="Approximate MAXLEN of the stream (0: no trimming).",
    )
    # A dispatcher killed while it holds a batch counts one delivery of each of its entries:
    # restarted six times over a slow sink, it dead-lettered healthy events, and nothing could
    # raise the limit (trial 244). NATS has had EVENTBUS_NATS_MAX_DELIVERIES.
    redis_max_deliveries: int = _env(
        "EVENTBUS_REDIS_MAX_DELIVERIES",
        default=5,
        ge=1,
        le=2**63 - 1,
        description="Deliveries of one stream entry before a consumer dead-letters it.",
    )
    # At least a second: the dispatcher refreshes what it holds at each read and poll (every
    # 0.25 s by default); a limit below that had live batches reclaimed, delivered five times
    # over and then dead-lettered (trial 251 set 0.001).
    redis_claim_idle: float = _env(
        "EVENTBUS_REDIS_CLAIM_IDLE",
        default=30.0,
        ge=1,
        le=10**9,
        allow_inf_nan=False,
        description=(
            "Seconds a stream entry stays pending with a consumer before another consumer of "
            "its group reclaims it."
        ),
    )

    # The Go llm-proxy's names for the same three (its dispatcher and proxy read them): used
    # when eventbus's own are unset, so that a process given Go's environment (a shared Helm
    # chart or .env) writes and reads where Go does. They were ignored without a word, and
    # the two sides then shared nothing (trial 178).
    go_stream_key: str | None = _env(
        "REDIS_STREAM_KEY",
        default=None,
        description="The Go llm-proxy's stream key; used when EVENTBUS_REDIS_STREAM is unset.",
    )
    go_consumer_group: str | None = _env(
        "REDIS_CONSUMER_GROUP",
        default=None,
        description="The Go llm-proxy's consumer group; used when EVENTBUS_REDIS_GROUP is unset.",
    )
    # Text, read as a number only when it is used: a value Go would fall back from must not
    # stop a process that sets EVENTBUS_REDIS_STREAM_MAX_LEN, or uses another backend (the
    # field refused it for every backend, empty included: review 181).
    go_stream_max_len: str | None = _env(
        "REDIS_STREAM_MAX_LEN",
        default=None,
        description=(
            "The Go llm-proxy's stream MAXLEN; used when EVENTBUS_REDIS_STREAM_MAX_LEN is unset."
        ),
    )

    _redis_url_from: str = PrivateAttr(default="REDIS_URL")

    @property
    def redis_url_source(self) -> str:
        """The variable(s) `redis_url` came from: `REDIS_URL`, or `REDIS_ADDR`/`REDIS_DB`."""
        return self._redis_url_from

    @field_validator("redis_ttl", mode="after")
    @classmethod
    def _check_redis_ttl(cls, value: float) -> float:
        return ttl_seconds(value)

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
        unix = value.lower().startswith("unix://")
        host = ""
        if not unix:
            parts = urllib.parse.urlsplit(str(value))
            try:
                port = parts.port
            except ValueError:
                port = 0
            host = parts.hostname or ""
            if port == 0:
                # redis-py would raise "Port could not be cast to integer value" at connect time.
                hint = ""
                if "@" in str(value) and "@" not in parts.netloc:
                    # A `#`, `?` or `/` in the password ends the address before its `@`.
                    hint = "; percent-encode a #, ? or / in the password (%23, %3F, %2F)"
                raise ValueError(
                    f"{value.redacted!r} has no valid port: give a number from 1 to 65535 "
                    f"(6379 is Redis's), or none for 6379{hint}"
                )
        # redis-py reads a path that is not a number as database 0, silently.
        db = value.partition("://")[2].partition("?")[0].partition("#")[0].partition("/")[2]
        if not unix and db and not db.isdigit():
            # "-1" is a number to a reader: say what kind (trial 165). A path with an '@' holds
            # credentials after a slash too many (`rediss:///:pw@host`): not quoted back, it
            # showed the password (trial 209).
            shown = (
                f"not {db!r}"
                if "@" not in db
                else "not a path holding an '@' (a '/' too many before the credentials?)"
            )
            raise ValueError(
                f"the database after the address must be a whole number from 0 up, as in "
                f"redis://host:6379/0, {shown}"
            )
        if any(c.isspace() for c in host):
            # redis-py would take it, and fail to resolve the host at every attempt. (A space
            # in the password is the server's business: redis-py sends it as it is.)
            raise ValueError(
                f"{value.redacted!r}: its host holds whitespace; write it as redis://host:6379/0"
            )
        return value

    @model_validator(mode="after")
    def _redis_url_from_go_variables(self) -> RedisSettings:
        # The Go llm-proxy reads REDIS_ADDR (host:port) and REDIS_DB; REDIS_URL, when set, takes
        # precedence, and REDIS_ADDR is then not used (nor checked).
        if self.redis_url is None and self.redis_addr and self.redis_addr.strip():
            address = _check_redis_addr(self.redis_addr.strip())
            self.redis_url = RedactedURL(f"redis://{address}/{self.redis_db}")
            self._redis_url_from = "REDIS_ADDR/REDIS_DB"
            # Derived, not given: the in-memory default's warning named REDIS_URL as set when
            # only REDIS_ADDR was (trial 178).
            self.__pydantic_fields_set__.discard("redis_url")
        elif self.redis_url is not None and (
            (self.redis_addr and self.redis_addr.strip()) or "redis_db" in self.model_fields_set
        ):
            _warn_if_apart(self.redis_url, (self.redis_addr or "").strip(), self.redis_db)
        return self

    @model_validator(mode="after")
    def _layout_from_go_variables(self) -> RedisSettings:
        for ours, go in _GO_LAYOUT:
            value = getattr(self, go)
            if value is None or not str(value).strip():  # Go takes an empty one as unset too
                continue
            if go == "go_stream_max_len":
                # Refused by the streams backend only, which uses it (`go_stream_max_len_error`):
                # here it would stop every backend (trial 182).
                value = _go_max_len(str(value))
                if value is None:
                    continue
            if ours not in self.model_fields_set:
                setattr(self, ours, value)
                self.__pydantic_fields_set__.discard(ours)  # derived, not given
            elif getattr(self, ours) != value:
                _warn_of_go_layout(ours, getattr(self, ours), go, value)
        return self


_GO_LAYOUT: Final = (
    ("redis_stream", "go_stream_key"),
    ("redis_group", "go_consumer_group"),
    ("redis_stream_max_len", "go_stream_max_len"),
)
"""eventbus's field, and the field of the Go llm-proxy's variable it falls back to."""
_warned_go_layout: set[str] = set()


def _go_max_len(text: str) -> int | None:
    """REDIS_STREAM_MAX_LEN as a number, or None when it is none that a MAXLEN can be."""
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if 0 <= value <= MAX_LEN_LIMIT else None


def go_stream_max_len_error(settings: Any) -> SettingsError | None:
    """The error for a REDIS_STREAM_MAX_LEN the streams backend would use (eventbus's own
    variable unset) that is no MAXLEN, naming it; None if there is none. Only that backend
    asks: a value Go falls back from must not stop the others (trial 182)."""
    text = getattr(settings, "go_stream_max_len", None)
    if not text or not str(text).strip() or "redis_stream_max_len" in settings.model_fields_set:
        return None
    if _go_max_len(str(text)) is not None:
        return None
    return SettingsError(
        f"REDIS_STREAM_MAX_LEN={text!r} (the Go llm-proxy's, read since "
        f"EVENTBUS_REDIS_STREAM_MAX_LEN is unset) must be a whole number from 0 (no trimming) "
        f"to {MAX_LEN_LIMIT}; fix it, or set EVENTBUS_REDIS_STREAM_MAX_LEN"
    )


def _warn_of_go_layout(ours: str, our_value: Any, go: str, go_value: Any) -> None:
    """Warn (once per process and values) that eventbus's variable and the Go llm-proxy's
    for the same thing are both set, and differ: eventbus's wins."""
    fields = RedisSettings.model_fields
    our_var, go_var = fields[ours].validation_alias, fields[go].validation_alias
    message = (
        f"{our_var}={our_value!r} and {go_var}={go_value!r} (the Go llm-proxy's) differ: "
        f"{our_var} wins here, while the Go llm-proxy uses {go_var}, so the two may not share "
        "events; make them agree, or unset one"
    )
    if message not in _warned_go_layout:
        _warned_go_layout.add(message)
        log.warning("%s", message)


_LOOPBACK: Final = frozenset({"localhost", "127.0.0.1", "::1"})
_warned_apart: set[tuple[str, str, int]] = set()


def _warn_if_apart(url: RedactedURL, addr: str, db: int) -> None:
    """Warn (once per process and values) when REDIS_URL, which wins, points elsewhere than
    REDIS_ADDR/REDIS_DB, which the Go llm-proxy reads: set side by side, they were silently
    ignored, even `--backend-option REDIS_DB=16` (helper-108)."""
    parts = urllib.parse.urlsplit(str(url))
    if parts.scheme.lower() not in ("redis", "rediss") or (str(url), addr, db) in _warned_apart:
        return
    from redis.connection import parse_url  # here: redis-py is imported only on this path

    try:
        url_port = parts.port or 6379
        # As redis-py reads it: `?db=N` wins over the path (the path's was compared, trial 178).
        url_db = int(parse_url(str(url)).get("db", 0))  # type: ignore[no-untyped-call]
    except ValueError:  # refused with its own message when the bus connects
        return
    url_host = (parts.hostname or "localhost").lower()
    host, _, port = addr.rpartition(":") if addr else ("localhost", "", "6379")
    host = host.strip("[]").lower() or "localhost"
    same_host = host == url_host or {host, url_host} <= _LOOPBACK
    if same_host and port == str(url_port) and db == url_db:
        return
    _warned_apart.add((str(url), addr, db))
    log.warning(
        "the Redis URL (REDIS_URL or --redis-url) and REDIS_ADDR/REDIS_DB point at different "
        "places (%s; %s, database %d): the URL wins here, while the Go llm-proxy reads "
        "REDIS_ADDR/REDIS_DB, so the two may not share events; make them agree, or unset one",
        url.redacted,
        f"REDIS_ADDR={_shown_addr(addr)}" if addr else "REDIS_ADDR unset",
        db,
    )


def _shown_addr(value: str) -> str:
    """REDIS_ADDR as a message may show it: a password someone put there masked, whatever it
    holds, and what was typed kept (a scheme included: it may be what is wrong). The warning
    above had printed `u:hunter2@host:6379` in clear (trial 121)."""
    return redact_one_url(value) if "://" in value else redact_one_url(f"redis://{value}")[8:]


REDIS_ENV_VARS: Final[dict[str, str]] = {
    name: str(info.validation_alias) for name, info in RedisSettings.model_fields.items()
}
"""Field name to environment variable, for every setting of the Redis backends."""


def _check_redis_addr(value: str) -> str:
    host, colon, port = value.rpartition(":")
    shown = _shown_addr(value)
    if colon and not host and port.isdigit():
        # ":6379" is the local host to the Go proxy (Go dials the loopback address for an
        # empty host): the same here, by address, with no resolver (trial 140).
        host = "127.0.0.1"
        value = f"{host}:{port}"
    # '/', '@', '?' or '#' anywhere (host or port) means a URL or credentials, never host:port.
    if (
        "://" in value
        or not colon
        or not host
        or any(c in value for c in "/@?#")
        or any(c.isspace() for c in value)
    ):
        raise ValueError(
            f"REDIS_ADDR={shown!r} must be host:port, as the Go llm-proxy reads it (e.g. "
            "localhost:6379 or [::1]:6379); for a URL, a password or TLS, set REDIS_URL instead"
        )
    if value.startswith("[") != ("]" in value):
        raise ValueError(
            f"REDIS_ADDR={shown!r}: unbalanced brackets; an IPv6 address is written [::1]:6379"
        )
    if value.startswith("[") and value.endswith("]"):
        raise ValueError(
            f"REDIS_ADDR={shown!r} has no port: give it after the brackets, as in [::1]:6379"
        )
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        # ::1:6379 cannot tell the address's colons from the port's.
        raise ValueError(
            f"REDIS_ADDR={shown!r}: an IPv6 address goes in brackets, as in [::1]:6379"
        )
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"REDIS_ADDR={shown!r}: port {port!r} is not a number from 1 to 65535 "
            "(e.g. localhost:6379)"
        )
    return value
