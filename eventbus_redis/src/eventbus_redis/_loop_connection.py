"""`LoopConnection`: the writer's connection on the publishing event loop (redis-py's asyncio
client), made from the synchronous client's settings.

The same server, credentials, database, TLS and timeouts as the client the bus was given; only
what is specific to the synchronous client (its parser, retry policy and connect hook, which the
asyncio client would call without awaiting) is left to the asyncio client's own defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final

import redis
import redis.asyncio.connection as aio

from eventbus_redis._client import connection_timeouts

__all__ = ["LoopConnection", "loop_connection_supported", "pack_commands"]

# Settings of the synchronous connection whose values are synchronous objects.
_SYNC_ONLY: Final = frozenset({"parser_class", "retry", "redis_connect_func", "connection_pool"})


_ACCEPTED: dict[type[Any], frozenset[str]] = {}


def _accepted(cls: type[Any]) -> frozenset[str]:
    """Keyword arguments the constructors of `cls` name (unknown ones would raise)."""
    known = _ACCEPTED.get(cls)
    if known is not None:
        return known
    names: set[str] = set()
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        for param in inspect.signature(init).parameters.values():
            if param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD):
                names.add(param.name)
    known = _ACCEPTED[cls] = frozenset(names - _SYNC_ONLY - {"self"})
    return known


_SUPPORTED: Final = (
    redis.connection.Connection,
    redis.connection.SSLConnection,
    redis.connection.UnixDomainSocketConnection,
)


def loop_connection_supported(client: redis.Redis) -> bool:
    """True when the client connects with one of redis-py's own connection classes, whose
    settings an asyncio connection can take over. A class of its own (fakeredis's, a proxy's)
    is not imitated: such a client is written from a thread."""
    pool = getattr(client, "connection_pool", None)
    return getattr(pool, "connection_class", None) in _SUPPORTED


def _asyncio_class(sync_class: type[Any]) -> type[aio.AbstractConnection]:
    if issubclass(sync_class, redis.connection.UnixDomainSocketConnection):
        return aio.UnixDomainSocketConnection
    if issubclass(sync_class, redis.connection.SSLConnection):
        return aio.SSLConnection
    return aio.Connection


class LoopConnection:
    """One asyncio connection to the server of `client`, used from one task at a time.

    Args:
        client: The synchronous client whose connection settings to use.
    """

    def __init__(self, client: redis.Redis) -> None:
        pool = client.connection_pool
        cls = _asyncio_class(pool.connection_class)
        accepted = _accepted(cls)
        kwargs = {k: v for k, v in pool.connection_kwargs.items() if k in accepted}
        # The socket timeout is applied here (`_within`), not by redis-py: on Python 3.11 it
        # sends through asyncio.wait_for(), a task of its own per write, which a loop closed by
        # hand in the middle of a write destroyed pending, with an ERROR at exit ("Task was
        # destroyed but it is pending!") and a "never awaited" warning.
        # Those the synchronous client's connections use: redis-py's defaults included.
        self._timeout, connect_timeout = connection_timeouts(client)
        connect_timeout = connect_timeout or self._timeout
        self._connect_within: float | None = (
            None
            if self._timeout is None or connect_timeout is None
            else connect_timeout + self._timeout  # the TCP connection, then the handshake
        )
        kwargs["socket_timeout"] = None
        kwargs["socket_connect_timeout"] = connect_timeout
        self._conn: Any = cls(**kwargs)  # redis-py's asyncio connection is not fully typed
        self._connected = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = os.getpid()
        self._keeper: asyncio.Task[None] | None = None

    def hold(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind the connection to `loop` (the running one) until `discard()`, or until the
        loop shuts down (`asyncio.run()` cancels every task as it ends): either way it is
        closed on the loop, so no socket outlives it unclosed."""
        self._loop = loop
        self._keeper = loop.create_task(self._keep(loop), name="eventbus-redis-loop-connection")
        with contextlib.suppress(AttributeError):  # a loop closed without cancelling its tasks
            self._keeper._log_destroy_pending = False  # type: ignore[attr-defined]

    async def _keep(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            # Not get_running_loop(): in a child forked inside the loop, which runs the loop's
            # tasks on (asyncio.run()'s teardown), it raises, and asyncio printed "Task
            # exception was never retrieved" for this task (trial 191).
            await loop.create_future()
        finally:
            if os.getpid() == self._pid:
                await self.close()
            # A forked child leaves the socket alone: closing it there would unregister it
            # from the epoll instance the child shares with its parent, whose loop would then
            # never hear the replies on it. (redis-py's disconnect() fails there today, before
            # it closes anything, for want of a running loop: this does not count on that.)

    def discard(self) -> None:
        """Close the connection on its loop, from any thread (nothing once the loop is gone)."""
        keeper, loop = self._keeper, self._loop
        if keeper is None or loop is None or keeper.done():
            return
        if asyncio._get_running_loop() is loop:
            keeper.cancel()
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed
            loop.call_soon_threadsafe(keeper.cancel)

    async def execute(
        self, commands: Sequence[tuple[Any, ...]], sending: Callable[[], None] | None = None
    ) -> list[Any]:
        """Send `commands` in one write and read their replies; an error reply is returned in
        its place as a `redis.ResponseError` (the connection stays usable). Anything else (the
        connection failed, or timed out) raises, and the connection must be closed.

        `sending` is called once connected, just before the commands leave: a failure before
        it (no connection, refused credentials) sent nothing.
        """
        conn = self._conn
        if not self._connected:
            async with _within(self._connect_within, "connecting to Redis"):
                await conn.connect()
            self._connected = True
        packed = pack_commands(commands, conn.encoder)
        if packed is None:
            packed = b"".join(conn.pack_commands(list(commands)))
        if sending is not None:
            sending()
        async with _within(self._timeout, "writing to socket"):
            await conn.send_packed_command(packed, check_health=False)
        replies: list[Any] = []
        for _ in commands:
            try:
                async with _within(self._timeout, "reading from socket"):
                    replies.append(await conn.read_response())
            except redis.ResponseError as exc:
                replies.append(exc)
        return replies

    async def close(self) -> None:
        """Close the connection (on its loop)."""
        with contextlib.suppress(Exception):
            await self._conn.disconnect()


@contextlib.asynccontextmanager
async def _within(seconds: float | None, doing: str) -> AsyncIterator[None]:
    """Bound the block by `seconds` (None: unbounded), raising redis-py's `TimeoutError`, as
    its own timeout would, when they pass. (redis-py closes the connection on the way out.)"""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise redis.TimeoutError(f"Timeout {doing}") from None


def pack_commands(commands: Sequence[tuple[Any, ...]], encoder: Any) -> bytes | None:
    """`commands` in the Redis protocol, as redis-py's asyncio connection packs them with
    `encoder` (its `Encoder`), in one buffer; None for an argument other than `bytes`, `str` and
    `int` (bool, float, buffers), or a command name with a space, which redis-py then packs.

    Why not redis-py's: its asyncio packer copies its growing buffer at every argument under
    6 KB, 3.5x this one's cost for a batch of 100 small events (about 1.3 µs per event, on the
    publishing loop). hiredis's packer, which the synchronous client uses, is 4x faster than
    redis-py's on small arguments but 20x slower on 55 KB ones.
    """
    encoding, errors = encoder.encoding, encoder.encoding_errors
    parts: list[bytes] = []
    append = parts.append
    for command in commands:
        name = command[0] if command else None
        if type(name) is str:
            spaced = " " in name
        elif type(name) is bytes:
            spaced = b" " in name
        else:
            return None
        if spaced:
            return None  # "CONFIG GET": redis-py splits it into two arguments
        append(b"*%d\r\n" % len(command))
        for arg in command:
            kind = type(arg)
            if kind is bytes:
                data = arg
            elif kind is str:
                data = arg.encode(encoding, errors)
            elif kind is int:
                data = b"%d" % arg  # what repr() writes for an int, as redis-py sends it
            else:
                return None
            append(b"$%d\r\n" % len(data))
            append(data)
            append(b"\r\n")
    return b"".join(parts)
