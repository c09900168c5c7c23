"""Progress of long-running commands: a live line on a terminal, plain lines otherwise.

On a TTY the line is redrawn in place (carriage return), at most five times per second; in a
pipe or a log file a plain line is written every `interval` seconds (and a final one if any was
written), so logs stay readable and scripts are not flooded.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Self, TextIO

__all__ = ["Progress"]


class Progress:
    """Report `done` out of `total` (if known) for a long-running command.

    Use as a context manager; call `advance(n)` as work completes. The final figures are
    written when the block ends.

    Args:
        label: What is counted, e.g. "replayed".
        total: Expected amount, or None when unknown.
        stream: Where to write (stderr by default, so stdout stays for data).
        enabled: False writes nothing at all (for `--quiet` or `--json`).
        interval: Seconds between plain lines when not on a terminal.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        enabled: bool = True,
        interval: float = 5.0,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and _isatty(self.stream)
        self.interval = 0.2 if self.tty else interval
        self._start = time.monotonic()
        self._last = self._start
        self._width = 0
        self._lines = 0

    def advance(self, n: int = 1) -> None:
        """Count `n` more units done and redraw if it is time."""
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            self._write(final=False)

    def text(self) -> str:
        """The progress figures as one line of text."""
        elapsed = max(time.monotonic() - self._start, 1e-9)
        rate = self.done / elapsed
        if self.total:
            share = min(self.done / self.total, 1.0)
            head = f"{self.label} {self.done}/{self.total} ({share:.0%})"
            if self.tty and rate > 0 and self.done < self.total:
                head += f", {(self.total - self.done) / rate:.0f} s left"
        else:
            head = f"{self.label} {self.done}"
        return f"{head}, {rate:,.0f}/s, {elapsed:.1f} s"

    def _write(self, *, final: bool) -> None:
        line = self.text()
        self._lines += 1
        if self.tty:
            pad = " " * max(0, self._width - len(line))
            self._width = len(line)
            self.stream.write(f"\r{line}{pad}" + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Short work on a pipe gets no progress line at all: the command's summary says it.
        if self.enabled and (self.tty or self._lines):
            self._write(final=True)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
