"""`SqliteConsumer`: one member of a consumer group (`ConsumerGroups.consumer()`).

A group's members share its events: each read hands out the next entries after the group's
newest LogID handed out, recorded as pending for this member until acknowledged. A member that
comes back under the same name first gets its own pending entries again.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from eventbus_core import Delivery
from eventbus_sqlite_example._db import Database, decode

__all__ = ["SqliteConsumer"]

_POLL = 0.02


class SqliteConsumer:
    """An `AckableSource` (with `SourceFigures` and `Backlog`) reading group `group` as member
    `name`."""

    def __init__(self, db: Database, group: str, name: str, batch_size: int = 100) -> None:
        self._db = db
        self._conn = db.connect()
        self.group = group
        self.name = name
        self.batch_size = batch_size
        self._redeliver = True  # first read: what this member held before a restart
        self._delivered = 0
        self._acked = 0
        with db.failing("be written"), db.transaction(self._conn) as tx:
            # A new group starts at the oldest entry the file holds.
            tx.execute("INSERT OR IGNORE INTO groups VALUES (?, 0)", (group,))

    def read(self, max_items: int, timeout: float) -> list[Delivery]:
        """Up to `max_items` deliveries, waiting up to `timeout` seconds for the first."""
        deadline = time.monotonic() + timeout
        while True:
            got = self._take(min(max_items, self.batch_size) if max_items > 0 else 0)
            if got or time.monotonic() >= deadline:
                return got
            time.sleep(_POLL)

    def _take(self, limit: int) -> list[Delivery]:
        if limit <= 0:
            return []
        with self._db.failing("be read"), self._db.transaction(self._conn) as tx:
            if self._redeliver:
                self._redeliver = False
                rows = tx.execute(
                    "SELECT e.log_id, e.data, p.attempts + 1 FROM pending p JOIN events e "
                    "ON e.log_id = p.log_id WHERE p.grp = ? AND p.consumer = ? "
                    "ORDER BY p.log_id LIMIT ?",
                    (self.group, self.name, limit),
                ).fetchall()
                tx.executemany(
                    "UPDATE pending SET attempts = attempts + 1 WHERE grp = ? AND log_id = ?",
                    [(self.group, r[0]) for r in rows],
                )
                if rows:
                    return self._deliveries(rows)
            (last,) = tx.execute(
                "SELECT last_id FROM groups WHERE name = ?", (self.group,)
            ).fetchone()
            rows = tx.execute(
                "SELECT log_id, data, 1 FROM events WHERE log_id > ? ORDER BY log_id LIMIT ?",
                (last, limit),
            ).fetchall()
            if rows:
                tx.execute(
                    "UPDATE groups SET last_id = ? WHERE name = ?", (rows[-1][0], self.group)
                )
                tx.executemany(
                    "INSERT OR REPLACE INTO pending VALUES (?, ?, ?, 1)",
                    [(self.group, r[0], self.name) for r in rows],
                )
        return self._deliveries(rows)

    def _deliveries(self, rows: list[Any]) -> list[Delivery]:
        out = []
        for log_id, data, attempts in rows:
            event = decode(data)
            if event is None:  # cannot be processed: acknowledged at once, not handed out
                self.ack([log_id])
                continue
            out.append(Delivery(event, token=log_id, attempts=attempts))
        self._delivered += len(out)
        return out

    def ack(self, tokens: Sequence[Any]) -> None:
        """Acknowledge: those entries will not be delivered again."""
        if not tokens:
            return
        with self._db.failing("be written"), self._db.transaction(self._conn) as tx:
            tx.executemany(
                "DELETE FROM pending WHERE grp = ? AND log_id = ?",
                [(self.group, int(t)) for t in tokens],
            )
        self._acked += len(tokens)

    def backlog(self) -> Mapping[str, int | None]:
        """Backlog: `lag`, entries the group was not handed yet, and `pending`, handed and not
        acknowledged; read on a connection of its own (a metrics scrape calls it from another
        thread than the one reading)."""
        ((lag, pending),) = self._db.query(
            "SELECT (SELECT COUNT(*) FROM events WHERE log_id > "
            "(SELECT last_id FROM groups WHERE name = ?)), "
            "(SELECT COUNT(*) FROM pending WHERE grp = ?)",
            (self.group, self.group),
        )
        return {"lag": int(lag), "pending": int(pending)}

    def figures(self) -> Mapping[str, Any]:
        """`delivered` and `acked` by this member (no I/O)."""
        return {"delivered": self._delivered, "acked": self._acked}

    def close(self) -> None:
        """Close the connection; what is not acknowledged stays pending for this name."""
        self._conn.close()
