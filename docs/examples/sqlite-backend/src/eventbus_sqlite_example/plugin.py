"""Registers backend `sqlite` (entry point `sqlite` of group `eventbus`), with its settings.

Settings: `EVENTBUS_SQLITE_PATH` (the file, default `eventbus.sqlite3`) and
`EVENTBUS_SQLITE_GROUP` (the default consumer group, default `dispatchers`), declared by
`SqliteSettings`; core's `OBSERVABILITY_BUFFER_SIZE` and `EVENTBUS_STOP_TIMEOUT`.
"""

from __future__ import annotations

from pydantic import Field

from eventbus_core import EventBusSettings, PluginSettings, RegisterFn, hookimpl
from eventbus_sqlite_example._bus import SqliteEventBus

__all__ = ["SqliteSettings", "build_bus", "eventbus_register_backends"]


class SqliteSettings(PluginSettings):
    """The `sqlite` backend's own settings."""

    settings_label = "sqlite backend"

    sqlite_path: str = Field(
        default="eventbus.sqlite3",
        min_length=1,
        validation_alias="EVENTBUS_SQLITE_PATH",
        description="The SQLite file every process on the machine shares.",
    )
    sqlite_group: str = Field(
        default="dispatchers",
        min_length=1,
        validation_alias="EVENTBUS_SQLITE_GROUP",
        description="Default consumer group of consumer() (the dispatcher's).",
    )


def build_bus(settings: EventBusSettings) -> SqliteEventBus:
    """Build backend `sqlite`; opens nothing until the bus first writes or reads."""
    own = settings.plugin_settings(SqliteSettings)
    return SqliteEventBus(
        own.sqlite_path,
        group=own.sqlite_group,
        buffer_size=settings.buffer_size,
        stop_timeout=settings.stop_timeout,
    )


@hookimpl
def eventbus_register_backends(register: RegisterFn) -> None:
    """Register backend `sqlite` with its settings. No I/O here."""
    register("sqlite", build_bus, settings=SqliteSettings)
