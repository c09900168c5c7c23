"""The SQLite file: its schema, connections, and the reads every capability shares.

Layout: table `events` (LogID, the time it was added, the event's Go wire JSON), `groups`
(each consumer group's newest LogID handed out) and `pending` (deliveries not acknowledged).
WAL mode lets readers in other processes read while one process writes.

Every call into SQLite goes through `Database` (or runs inside `GUARD.held()`): a fork waits
for the calls in progress, because SQLite's process-wide mutexes (its memory allocator, its page
cache) stay locked in a child forked while another thread was inside SQLite, and the child's
first `sqlite3.connect()` then waits for ever.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eventbus_core import BackendUnavailableError, Event, WireFormatError, get_logger

__all__ = ["GUARD", "Database", "decode"]

log = get_logger("eventbus.sqlite")

# How long a fork waits for SQLite calls in progress. A call waits at most `Database.timeout`
# (5 s) for another process's lock; past this the fork goes ahead (and says so) rather than
# hanging the process that forks.
_FORK_WAIT = 15.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (log_id INTEGER PRIMARY KEY, added REAL NOT NULL, data BLOB);
CREATE INDEX IF NOT EXISTS events_added ON events (added);
CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY, last_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    grp TEXT NOT NULL, log_id INTEGER NOT NULL, consumer TEXT NOT NULL,
    attempts INTEGER NOT NULL, PRIMARY KEY (grp, log_id)
);
"""


class _ForkGuard:
    """Many threads may be inside SQLite at once; `os.fork()` waits until none is.

    The threads "share" the guard around each call (a transaction, a query, connect, close);
    the fork's `before` handler lets no new call in and waits for those in progress to end.
    Re-entrant per thread (a transaction's statements run inside its own `held()`). The
    forking thread itself always goes through: a connection the garbage collector closes in
    it during the fork (from any allocation) must not wait for its own fork (review 149)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Re-entrant: the collector may close a connection inside `before_fork`'s own wait.
        self._cond = threading.Condition(threading.RLock())
        self._inside = 0  # threads inside SQLite now
        self._forkers: set[int] = set()  # threads between before_fork and the fork's end
        self._depth = threading.local()

    @contextmanager
    def held(self) -> Iterator[None]:
        """Around one call (or several) into SQLite by this thread."""
        depth = getattr(self._depth, "n", 0)
        counted = depth == 0 and threading.get_ident() not in self._forkers
        if counted:
            with self._cond:
                while self._forkers:
                    self._cond.wait()
                self._inside += 1
        self._depth.n = depth + 1
        try:
            yield
        finally:
            self._depth.n = depth
            if counted:
                with self._cond:
                    self._inside -= 1
                    self._cond.notify_all()

    def before_fork(self) -> None:
        mine = 1 if getattr(self._depth, "n", 0) else 0  # the forking thread's own call
        deadline = time.monotonic() + _FORK_WAIT
        self._forkers.add(threading.get_ident())  # first: a close from here on goes through
        with self._cond:
            while self._inside > mine:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning(
                        "forking while %d thread(s) are still inside SQLite after %g s: "
                        "the child may hang in its first SQLite call",
                        self._inside - mine,
                        _FORK_WAIT,
                    )
                    break
                self._cond.wait(left)

    def after_fork_in_parent(self) -> None:
        with self._cond:
            self._forkers.discard(threading.get_ident())  # another thread's fork may go on
            self._cond.notify_all()

    def after_fork_in_child(self) -> None:
        # The other threads are gone; only the forking thread's own call is still inside.
        mine = getattr(self._depth, "n", 0)
        self._reset()
        if mine:
            self._inside = 1
            self._depth.n = mine


GUARD = _ForkGuard()
os.register_at_fork(
    before=GUARD.before_fork,
    after_in_parent=GUARD.after_fork_in_parent,
    after_in_child=GUARD.after_fork_in_child,
)


class _Connection(sqlite3.Connection):
    """A connection that closes under the guard, also when it is garbage-collected (a
    connection left to the collector would otherwise close, inside SQLite, at any moment)."""

    def close(self) -> None:
        with GUARD.held():
            super().close()

    def __del__(self) -> None:
        # A connection whose opening failed was never set up: nothing to close.
        with contextlib.suppress(sqlite3.Error):
            self.close()


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
        with self.failing("open"), GUARD.held():
            db = sqlite3.connect(
                self.path,
                timeout=self.timeout,
                isolation_level=None,
                check_same_thread=False,
                factory=_Connection,
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
        """BEGIN IMMEDIATE (one writer at a time, across processes) ... COMMIT, under the guard:
        a child forked mid-transaction would also believe this process holds SQLite's lock."""
        with GUARD.held():
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Run one read on a connection of its own."""
        with GUARD.held():
            db = self.connect()
            try:
                with self.failing("be read"):
                    return db.execute(sql, params).fetchall()
            finally:
                db.close()
