"""`check()` of the Redis buses (the `Reachable` capability): one PING on a connection of its own.

The bus's own client is left alone: its connections belong to the writer and subscriber
threads, and its timeouts are sized for their work, not for a quick "is anybody there?".
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from eventbus_core import BackendUnavailableError
from eventbus_redis._client import describe_client, safe_error

__all__ = ["check_reachable"]


def check_reachable(client: Any, timeout: float) -> None:
    """Connect to where `client` points (authenticating and selecting its database, as it
    would) and PING, each step bounded by `timeout` seconds; then hang up.

    Raises:
        BackendUnavailableError: no answer, a refused connection, a TLS or authentication
            failure, or an error reply; the message says where (no password) and why.
    """
    timeout = max(0.05, float(timeout))
    pool = client.connection_pool
    options = {
        **pool.connection_kwargs,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    connection = None
    try:
        connection = pool.connection_class(**options)
        connection.connect()
        connection.send_command("PING")
        connection.read_response()
    except (redis.RedisError, OSError) as exc:
        where = describe_client(client)
        raise BackendUnavailableError(
            f"Redis at {where} did not answer ({safe_error(exc)}); check that Redis is running "
            "and reachable at that address, and that the URL's password and database are right"
        ) from None
    finally:
        if connection is not None:
            connection.disconnect()
