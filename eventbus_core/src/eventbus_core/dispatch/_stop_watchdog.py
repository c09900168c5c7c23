"""Ends the process when a stop signal goes unanswered because the event loop is blocked.

`Dispatcher.serve()` handles SIGTERM and SIGINT on its event loop (`loop.add_signal_handler`),
which runs a handler only when the loop gets control back. A sink plugin that blocks the loop
(`time.sleep`, a blocking HTTP call without a timeout) made the process deaf to both: no
bounded stop, and no "a second Ctrl-C ends it at once" either; only SIGKILL ended it.

Python-level signal handlers, unlike the loop's, run in the main thread between bytecodes, even
while a blocking call is in progress: the signal interrupts the call, the handler runs, and the
call is retried (PEP 475). So this installs one in place of asyncio's no-op handler (asyncio
still hears of the signal through its wake-up file descriptor, which the C-level handler
writes whatever the Python-level one is). It only writes a byte to a pipe: no lock is taken,
so it is safe wherever the signal lands. A thread reading the pipe ends the process with
`os._exit()` if the loop has not ended it in time:

- after the first signal, once the stop's own bound (`stop_bound`) and a margin have passed;
- after a second SIGINT, one second later (the loop, when it runs, raises `KeyboardInterrupt`
  at once, which ends `serve()` first).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from types import FrameType
from typing import Final

# Exit statuses, as operations.md gives them: 130 for the second Ctrl-C, 1 for a stop that
# could not end in its bound (what was not acknowledged comes again; a memory bus's is lost).
_EXIT_INTERRUPTED: Final = 130
_EXIT_STUCK: Final = 1
_SECOND_CTRL_C_GRACE: Final = 1.0
_MARGIN: Final = 5.0
_TERM: Final = b"T"
_INT: Final = b"I"


class StopWatchdog:
    """Watches the stop signals of `serve()`; see the module's doc.

    Args:
        stop_bound: Seconds a stop may take at most when the loop runs (the dispatcher's
            documented bound); the process is ended `_MARGIN` seconds after that.
    """

    def __init__(self, stop_bound: float) -> None:
        self._stop_bound = stop_bound
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._previous: dict[signal.Signals, object] = {}
        self._thread = threading.Thread(
            target=self._watch, name="eventbus-stop-watchdog", daemon=True
        )

    def install(self, signals: list[signal.Signals]) -> None:
        """Add the byte-writing handler for `signals` (whose loop handlers are installed)."""
        for sig in signals:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)
        self._thread.start()

    def close(self) -> None:
        """`serve()` has ended: put the handlers back and let the thread end."""
        for sig, previous in self._previous.items():
            with contextlib.suppress(TypeError, ValueError):
                signal.signal(sig, previous)  # type: ignore[arg-type]
        with contextlib.suppress(OSError):
            os.close(self._write_fd)  # the thread reads the end of the pipe and returns

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):  # a full pipe: the thread has enough to act on
            os.write(self._write_fd, _INT if signum == signal.SIGINT else _TERM)
        # The handler this one replaced: asyncio's does nothing, another loop's (uvloop) may.
        previous = self._previous.get(signal.Signals(signum))
        if callable(previous):
            previous(signum, frame)

    def _watch(self) -> None:
        deadline: float | None = None
        why = ""
        code = _EXIT_STUCK
        try:
            while True:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready, _, _ = select.select([self._read_fd], [], [], wait)
                if not ready:
                    break  # the deadline passed with serve() still running
                data = os.read(self._read_fd, 64)
                if not data:
                    return  # serve() ended
                for byte in data:
                    if deadline is None:
                        deadline = time.monotonic() + self._stop_bound + _MARGIN
                        why = (
                            f"the stop has not ended {self._stop_bound + _MARGIN:g} s after the "
                            "signal"
                        )
                    elif byte == _INT[0]:
                        deadline = min(deadline, time.monotonic() + _SECOND_CTRL_C_GRACE)
                        why = "a second Ctrl-C, and the event loop has not answered it"
                        code = _EXIT_INTERRUPTED
        finally:
            with contextlib.suppress(OSError):
                os.close(self._read_fd)
        # Straight to the file descriptor: a lock the blocked main thread holds (a logging
        # handler's) must not keep the process from ending.
        message = (
            f"eventbus: {why}: the event loop is blocked (a sink or other plugin calling "
            "blocking code on it?); ending the process now. What was not acknowledged comes "
            "again from Redis or NATS; what a memory bus held is lost\n"
        )
        with contextlib.suppress(OSError):
            os.write(2, message.encode())
        os._exit(code)
