"""eventbus-sink-example: a SQLite sink for eventbus (entry point `sqlite`)."""

from eventbus_sink_example._sink import SqliteSink

__all__ = ["SqliteSink"]
