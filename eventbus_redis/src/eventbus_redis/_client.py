"""Connection helpers shared by the Redis backends: clients from settings, backoff, safe text.

Nothing here opens a connection: redis-py connects lazily, which is what lets an application
start while Redis is unreachable.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from eventbus_core import Backoff, EventBusSettings, SettingsError, redact_url
from eventbus_redis._settings import ttl_seconds

__all__ = [
    "TRANSIENT_ERRORS",
    "Backoff",  # core's policy, named here for this package's loops
    "client_from_settings",
    "describe_client",
    "safe_error",
    "socket_timeout",
    "ttl_seconds",
]

TRANSIENT_ERRORS: Final = (redis.ConnectionError, redis.TimeoutError, OSError)
"""Errors that mean "Redis is unreachable or slow": retried with backoff, never raised."""

_SOCKET_TIMEOUT: Final = 10.0  # a dead peer must not hang the writer thread for ever
_CONNECT_TIMEOUT: Final = 2.0


def client_from_settings(settings: EventBusSettings) -> redis.Redis:
    """Build a redis-py client from `REDIS_URL` (`redis://`, `rediss://`, `unix://`), or, when
    it is unset, from the Go llm-proxy's `REDIS_ADDR` (host:port) and `REDIS_DB`.

    The client connects on first use, so this succeeds while Redis is down. It does not retry
    by itself: a failed command fails at once and the bus's own backoff takes over. (A client you
    build yourself should do the same, e.g. `retry=Retry(NoBackoff(), 0)`: redis-py's default
    retries sleep for seconds inside a single command.)

    Raises:
        SettingsError: neither `REDIS_URL` nor `REDIS_ADDR` is set.
    """
    if not settings.redis_url:
        raise SettingsError(
            f"backend {settings.backend!r} needs a Redis server: set REDIS_URL, e.g. "
            "REDIS_URL=redis://localhost:6379/0 (rediss:// for TLS, unix:///path/redis.sock), "
            "or the Go llm-proxy's REDIS_ADDR=localhost:6379 (and REDIS_DB)"
        )
    try:
        client = redis.Redis.from_url(
            str(settings.redis_url),
            socket_timeout=_SOCKET_TIMEOUT,
            socket_connect_timeout=_CONNECT_TIMEOUT,
            health_check_interval=30,
            # No retries inside redis-py (its default sleeps up to seconds per command): the
            # writer, the subscriber thread and consumers back off themselves, and stop() and
            # read(timeout) stay as short as asked.
            retry=Retry(NoBackoff(), 0),
        )
        # redis-py hands the URL's query options to each connection it makes, on first use:
        # make one now (no I/O), so that an option it does not take is said here, naming the
        # variable, rather than as a TypeError from every command.
        pool = client.connection_pool
        pool.connection_class(**pool.connection_kwargs)
        _check_durations(pool.connection_kwargs)
    except (ValueError, TypeError, redis.RedisError) as exc:
        # redis-py quotes the URL in some messages: never let the password through.
        source = getattr(settings, "redis_url_source", "REDIS_URL")
        shown = repr(settings.redis_url)  # RedactedURL: the password masked
        unknown = _UNKNOWN_OPTION.search(str(exc))
        if unknown:
            option = unknown.group(1)
            hint = " (ssl_* options need rediss://)" if option.startswith("ssl") else ""
            reason = f"has a query option redis-py does not take here: {option!r}{hint}"
        else:
            reason = f"cannot be used: {safe_error(exc)}"
        raise SettingsError(
            f"{source} ({shown}) {reason}", problems=[("redis_url", shown, reason)]
        ) from None
    return client


_UNKNOWN_OPTION: Final = re.compile(r"unexpected keyword argument '(\w+)'")
# The URL's options that are durations in seconds. redis-py takes a negative one and fails only
# when it connects (`socket.settimeout`: "Timeout value out of range"), on every write.
_DURATIONS: Final = ("socket_timeout", "socket_connect_timeout", "health_check_interval")


def _check_durations(options: dict[str, Any]) -> None:
    """Raise ValueError, naming the option, for a duration among `options` that is negative or
    not finite (`nan`, `inf`: socket timeouts refuse them too), or a socket timeout of 0 (a
    socket that never waits: every read fails at once)."""
    for name in _DURATIONS:
        value = options.get(name)
        if not isinstance(value, int | float):
            continue
        if not 0 <= value < math.inf:
            raise ValueError(
                f"{name}={value:g} is not a duration: give a finite number of seconds, 0 or more"
            )
        if value == 0 and name != "health_check_interval":
            raise ValueError(f"{name}=0 would make every read fail at once: give seconds, e.g. 5")


def describe_client(client: Any) -> str:
    """Where `client` connects, for reprs and logs: host, port or socket, and db; no secrets."""
    try:
        kwargs = client.connection_pool.connection_kwargs
    except AttributeError:
        return type(client).__name__
    db = kwargs.get("db", 0)
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={db}"
    host, port = kwargs.get("host", "?"), kwargs.get("port", "?")
    connection_class = getattr(client.connection_pool, "connection_class", None)
    tls = isinstance(connection_class, type) and issubclass(connection_class, redis.SSLConnection)
    scheme = "rediss" if tls else "redis"
    if ":" in str(host):
        host = f"[{host}]"  # an IPv6 address, bracketed as in a URL
    return f"{scheme}://{host}:{port}/{db}"


def connection_timeouts(client: Any) -> tuple[float | None, float | None]:
    """The socket timeout and the connect timeout, in seconds (None: no limit, or unknown), that
    a connection of `client` uses: those the client was given, or else redis-py's defaults,
    which its `connection_kwargs` do not show (5 s each since redis-py 8; none before)."""
    try:
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
    except AttributeError:
        return None, None
    try:  # built, not connected: it holds the defaults its class applies
        probe: Any = pool.connection_class(**kwargs)
        values = (probe.socket_timeout, probe.socket_connect_timeout)
    except Exception:  # a connection class of its own (fakeredis's): what was given
        values = (kwargs.get("socket_timeout"), kwargs.get("socket_connect_timeout"))
    timeout, connect = (float(v) if v else None for v in values)
    return timeout, connect


def socket_timeout(client: Any) -> float | None:
    """The client's socket timeout in seconds, or None (no limit / unknown)."""
    return connection_timeouts(client)[0]


def safe_error(exc: BaseException) -> str:
    """`exc` as text fit for logs and stats: type and message with any URL password masked."""
    return redact_url(f"{type(exc).__name__}: {exc}")
