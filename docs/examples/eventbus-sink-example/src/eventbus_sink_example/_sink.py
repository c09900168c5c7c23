"""`SqliteSink`: events as rows, one transaction per batch, de-duplicated by LogID."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eventbus_core import PermanentSinkError, TransientSinkError

__all__ = ["SqliteSink"]


class SqliteSink:
    """Store payloads in a SQLite table.

    Args:
        path: The database file.
        table: The table (created if missing).
        name: The sink's name in the dispatcher's stats and dead letters.
    """

    def __init__(self, path: str | Path, *, table: str = "events", name: str = "sqlite") -> None:
        self.path = Path(path)
        self.table = table
        self.name = name
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            # check_same_thread=False: batches are written from asyncio's worker threads, one
            # at a time (the dispatcher never calls send() concurrently for one sink).
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                " log_id INTEGER, request_id TEXT, model TEXT, total_tokens INTEGER,"
                " status INTEGER, payload TEXT NOT NULL)"
            )
            # LogID 0 means "not stamped" (memory bus): only real LogIDs de-duplicate. With the
            # request id: a Redis that lost its data counts LogIDs from 1 again, and by LogID
            # alone every new event would be taken for one stored before (and dropped).
            self._db.execute(f"DROP INDEX IF EXISTS {self.table}_log_id")  # this example's old one
            self._db.execute(
                f"CREATE UNIQUE INDEX IF NOT EXISTS {self.table}_event "
                f"ON {self.table}(log_id, coalesce(request_id, '')) WHERE log_id > 0"
            )
        return self._db

    def _write(self, batch: Sequence[Mapping[str, Any]]) -> None:
        rows = [
            (
                p.get("log_id") or 0,
                p.get("request_id"),
                p.get("model"),
                (p.get("usage") or {}).get("total_tokens"),
                p.get("status"),
                json.dumps(p, separators=(",", ":"), default=str),
            )
            for p in batch
        ]
        db = self._connect()
        with db:  # one transaction: the whole batch or nothing
            db.executemany(
                f"INSERT OR IGNORE INTO {self.table} "
                "(log_id, request_id, model, total_tokens, status, payload) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    async def send(self, batch: Sequence[Mapping[str, Any]]) -> None:
        """Insert the batch; a busy database is worth retrying, a broken one is not."""
        try:
            await asyncio.to_thread(self._write, batch)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise TransientSinkError(f"sqlite busy: {exc}") from exc
            raise PermanentSinkError(f"sqlite error: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise PermanentSinkError(f"sqlite error: {exc}") from exc

    async def close(self) -> None:
        """Close the database."""
        if self._db is not None:
            self._db.close()
            self._db = None
