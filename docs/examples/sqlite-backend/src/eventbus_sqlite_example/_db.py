"""The SQLite file: its schema, connections, and the reads every capability shares.

Layout: table `events` (LogID, the time it was added, the event's Go wire JSON), `groups`
(each consumer group's newest LogID handed out) and `pending` (deliveries not acknowledged).
WAL mode lets readers in other processes read while one process writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eventbus_core import BackendUnavailableError, Event, WireFormatError

__all__ = ["Database", "decode"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (log_id INTEGER PRIMARY KEY, added REAL NOT NULL, data BLOB);
CREATE INDEX IF NOT EXISTS events_added ON events (added);
CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY, last_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    grp TEXT NOT NULL, log_id INTEGER NOT NULL, consumer TEXT NOT NULL,
    attempts INTEGER NOT NULL, PRIMARY KEY (grp, log_id)
);
"""


def decode(data: Any) -> Event | None:
    """The event stored as `data`, or None if it does not decode."""
    try:
        return Event.from_json(data)
    except WireFormatError:
        return None


class Database:
    """Opens the file (creating the schema) for one thread; errors become
    `BackendUnavailableError` naming the file."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout

    def connect(self) -> sqlite3.Connection:
        """A new connection in autocommit mode (transactions are explicit)."""
        with self.failing("open"):
            db = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            return db

    @contextmanager
    def failing(self, what: str) -> Iterator[None]:
        """Report a SQLite or OS error as `BackendUnavailableError`."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise BackendUnavailableError(
                f"SQLite file {self.path} could not {what} ({type(exc).__name__}: {exc}); check "
                "that its folder exists and is writable (EVENTBUS_SQLITE_PATH)"
            ) from None

    @contextmanager
    def transaction(self, db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE (one writer at a time, across processes) ... COMMIT."""
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Run one read on a connection of its own."""
        db = self.connect()
        try:
            with self.failing("be read"):
                return db.execute(sql, params).fetchall()
        finally:
            db.close()
