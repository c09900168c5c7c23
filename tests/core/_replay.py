"""`eventbus replay` to a sink the test makes (tests/core/test_cli_redis.py and
test_replay_dead_letters.py)."""

from __future__ import annotations

from typing import Any

from eventbus_core.cli import main


def replay_to(sink: Any, argv: list[str]) -> int:
    """`eventbus replay --sink <sink.name> ...argv` with `sink` registered by a plugin."""
    from eventbus_core import hookimpl
    from eventbus_core._plugins import get_registry, reset_registry

    class Plugin:
        @hookimpl
        def eventbus_register_sinks(self, register: Any) -> None:
            register(sink.name, lambda settings, options: sink)

    reset_registry()
    try:
        get_registry().register_plugin(Plugin(), sink.name)
        return main(["replay", "--sink", sink.name, *argv])
    finally:
        reset_registry()


class FlakySink:
    """Stores the first half of each new batch, then fails with a transient error saying so;
    refuses LogID 3 alone (a permanent error about that one event)."""

    name = "flaky"

    def __init__(self) -> None:
        self.stored: list[int] = []
        self.calls = 0

    async def send(self, batch: Any) -> None:
        from eventbus_core import PermanentSinkError, TransientSinkError

        self.calls += 1
        ids = [p["log_id"] for p in batch]
        if ids[0] == 3:
            raise PermanentSinkError("HTTP 400 for the first event", refused=1)
        if len(ids) > 1 and self.calls % 2:
            half = len(ids) // 2
            self.stored += ids[:half]
            raise TransientSinkError("HTTP 503", delivered=half, retry_after=0)
        self.stored += ids

    async def close(self) -> None:
        pass
