"""`LoopLagWatch`: says when something held the dispatcher's event loop.

Every lane, sink and timer of a dispatcher runs on one event loop, so a sink whose `async def
send()` does blocking work (a synchronous HTTP client, `time.sleep`) holds all of them: a sink
that slept 2 s in each send stalled every other sink with it, and nothing said so (trial 268).
A task wakes every `_EVERY` seconds (ten times a second, a few µs each) and measures how late
it woke; when the loop was held `_HELD` seconds or more it logs a WARNING naming the sinks whose
send() lasted as long, at most once a minute (`SaidEvery`), with the count of such holds since
the last line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Final

from eventbus_core._log import get_logger
from eventbus_core.batching import SaidEvery
from eventbus_core.dispatch._worker import SinkWorker

__all__ = ["LoopLagWatch"]

log = get_logger("eventbus.dispatch")

_EVERY: Final = 0.1
"""Seconds between two looks at the loop: a hold is measured up to this much short."""
_HELD: Final = 1.0
"""Seconds the loop must have been held to be said."""
_SAY_EVERY: Final = 60.0


class LoopLagWatch:
    """Watches the loop it runs on (`run()`), blaming the `workers` sending meanwhile."""

    def __init__(self, workers: Sequence[SinkWorker], held: float = _HELD) -> None:
        self._workers = workers
        self._held = held
        self._longest = 0.0
        self._blamed: set[str] = set()
        self._said = SaidEvery(self._say, _SAY_EVERY)
        self.holds = 0
        """Times the loop was held `held` seconds or more."""

    async def run(self) -> None:
        """Look every `_EVERY` seconds until cancelled; then say what is left to say."""
        try:
            while True:
                began = time.monotonic()
                await asyncio.sleep(_EVERY)
                late = time.monotonic() - began - _EVERY
                # A sink whose send() lasted as long as the loop was held held it (the loop
                # runs nothing else meanwhile); the others sent around it.
                sending = {w.name: w.take_longest_send() for w in self._workers}
                if late >= self._held:
                    self._note(late, [name for name, took in sending.items() if took >= late])
                else:
                    self._said.add(0)  # what a past minute held back, once it is over
        finally:
            self._said.say_now()

    def _note(self, late: float, blamed: list[str]) -> None:
        self.holds += 1
        self._longest = max(self._longest, late)
        self._blamed.update(blamed)
        self._said.add(1)

    def _say(self, new: int, total: int) -> None:
        blamed = sorted(self._blamed)
        who = (
            f"while sink(s) {', '.join(repr(n) for n in blamed)} were sending (a sink's async "
            "send() must not block: do blocking I/O in send_blocking(), or await an async "
            "client; a sink that only awaited beside one that blocks is named too)"
            if blamed
            else "while no sink was sending (a transformer, another plugin, or the "
            "application's own code on the same loop)"
        )
        log.warning(
            "eventbus dispatcher: its event loop was held for up to %.1f s, %d time(s) (%d in "
            "all), %s; every lane and sink waited meanwhile (or the whole process was paused: "
            "SIGSTOP, a suspended machine)",
            self._longest,
            new,
            total,
            who,
        )
        self._longest = 0.0
        self._blamed.clear()
