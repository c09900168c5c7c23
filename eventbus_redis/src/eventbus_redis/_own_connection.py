"""`OwnConnection`: one Redis connection a background thread keeps for itself, cuttable.

The writer thread (and the stream subscriber thread's blocking wait) use a connection made
from the client's settings but kept out of its pool, so that `stop()` can cut it from another
thread at its deadline without network I/O (`cut()`: a socket shutdown) and the thread,
blocked on a paused or frozen server, wakes at once. In a forked child the connection is the
parent's: `forget()` drops it without touching its socket.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import Any

import redis

__all__ = ["OwnConnection", "cut_connection", "send_all"]

_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, drops unsent


def send_all(conn: Any, commands: list[tuple[Any, ...]]) -> None:
    """Send `commands` on `conn` in one `sendall`.

    redis-py sends a packed command piece by piece (one `sendall` per ~6 KB), and every call
    releases and retakes the GIL: next to a busy event loop each retake can wait up to the
    switch interval (5 ms), so a batch of events took dozens of them. Joined, it takes one.
    """
    conn.send_packed_command([b"".join(conn.pack_commands(commands))], check_health=False)


def cut_connection(conn: Any) -> None:
    """Shut `conn`'s socket down from any thread: a thread blocked reading it wakes at once.

    No network I/O on the caller's thread: `shutdown` only tells the kernel. SO_LINGER 0 makes
    the owner's later close a reset rather than an orderly close.
    """
    sock = getattr(conn, "_sock", None)
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError, ValueError, TypeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
    with contextlib.suppress(OSError, AttributeError, ValueError, TypeError):
        # The plain socket's shutdown: an SSL socket's own would tear down its TLS state under
        # the thread that is using it.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class OwnConnection:
    """A connection with `client`'s settings, outside its pool, used by one thread.

    Args:
        client: The client whose connection settings (host, TLS, password, timeouts) to use.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._conn: Any = None

    def get(self) -> Any:
        """The connection, connected on first use (in the owning thread)."""
        if self._conn is None:
            pool = self._pool
            conn = pool.connection_class(**dict(pool.connection_kwargs))
            self._conn = conn  # before connecting: cut() can end a hanging handshake
            try:
                conn.connect()
            except BaseException:
                self.reset()
                raise
        return self._conn

    @property
    def current(self) -> Any:
        """The connection if there is one (None after a reset)."""
        return self._conn

    def call(self, command: tuple[Any, ...]) -> Any:
        """Send one command and read its reply. Any failure other than Redis's own reply drops
        the connection, whose state is then unknown."""
        conn = self.get()
        try:
            send_all(conn, [command])
            return conn.read_response()
        except redis.ResponseError:
            raise  # Redis answered: the connection itself is fine
        except BaseException:
            self.reset()
            raise

    def read(self, n: int = 1, *, raise_errors: bool = True) -> list[Any]:
        """Read `n` replies of commands sent with `send_all(get(), ...)`; Redis's error replies
        raise the first of them once all are read, or with `raise_errors=False` stand in the
        list in their commands' places."""
        conn = self._conn
        if conn is None:
            raise redis.ConnectionError("no connection for the reply")
        replies: list[Any] = []
        error: redis.ResponseError | None = None
        try:
            for _ in range(n):
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as exc:  # read the rest: the connection stays usable
                    error = error or exc
                    replies.append(exc)
        except BaseException:
            self.reset()
            raise
        if error is not None and raise_errors:
            raise error
        return replies

    def cut(self) -> None:
        """Cut the connection from another thread (no network I/O)."""
        conn = self._conn
        if conn is not None:
            cut_connection(conn)

    def reset(self) -> None:
        """Drop the connection (after an error its state is unknown)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # it is gone either way
                conn.disconnect()

    def forget(self) -> None:
        """In a forked child: drop the parent's connection. Only this process's copy of the
        socket is closed: redis-py shuts a socket down only in the process that opened it, so
        the parent's connection is untouched."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.disconnect()
