"""Registers the `sqlite` sink (entry point `sqlite` of group `eventbus`).

Only registration happens here, when eventbus builds its plugin registry at start-up: no file
is opened until a user selects the sink.
"""

from __future__ import annotations

from collections.abc import Mapping

from eventbus_core import EventBusSettings, RegisterFn, SettingsError, check_options, hookimpl
from eventbus_sink_example._sink import SqliteSink

__all__ = ["build_sink", "eventbus_register_sinks"]


def build_sink(settings: EventBusSettings, options: Mapping[str, str]) -> SqliteSink:
    """Build the sink from its options (`--sink-opt` or `EVENTBUS_SINK_SQLITE_*`)."""
    check_options(options, "sqlite", ("path", "table"))  # a misspelt option is refused
    table = options.get("table", "events")
    if not table.isidentifier():
        raise SettingsError(
            f"sink option 'table' of 'sqlite' (EVENTBUS_SINK_SQLITE_TABLE) must be a plain "
            f"identifier, got {table!r}"
        )
    return SqliteSink(options.get("path", "events.db"), table=table)


@hookimpl
def eventbus_register_sinks(register: RegisterFn) -> None:
    """Register the `sqlite` sink."""
    register("sqlite", build_sink)
