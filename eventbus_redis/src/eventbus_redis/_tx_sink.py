"""`TransactionSink`: writes a batch as an optimistic MULTI/EXEC, the Lua script as fallback.

Why: the script stamps each event's LogID by Lua string concatenation on the server, which
costs Redis more per event than the push itself (measured: the script path wrote 77k events/s
where a bare LPUSH pipeline wrote 194k-233k, with 3 KB events). Here the client stamps instead:

1. `WATCH key:seq`, `GET key:seq`, `GET` the writer's batch marker: one small round trip.
2. The client builds each event's JSON with LogIDs `seq+1 .. seq+n` and sends `MULTI`, `SET
   key:seq seq+n`, the push (LPUSH / XADDs), trim, expiry, notification, the batch marker, `EXEC`.

WATCH makes EXEC fail if any other writer (ours, or the Go proxy's INCR) touched the counter in
between, so LogIDs stay gap-free and in push order with any number of writers, exactly as with
the script. A batch whose EXEC failed goes through the script instead, which cannot conflict, and
so do the next few batches (other writers are busy; resending whole batches would waste more).
Batches under `_MIN_TX` events always go by script: the transaction pays off only in bulk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import redis

from eventbus_core import Event
from eventbus_redis._sink import Prepared, ScriptSink, send_all

__all__ = ["TransactionSink"]

_SCRIPT_AFTER_CONFLICT: Final = 8  # batches sent by script after a conflict
# Smaller batches go by script: one command and one reply instead of two sends and a reply per
# queued command, and at that size the script's server-side stamping costs nothing worth saving.
_MIN_TX: Final = 100
_PREFIX: Final = b'{"LogID":'

Commands = Callable[[Prepared, int, list[bytes]], list[tuple[Any, ...]]]
"""`(prepared, last LogID, stamped events) -> the commands to run between MULTI and EXEC`."""


def stamp(tails: Sequence[bytes], first: int) -> list[bytes]:
    """Each tail (an event's JSON without `{"LogID":n,`) completed with LogIDs first, first+1..."""
    return [b"%s%d,%s" % (_PREFIX, first + i, tail) for i, tail in enumerate(tails)]


class TransactionSink(ScriptSink):
    """A `ScriptSink` whose batches go as optimistic transactions while nobody else writes.

    Args:
        client, source, encode, on_result: As for `ScriptSink`; `encode` returns keys
            `[target, seq_key, marker_key]` and args `[..., batch number, ..., *tails]`.
        commands: Builds the transaction body from the stamped events.
        fixed: How many leading args are not tails (as in the script).
    """

    def __init__(
        self,
        client: redis.Redis,
        source: str,
        encode: Callable[[list[Event]], tuple[list[str], list[Any]]],
        on_result: Callable[[Any], None],
        *,
        commands: Commands,
        fixed: int,
    ) -> None:
        super().__init__(client, source, encode, on_result)
        self._commands = commands
        self._fixed = fixed
        self._script_batches = 0
        self.conflicts = 0

    def send(self, prepared: Prepared) -> None:
        """Start the batch: by transaction (one small round trip first), or by script."""
        small = len(prepared.args) - self._fixed < _MIN_TX
        if small or self._script_batches > 0:
            if not small:
                self._script_batches -= 1
            prepared.mode = "script"
            super().send(prepared)
            return
        conn = self._connection()
        seq_key, marker_key = prepared.keys[1], prepared.keys[2]
        try:
            send_all(conn, [("WATCH", seq_key), ("GET", seq_key), ("GET", marker_key)])
            conn.read_response()
            seq = int(conn.read_response() or 0)
            marker = conn.read_response()
            if marker is not None and int(marker) >= int(prepared.args[1]):
                # A retry of a batch that was applied (its reply was lost): nothing to write.
                send_all(conn, [("UNWATCH",)])
                prepared.mode, prepared.replies, prepared.last = "applied", 1, -1
                return
            tails = prepared.args[self._fixed :]
            last = seq + len(tails)
            body = self._commands(prepared, last, stamp(tails, seq + 1))
            send_all(conn, [("MULTI",), *body, ("EXEC",)])
        except BaseException:
            self.reset()
            raise
        prepared.mode, prepared.replies, prepared.last = "tx", len(body) + 2, last

    def receive(self, prepared: Prepared) -> None:
        """Read the outcome; a transaction another writer cut short is rewritten by script."""
        if prepared.mode == "script":
            super().receive(prepared)
            return
        conn = self._connection()
        try:
            replies = [conn.read_response() for _ in range(prepared.replies)]
        except BaseException:
            self.reset()
            raise
        if prepared.mode == "applied":
            self._on_result(-1)
            return
        outcome = replies[-1]
        if outcome is None:  # EXEC refused: the counter moved after our WATCH
            self.conflicts += 1
            self._script_batches = _SCRIPT_AFTER_CONFLICT
            self.write(prepared)
            return
        failed = [r for r in outcome if isinstance(r, Exception)]
        if failed:
            # MULTI does not roll back: forget the batch marker, so the retry (by script, which
            # stops at the first error) is not skipped as applied.
            self._client.delete(prepared.keys[2])
            raise failed[0]
        self._on_result(prepared.last)

    def figures(self) -> dict[str, Any]:
        """Transactions another writer cut short (each rewritten by the script)."""
        return {"tx_conflicts": self.conflicts}
