"""`SqliteEventBus`: events in one SQLite file that every process opening it shares.

`publish()` appends to a bounded buffer and returns; one writer thread appends each batch in
one transaction, stamping LogIDs (1, 2, ... across every process: `BEGIN IMMEDIATE` lets one
writer in at a time). Subscriptions are fed by a follower thread that polls the file for new
LogIDs. Capabilities (see `eventbus_core.capabilities`): Flushable, CrossProcess, Reachable,
ReadableLog, Describable, ConsumerGroups and Isolatable.

A bus made before `os.fork()` (gunicorn `--preload`) starts over in the child: the parent's
threads are not there, and a lock one of them held would stay held (`_after_fork`). SQLite's
own locks are the same hazard: a fork waits for the calls into SQLite in progress (`_db.GUARD`).
A process that ends without `stop()` writes what the bus accepted first (`deliver_at_exit`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from eventbus_core import (
    BaseEventBus,
    BusStats,
    Event,
    Subscription,
    check_stop_timeout,
    get_logger,
)
from eventbus_core.batching import deliver_at_exit
from eventbus_core.capabilities import Isolation
from eventbus_sqlite_example._consumer import SqliteConsumer
from eventbus_sqlite_example._db import GUARD, Database, decode

__all__ = ["SqliteEventBus"]

log = get_logger("eventbus.sqlite")
_POLL = 0.02  # seconds between looks at the file, for the writer and the follower


class SqliteEventBus(BaseEventBus):
    """Event bus on the SQLite file `path` (created if missing).

    Args:
        path: The file; every process opening it sees the same events.
        group: The default consumer group of `consumer()`.
        buffer_size: Events `publish()` buffers before refusing (and counting) more.
        stop_timeout: Seconds `stop()` waits at most to write what was accepted.
    """

    cross_process = True  # CrossProcess: other processes on the file see these events
    time_index = True  # ReadableLog: each entry keeps the time it was added
    label = "eventbus sqlite writer"  # names it in the warning of an exit that could not wait

    def __init__(
        self,
        path: str,
        *,
        group: str = "dispatchers",
        buffer_size: int = 1000,
        stop_timeout: float = 5.0,
    ) -> None:
        self.path = str(path)
        self.default_group = group
        self.buffer_size = buffer_size
        self.stop_timeout = stop_timeout
        self.exit_timeout = stop_timeout  # what a process ending without stop() waits at most
        self._db = Database(self.path)
        self._buffer: deque[Event] = deque()
        self._cond = threading.Condition()
        self._accepted = self._dropped = self._written = self._lost = 0
        self._in_write = 0  # events of the batch being written
        self._closing = self._closed = self._drained = False
        self._subs: list[tuple[Subscription, list[int]]] = []  # with its position (LogID)
        self._ended: list[Subscription] = []
        self._start_threads()
        _LIVE.add(self)
        # The writer is a daemon thread: it dies with the process. The interpreter's exit (and
        # a multiprocessing child's, which skips atexit) waits for what it holds instead.
        deliver_at_exit(self)

    def _start_threads(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, daemon=True)
        self._follower = threading.Thread(target=self._follow_loop, daemon=True)
        self._writer.start()
        self._follower.start()

    def _after_fork(self) -> None:
        """In a child of `os.fork()`: new lock and threads. The parent writes what it had
        buffered, so the child's copy of it goes, and the child's figures start from zero."""
        self._cond = threading.Condition()
        self._buffer.clear()
        self._accepted = self._dropped = self._written = self._lost = self._in_write = 0
        self._ended = []
        if not self._closing:
            self._start_threads()

    # ------------------------------------------------------------------ the bus contract

    def publish(self, event: Event) -> None:
        """Buffer `event` and return; count a drop when the buffer is full or the bus stopped."""
        with self._cond:  # held only to append or to swap the buffer: never across I/O
            if self._closing or len(self._buffer) >= self.buffer_size:
                self._dropped += 1
                return
            self._buffer.append(event)
            self._accepted += 1

    def _write_loop(self) -> None:
        conn = None
        while True:
            with self._cond:
                if self._closed:  # stop(): the time is up, what is left is lost
                    return
                if not self._buffer:
                    if self._closing:
                        return
                    self._cond.wait(_POLL)
                    continue
                batch = list(self._buffer)
                self._in_write = len(batch)
            try:
                conn = conn or self._db.connect()
                with self._db.failing("be written"), self._db.transaction(conn) as tx:
                    (last,) = tx.execute("SELECT COALESCE(MAX(log_id), 0) FROM events").fetchone()
                    now = time.time()
                    tx.executemany(
                        "INSERT INTO events VALUES (?, ?, ?)",
                        [
                            (last + i, now, e.with_log_id(last + i).to_json())
                            for i, e in enumerate(batch, start=1)
                        ],
                    )
            except OSError as exc:  # BackendUnavailableError: keep the batch, try again
                log.warning("%s", exc)
                time.sleep(0.1)  # stop() ends this loop at the top once its time is up
                continue
            with self._cond:
                for _ in batch:
                    self._buffer.popleft()
                self._written += len(batch)
                self._in_write = 0
                self._cond.notify_all()

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Flushable: wait until every accepted event is in the file.

        Raises:
            TypeError, ValueError: `timeout` is neither None nor a number of seconds (NaN).
        """
        check_stop_timeout(timeout, "flush()")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._buffer:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    # What the exit's wait reads (`eventbus_core.batching.ExitDelivery`).
    @property
    def closed(self) -> bool:
        return self._closing

    def pending(self) -> int:
        return len(self._buffer)

    def settled(self) -> int:
        return self._written + self._lost

    def unsettled(self) -> tuple[int, int]:
        with self._cond:  # the pending events, and those of them in a write not answered yet
            return len(self._buffer), self._in_write

    def subscribe(self, name: str | None = None, *, buffer_size: int | None = None) -> Subscription:
        """Every event added to the file from now on (by any process)."""
        sub = Subscription(buffer_size or self.buffer_size, name=name, on_close=self._remove)
        start = self._newest_id()
        with self._cond:
            if self._closed:
                sub.finish()
            else:
                self._subs.append((sub, [start]))
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._cond:
            self._subs = [(s, p) for s, p in self._subs if s is not sub]
            self._ended.append(sub)

    def _newest_id(self) -> int:
        return int(self._db.query("SELECT COALESCE(MAX(log_id), 0) FROM events")[0][0])

    def _follow_loop(self) -> None:
        conn = None
        while True:
            with self._cond:
                subs = list(self._subs)
                final = self._drained  # the writer is done: this pass reads the last events
            for sub, position in subs:
                try:
                    conn = conn or self._db.connect()
                    with GUARD.held():  # see _db: a fork waits for calls into SQLite
                        rows = conn.execute(
                            "SELECT log_id, data FROM events WHERE log_id > ? ORDER BY log_id "
                            "LIMIT 1000",
                            (position[0],),
                        ).fetchall()
                except OSError:
                    continue  # the file is busy or gone for a moment: look again
                except Exception:  # sqlite3.Error: the same
                    continue
                if rows:
                    position[0] = rows[-1][0]
                    events = [e for e in (decode(r[1]) for r in rows) if e is not None]
                    sub.count_dropped(len(events) - sub.offer(events))
            if final:
                for sub, _ in subs:
                    sub.finish()
                return
            time.sleep(_POLL)

    def stop(self, timeout: float | None = None) -> None:
        """Write what was accepted (within `timeout`), count the rest as lost, end every
        subscription after handing it what is in the file. Idempotent."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
        wait = self.stop_timeout if timeout is None else timeout
        self.flush(wait)
        with self._cond:
            self._closed = True  # the writer finishes the batch in hand, then ends
        self._writer.join(1.0)
        with self._cond:
            self._lost += len(self._buffer)  # what the time did not allow
            self._buffer.clear()
            self._drained = True
        self._follower.join(max(1.0, wait))

    def stats(self) -> BusStats:
        """Accepted, refused, lost, queue depth and every subscription's figures."""
        with self._cond:
            subs = tuple(s.stats() for s in [s for s, _ in self._subs] + self._ended)
            return BusStats(
                self._accepted,
                self._dropped,
                lost=self._lost,
                queue_depth=len(self._buffer),
                subscribers=subs,
                extra={"written": self._written},
            )

    # ------------------------------------------------------------------ capabilities

    def check(self, timeout: float = 2.0) -> None:
        """Reachable: the file opens and answers a query (else `BackendUnavailableError`)."""
        Database(self.path, timeout).query("SELECT 1")

    def read_range(
        self,
        first_id: int | None = None,
        last_id: int | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[Event | None]:
        """ReadableLog: the events in the LogID and time ranges, oldest first."""
        rows = self._db.query(
            "SELECT data FROM events WHERE log_id >= ? AND log_id <= ? AND added >= ? "
            "AND added <= ? ORDER BY log_id",
            (
                first_id or 0,
                last_id if last_id is not None else 2**63 - 1,
                since.timestamp() if since else 0.0,
                until.timestamp() if until else float("inf"),
            ),
        )
        return (decode(data) for (data,) in rows)

    def newest(self, n: int) -> list[Event]:
        """ReadableLog: the `n` newest events, oldest first."""
        rows = self._db.query("SELECT data FROM events ORDER BY log_id DESC LIMIT ?", (n,))
        return [e for e in (decode(d) for (d,) in reversed(rows)) if e is not None]

    @property
    def log_sources(self) -> tuple[str, ...]:
        """LogSources: the one log this file keeps (`eventbus replay --source events`)."""
        return ("events",)

    def log_source(self, name: str) -> SqliteEventBus:
        """LogSources: the log called `name` (this bus: it reads its own file).

        Raises:
            ValueError: another name (the message lists the known ones).
        """
        if name != "events":
            raise ValueError(f"no log {name!r} in {self.location}: the only one is 'events'")
        return self

    @property
    def location(self) -> str:
        """Describable: `file PATH`."""
        return f"file {self.path}"

    def describe(self) -> Mapping[str, Any]:
        """Describable: what the file holds, and each group's pending and lag."""
        (count, newest, oldest) = self._db.query(
            "SELECT COUNT(*), MAX(log_id), MIN(log_id) FROM events"
        )[0]
        groups = self._db.query(
            "SELECT g.name, g.last_id, (SELECT COUNT(*) FROM pending p WHERE p.grp = g.name) "
            "FROM groups g ORDER BY g.name"
        )
        return {
            "backend": "sqlite",
            "path": self.path,
            "length": count,
            "newest_log_id": newest,
            "oldest_log_id": oldest,
            "groups": [
                {"name": name, "pending": pending, "lag": max(0, (newest or 0) - last)}
                for name, last, pending in groups
            ],
        }

    def consumer(
        self, group: str | None = None, name: str | None = None, *, batch_size: int = 100
    ) -> SqliteConsumer:
        """ConsumerGroups: member `name` (default host-pid) of `group` (default the bus's)."""
        member = name or f"{os.uname().nodename}-{os.getpid()}"
        return SqliteConsumer(self._db, group or self.default_group, member, batch_size)

    def isolate(self, run: str, events: int) -> Isolation:
        """Isolatable: a file of the run's own beside this one, deleted by `cleanup`."""
        path = f"{self.path}.demo-{run}"

        def cleanup(keep: bool) -> str:
            if keep:
                return f"kept (--keep): EVENTBUS_SQLITE_PATH={path}"
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path + suffix)
            return "deleted at the end"

        env = {"EVENTBUS_SQLITE_PATH": path, "EVENTBUS_SQLITE_GROUP": f"demo-{run}"}
        return Isolation(env=env, where=path, kind="sqlite file", cleanup=cleanup)

    def __repr__(self) -> str:
        return f"SqliteEventBus(path={self.path!r})"


_LIVE: weakref.WeakSet[SqliteEventBus] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for bus in list(_LIVE):
        bus._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
