"""A command's ending: delivering what it accepted and cleaning up, which SIGTERM must not cut.

`eventbus` takes SIGTERM as it takes Ctrl-C, by raising where the command is (see
`eventbus_core.cli`). Raised inside the ending itself (a `stop()` that is writing the accepted
events, the demo deleting its keys), it would cut short the very work the ending is for. While
a command is `within_ending()`, SIGTERM is only noted: the ending is bounded anyway.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["ending_now", "within_ending"]

_depth = [0]  # signal handlers run in the main thread, between its bytecodes: no lock needed


@contextlib.contextmanager
def within_ending() -> Iterator[None]:
    """Within: SIGTERM is noted, not raised (see the module docstring)."""
    _depth[0] += 1
    try:
        yield
    finally:
        _depth[0] -= 1


def ending_now() -> bool:
    """True while a command is within its ending."""
    return _depth[0] > 0
