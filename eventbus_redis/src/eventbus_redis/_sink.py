"""`ScriptSink`: how the writer thread sends a batch to a Lua script, one round trip per batch.

The writer overlaps work: it sends batch k on a dedicated connection, encodes batch k+1 while
Redis runs the script for batch k, and only then reads the reply. Batches still go one at a
time (k+1 is sent after k's reply), so order and retries stay simple. Any failure falls back
to a plain synchronous call through the client's pool, which also loads the script if the
server lost it (NOSCRIPT after a restart).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from eventbus_core import Event

__all__ = ["Prepared", "ScriptSink", "send_all"]


def send_all(conn: Any, commands: list[tuple[Any, ...]]) -> None:
    """Send `commands` on `conn` in one `sendall`.

    redis-py sends a packed command piece by piece (one `sendall` per ~6 KB), and every call
    releases and retakes the GIL: next to a busy event loop each retake can wait up to the
    switch interval (5 ms), so a batch of events took dozens of them. Joined, it takes one.
    """
    conn.send_packed_command([b"".join(conn.pack_commands(commands))], check_health=False)


@dataclass(slots=True)
class Prepared:
    """A batch encoded for the script: its keys and arguments (batch number included, so a
    retry of the same `Prepared` is recognised by the script and not applied twice).

    `mode`, `replies` and `last` record how a sink sent it (see `TransactionSink`)."""

    keys: list[str]
    args: list[Any]
    mode: str = "script"
    replies: int = 0
    last: int = 0


class ScriptSink:
    """Runs one Lua script per batch.

    Args:
        client: The Redis client (its pool provides the connections).
        source: The Lua script.
        encode: Turns a batch into `(keys, args)` (CPU only, no I/O).
        on_result: Called with the script's reply after each applied batch.
    """

    def __init__(
        self,
        client: redis.Redis,
        source: str,
        encode: Callable[[list[Event]], tuple[list[str], list[Any]]],
        on_result: Callable[[Any], None],
    ) -> None:
        self._client = client
        self._script = client.register_script(source)
        self._encode = encode
        self._on_result = on_result
        self._conn: Any = None

    def prepare(self, batch: list[Event]) -> Prepared:
        """Encode `batch` (runs while the previous batch is in Redis's hands)."""
        keys, args = self._encode(batch)
        return Prepared(keys, args)

    def _connection(self) -> Any:
        """The dedicated connection (replies are read after the next batch is encoded)."""
        if self._conn is None:
            self._conn = self._client.connection_pool.get_connection()
        return self._conn

    def send(self, prepared: Prepared) -> None:
        """Send the script call without waiting for the reply."""
        command = ("EVALSHA", self._script.sha, len(prepared.keys), *prepared.keys, *prepared.args)
        try:
            send_all(self._connection(), [command])
        except BaseException:
            self.reset()
            raise

    def receive(self, prepared: Prepared) -> None:
        """Read the reply of `send(prepared)`; raise if the batch may not have been applied."""
        conn = self._conn
        if conn is None:
            raise redis.ConnectionError("no connection for the reply")
        try:
            reply = conn.read_response()
        except redis.ResponseError:
            raise  # NOSCRIPT or a script error: the connection itself is fine
        except BaseException:
            self.reset()
            raise
        self._on_result(reply)

    def write(self, prepared: Prepared) -> None:
        """Apply the batch synchronously (loads the script when the server lacks it)."""
        self._on_result(self._script(keys=prepared.keys, args=prepared.args))

    def figures(self) -> dict[str, Any]:
        """Figures for the writer's stats (none for the plain script)."""
        return {}

    def reset(self) -> None:
        """Drop the dedicated connection (after an error its state is unknown)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.disconnect()
            finally:
                self._client.connection_pool.release(conn)
