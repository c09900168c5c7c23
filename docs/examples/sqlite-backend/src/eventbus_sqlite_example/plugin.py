"""Registers backend `sqlite` (entry point `sqlite` of group `eventbus`).

Settings read by the factory: `OBSERVABILITY_BUFFER_SIZE` and `EVENTBUS_STOP_TIMEOUT` (core's),
`EVENTBUS_SQLITE_PATH` (the file, default `eventbus.sqlite3`) and `EVENTBUS_SQLITE_GROUP` (the
default consumer group, default `dispatchers`).
"""

from __future__ import annotations

import os

from eventbus_core import EventBusSettings, RegisterFn, hookimpl
from eventbus_sqlite_example._bus import SqliteEventBus

__all__ = ["build_bus", "eventbus_register_backends"]


def build_bus(settings: EventBusSettings) -> SqliteEventBus:
    """Build backend `sqlite`; opens nothing until the bus first writes or reads."""
    return SqliteEventBus(
        os.environ.get("EVENTBUS_SQLITE_PATH") or "eventbus.sqlite3",
        group=os.environ.get("EVENTBUS_SQLITE_GROUP") or "dispatchers",
        buffer_size=settings.buffer_size,
        stop_timeout=settings.stop_timeout,
    )


@hookimpl
def eventbus_register_backends(register: RegisterFn) -> None:
    """Register backend `sqlite`. No I/O here."""
    register("sqlite", build_bus)
