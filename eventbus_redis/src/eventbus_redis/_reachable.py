"""`check()` of the Redis buses (the `Reachable` capability): one PING on a connection of its own.

The bus's own client is left alone: its connections belong to the writer and subscriber
threads, and its timeouts are sized for their work, not for a quick "is anybody there?".
"""

from __future__ import annotations

import ssl
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from eventbus_core import BackendUnavailableError, SettingsError
from eventbus_redis._client import describe_client, safe_error
from eventbus_redis._config_errors import credentials_error, database_error

__all__ = ["bounded_connection", "check_reachable", "tls_files_error", "tls_trouble"]


def check_reachable(client: Any, timeout: float, source: str | None = None) -> None:
    """Connect to where `client` points (authenticating and selecting its database, as it
    would) and PING, each step bounded by `timeout` seconds; then hang up.

    Args:
        client: The bus's client.
        timeout: Seconds for each step.
        source: The setting(s) the address came from (`EventBusSettings.redis_url_source`),
            named in the messages; None for a client the application built.

    Raises:
        SettingsError: Redis answered, but has no database of the URL's number, or refused
            the credentials; or the CA file of `ssl_ca_certs` cannot be used.
        BackendUnavailableError: no answer, a refused connection, a TLS failure, or an error
            reply; the message says where (no password) and why.
    """
    timeout = max(0.05, float(timeout))
    pool = client.connection_pool
    options = pool.connection_kwargs
    refused = tls_files_error(client)
    if refused is not None:
        raise refused
    connection = None
    try:
        connection = bounded_connection(client, timeout)
        connection.connect()
        connection.send_command("PING")
        connection.read_response()
    except (redis.RedisError, OSError) as exc:
        wrong_db = database_error(exc, options.get("db", 0), source)
        if wrong_db is not None:
            raise wrong_db from None
        where = describe_client(client)
        if source == "REDIS_ADDR/REDIS_DB":  # not what a user of REDIS_URL would look for
            where += f" (from {source})"
        refused = credentials_error(exc, where, source)
        if refused is not None:
            raise refused from None
        if _certificate_refused(exc):
            raise BackendUnavailableError(_certificate_advice(where, exc, source)) from None
        if source == "REDIS_ADDR/REDIS_DB":
            settings = "that REDIS_ADDR and REDIS_DB are right (REDIS_ADDR cannot carry a "
            settings += "password; REDIS_URL can)"
        else:
            url = source or "the client's URL"
            settings = f"that {url} is right (host, port, password and database)"
        raise BackendUnavailableError(
            f"Redis at {where} did not answer ({safe_error(exc)}); check that Redis is running "
            f"and reachable at that address, and {settings}{tls_hint(pool, exc)}"
        ) from None
    finally:
        if connection is not None:
            connection.disconnect()


def bounded_connection(client: Any, timeout: float) -> Any:
    """A new connection (not connected yet) to where `client` points, authenticating and
    selecting its database as it would, each step bounded by `timeout` seconds, with no
    retries: a quick question that a frozen server cannot hold up. The caller disconnects it.

    The bus's own client is left alone: its connections belong to the writer and subscriber
    threads, and its timeouts are sized for their work."""
    pool = client.connection_pool
    options = {
        **pool.connection_kwargs,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    return pool.connection_class(**options)


def tls_files_error(client: Any) -> SettingsError | None:
    """The TLS files of the URL (`ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`), loaded: one
    that is missing, a directory or not PEM is a settings error, said before connecting
    (redis-py's own error, "Error 2 connecting to host:port. No such file or directory.", reads
    as a missing socket: trials 204, 209; and redis-py before 5.0.1 left the socket it had
    opened for the TLS handshake unclosed). None if they load, or none is given."""
    options = client.connection_pool.connection_kwargs
    ca_file = options.get("ssl_ca_certs")
    if ca_file:
        try:
            ssl.create_default_context(cafile=ca_file)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            return SettingsError(
                f"the CA file given for Redis at {describe_client(client)} "
                f"(ssl_ca_certs={ca_file} in its URL) cannot be used ({safe_error(exc)}); give "
                "a readable PEM file"
            )
    cert_file, key_file = options.get("ssl_certfile"), options.get("ssl_keyfile")
    if cert_file or key_file:  # the client's own certificate: "Error 2 connecting" (trial 209)
        given = " and ".join(
            f"{name}={value}"
            for name, value in (("ssl_certfile", cert_file), ("ssl_keyfile", key_file))
            if value
        )
        try:
            if not cert_file:
                raise ValueError("ssl_keyfile needs ssl_certfile")
            ssl.create_default_context().load_cert_chain(cert_file, key_file or None)
        except (OSError, ValueError) as exc:
            return SettingsError(
                f"the client certificate given for Redis at {describe_client(client)} "
                f"({given} in its URL) cannot be used ({safe_error(exc)}); give readable PEM "
                "files, the key matching the certificate"
            )
    return None


def _certificate_advice(where: str, exc: BaseException, source: str | None) -> str:
    url = source or "the client's URL"
    return (
        f"Redis at {where} answered, but its TLS certificate could not be verified "
        f"({safe_error(exc)}); give the CA that signed it in {url} "
        "(rediss://host:port/db?ssl_ca_certs=/path/ca.pem), or check that the host "
        "name is the one the certificate names"
    )


def tls_trouble(
    client: Any, exc: BaseException, source: str | None, *, connected_before: bool
) -> str | None:
    """A running writer's failure worded as `check()` words it where TLS is why, else None:
    the application's log said only "Timeout connecting to server" for `rediss://` to a plain
    server, and "No such file or directory" for a missing CA file (trial 204).

    The TLS files are read again only for an error that is no outage (not a timeout, nor a
    refused or reset connection: review 210), and "use redis://" only for a handshake that
    timed out or met a plain server, on a writer that never connected: one that wrote over TLS
    before, and meets a frozen server, got it (trial 211)."""
    pool = client.connection_pool
    if not issubclass(pool.connection_class, redis.SSLConnection):
        # The other way round (a TLS-only server closes a plain connection) looks like any
        # closed connection: too common to hint at TLS in a running writer's log.
        return None
    text = str(exc)
    lower = text.lower()
    outage = isinstance(exc, TimeoutError | redis.TimeoutError) or any(
        word in lower for word in ("timeout", "timed out", "refused", "reset")
    )
    if not outage and isinstance(exc, OSError | redis.ConnectionError):
        refused = tls_files_error(client)
        if refused is not None:
            return str(refused)
    if _certificate_refused(exc):
        return _certificate_advice(describe_client(client), exc, source)
    handshake = ("timeout connecting" in lower) or "wrong version number" in lower
    hint = tls_hint(pool, exc) if handshake and not connected_before else ""
    return f"{safe_error(exc)}{hint}" if hint else None


def tls_hint(pool: Any, exc: BaseException) -> str:
    """A hint when TLS on one side only may be why: a rediss:// client waits in its handshake
    for a plain server (a timeout), a TLS-only server resets a plain client's connection."""
    text = str(exc).lower()
    if issubclass(pool.connection_class, redis.SSLConnection):
        if "timeout" in text or "timed out" in text or "ssl" in text or "version" in text:
            return "; if that server does not use TLS, use redis:// instead of rediss://"
        return ""
    if "reset" in text or "closed by server" in text or "connection closed" in text:
        return "; a server that requires TLS closes plain connections: if it does, use rediss://"
    return ""


def _certificate_refused(exc: BaseException) -> bool:
    """True when the TLS handshake failed on the server's certificate (redis-py wraps the
    `ssl.SSLCertVerificationError` in a ConnectionError, keeping only its text)."""
    seen: BaseException | None = exc
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        visited.add(id(seen))
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)
