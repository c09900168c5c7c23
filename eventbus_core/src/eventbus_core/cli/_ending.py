"""A command's ending: delivering what it accepted and cleaning up, which a signal must not cut.

`eventbus` takes SIGTERM as it takes Ctrl-C, by raising where the command is (see
`eventbus_core.cli`). Raised inside the ending itself (a `stop()` that is writing the accepted
events, the demo deleting its keys), either would cut short the very work the ending is for.
While a command is `within_ending()`, SIGTERM is only noted (the ending is bounded anyway), and
so is a first Ctrl-C, unless the command was interrupted already: a second Ctrl-C still stops
it at once.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

__all__ = ["ending_now", "within_ending"]

_depth = [0]  # signal handlers run in the main thread, between its bytecodes: no lock needed


@contextlib.contextmanager
def within_ending(*, interrupted: bool = False) -> Iterator[None]:
    """Within: SIGTERM is noted, not raised, and Ctrl-C too, the first time, unless the command
    was `interrupted` already (see the module docstring)."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        presses = [interrupted]

        def on_ctrl_c(signum: int, frame: object) -> None:
            if any(presses):
                raise KeyboardInterrupt
            presses.append(True)
            print(
                "eventbus: delivering what was accepted before ending (bounded by "
                "EVENTBUS_STOP_TIMEOUT); Ctrl-C again to stop at once",
                file=sys.stderr,
            )

        previous = signal.signal(signal.SIGINT, on_ctrl_c)
    _depth[0] += 1
    try:
        yield
    finally:
        _depth[0] -= 1
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def ending_now() -> bool:
    """True while a command is within its ending."""
    return _depth[0] > 0
