"""`ScriptAppender`: how the writer thread appends a batch by a Lua script, one round trip each.

The writer overlaps work: it sends batch k on its own connection, encodes batch k+1 while Redis
runs the script for batch k, and only then reads the reply. Batches still go one at a time (k+1
is sent after k's reply), so order and retries stay simple. A failure falls back to a plain
synchronous call (`write()`), which also loads the script if the server lost it (NOSCRIPT
after a restart).

Every command the writer sends goes through that one connection (an `OwnConnection`, outside
the client's pool), so `stop()` can cut it at its deadline and the writer thread, blocked on a
paused or frozen server, ends at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from eventbus_core import Event
from eventbus_redis._lease import Lease
from eventbus_redis._own_connection import OwnConnection, send_all

__all__ = ["LeaseRefused", "Prepared", "ScriptAppender"]


class LeaseRefused(redis.RedisError):
    """Redis refused a batch: it arrived after the writer's lease ran out. Not applied."""


@dataclass(slots=True)
class Prepared:
    """A batch encoded for the script: its keys (target, counter), the backend's arguments and
    tails, and its batch number (a retry of the same `Prepared` is recognised by the script and
    not applied twice).

    `mode`, `replies` and `last` record how an appender sent it (see `TransactionAppender`);
    `refused`, that Redis refused it once for a lapsed lease (the loop path sends it again at
    once, and counts a second refusal as a failure: `LoopWrites`)."""

    keys: list[str]
    args: list[Any]
    batch: int
    mode: str = "script"
    replies: int = 0
    last: int = 0
    refused: bool = False


class ScriptAppender:
    """Runs one Lua script per batch, on a connection of its own.

    Args:
        client: The Redis client (its pool's settings are used to connect).
        source: The Lua script (see `_scripts.py` for its arguments).
        target: The key written to (the list or stream): names the writer's marker and lease.
        encode: Turns a batch into `(keys, args)`: `[target, counter]` and the backend's own
            arguments followed by the events' tails (CPU only, no I/O).
        on_result: Called with the script's reply after each applied batch.
    """

    def __init__(
        self,
        client: redis.Redis,
        source: str,
        target: str,
        encode: Callable[[list[Event]], tuple[list[str], list[Any]]],
        on_result: Callable[[Any], None],
    ) -> None:
        self.client = client
        self._own = OwnConnection(client)
        self._sha = hashlib.sha1(source.encode()).hexdigest()  # what EVALSHA names it by
        self._source = source
        self._encode = encode
        self._on_result = on_result
        self._batch_no = 0
        self.lease = Lease(target)

    # ------------------------------------------------------------------------ the connection

    def _connection(self) -> Any:
        """The writer's own connection, connected on first use (in the writer thread)."""
        return self._own.get()

    def _call(self, command: tuple[Any, ...]) -> Any:
        """Send one command and read its reply."""
        return self._own.call(command)

    def _read(self, n: int) -> list[Any]:
        """Read the replies of `n` commands already sent."""
        return self._own.read(n)

    def cut(self) -> None:
        """Cut the connection from another thread (at `stop()`'s deadline; no network I/O)."""
        self._own.cut()

    def reset(self) -> None:
        """Drop the connection (after an error its state is unknown)."""
        self._own.reset()

    def after_fork_in_child(self) -> None:
        """Forget the parent's connection without touching its socket (the parent still uses
        it); a forked child is another writer, with a marker and lease of its own."""
        self._own.forget()
        self.lease.after_fork_in_child()

    # --------------------------------------------------------------------------- batches

    def prepare(self, batch: list[Event]) -> Prepared:
        """Encode `batch` (runs while the previous batch is in Redis's hands)."""
        keys, args = self._encode(batch)
        self._batch_no += 1
        return Prepared(keys, args, self._batch_no)

    def script_command(self, prepared: Prepared, name: str = "EVALSHA") -> tuple[Any, ...]:
        """The script call for `prepared` (EVALSHA, or EVAL with the source), under the lease's
        current token."""
        lease = self.lease
        keys = [*prepared.keys, lease.marker_key, lease.key]
        script = self._sha if name == "EVALSHA" else self._source
        args = lease.args(prepared.batch)
        return (name, script, len(keys), *keys, *args, *prepared.args)

    def _renew_lease(self) -> None:
        self._call(self.lease.renewal())
        self.lease.renewed()

    def send(self, prepared: Prepared, sending: Callable[[], None] | None = None) -> None:
        """Send the script call without waiting for the reply (`sending` as for `write()`:
        called after a due renewal, which is a round trip of its own, just before the batch
        leaves; trial 156 saw a batch counted in doubt that a frozen Redis never got)."""
        if self.lease.due():
            self._renew_lease()
        if sending is not None:
            sending()
        conn = self._connection()
        try:
            send_all(conn, [self.script_command(prepared)])
        except BaseException:
            self.reset()
            raise
        prepared.mode = "script"

    def receive(self, prepared: Prepared) -> None:
        """Read the reply of `send(prepared)`; raise if the batch may not have been applied."""
        (reply,) = self._read(1)
        self.applied(reply)

    def applied(self, reply: Any) -> None:
        """Handle the script's reply: -2 is a refusal (raised as `LeaseRefused`), anything else
        a batch now in Redis."""
        if int(reply) == -2:
            raise LeaseRefused("the batch reached Redis after the writer's lease ran out")
        if int(reply) > 0:
            self.lease.extended()
        self._on_result(reply)

    def write(self, prepared: Prepared, sending: Callable[[], None] | None = None) -> None:
        """Apply the batch synchronously (loads the script when the server lacks it), under a
        fresh lease if the last one may have run out.

        Args:
            sending: Called just before the batch's script call leaves, once connected and
                leased: from then on, until the reply is read, Redis may have applied it. A
                failure before it (no connection, refused credentials) never sent the batch.
        """
        self._connection()
        for attempt in range(2):
            if attempt or self.lease.due():
                self._renew_lease()
            if sending is not None:
                sending()
            try:
                reply = self._call(self.script_command(prepared))
            except redis.exceptions.NoScriptError:
                reply = self._call(self.script_command(prepared, "EVAL"))
            if int(reply) != -2:
                self.applied(reply)
                return
        raise LeaseRefused("the batch reached Redis after the writer's lease ran out, twice")

    def figures(self) -> dict[str, Any]:
        """Figures for the writer's stats (none for the plain script)."""
        return {}
