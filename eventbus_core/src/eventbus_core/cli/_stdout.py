"""Standard output that says so when it cannot be written: a full disk, a closed descriptor.

A failed write to stdout surfaced as whatever the command was doing then: "the backend failed:
OSError: No space left on device" for `stats` and `tail` (on the memory backend too), "internal
error" for `plugins`, a traceback for `--version`, and with stdout closed (`>&-`) an
AttributeError, or output lost without a word (trial 249). Wrapped for the command's run,
every such write ends the command with one line that says what failed (exit 1). A reader that
left (`| head`) is not a failure: `BrokenPipeError` goes through as it is, and the command line
ends quietly as before.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from eventbus_core._errors import EventBusError

__all__ = ["StdoutFailed", "guarded_stdout", "write_failed"]


class StdoutFailed(EventBusError):
    """Standard output could not be written (exit 1)."""


def write_failed(exc: OSError | None) -> StdoutFailed:
    """The error of a failed write to stdout (`exc` None: stdout is closed)."""
    if exc is None:
        return StdoutFailed(
            "cannot write to standard output: it is closed; redirect it instead (> FILE, or "
            "> /dev/null to discard it)"
        )
    return StdoutFailed(f"cannot write to standard output ({type(exc).__name__}: {exc})")


class _Guarded:
    """`out` (None when closed), whose writes raise `StdoutFailed` instead of `OSError`."""

    def __init__(self, out: TextIO | None) -> None:
        self._out = out

    def write(self, text: str) -> int:
        if self._out is None:
            raise write_failed(None)
        try:
            return self._out.write(text)
        except BrokenPipeError:
            raise  # the reader left: the command line's own case
        except OSError as exc:
            raise write_failed(exc) from None

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._out is None:
            return  # nothing was written, or the write said so already
        try:
            self._out.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise write_failed(exc) from None

    def __getattr__(self, name: str) -> Any:
        if self._out is None:
            raise AttributeError(name)
        return getattr(self._out, name)


@contextlib.contextmanager
def guarded_stdout() -> Iterator[None]:
    """Within: `sys.stdout` raises `StdoutFailed` where a write fails (see the module)."""
    out = sys.stdout
    guarded = _Guarded(out)
    sys.stdout = guarded
    try:
        yield
    finally:
        if sys.stdout is guarded:
            sys.stdout = out
