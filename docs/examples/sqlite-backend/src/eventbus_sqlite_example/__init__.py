"""eventbus-sqlite-example: a third-party backend written only against eventbus_core's public API.

`SqliteEventBus` keeps the events in one SQLite file, which every process on the machine that
opens the same file shares. It declares its capabilities (`eventbus_core.capabilities`):
Flushable, CrossProcess, Reachable, ReadableLog, Describable, ConsumerGroups and Isolatable, so
`eventbus demo`, `tail`, `replay`, `stats` and `dispatch` all work on it.
"""

from eventbus_sqlite_example._bus import SqliteEventBus
from eventbus_sqlite_example._consumer import SqliteConsumer

__all__ = ["SqliteConsumer", "SqliteEventBus"]
