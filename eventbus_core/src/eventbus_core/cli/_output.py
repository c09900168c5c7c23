"""Checking a file the command will write, before it does anything else.

A run that simulates thousands of requests (or starts processes against Redis) and only then
finds that it cannot write its output wastes the user's time and buries the reason under
unrelated errors. `check_output()` answers in one line, at once.
"""

from __future__ import annotations

import os
from pathlib import Path

from eventbus_core.cli._ops import UsageError

__all__ = ["check_output"]


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def check_output(path: Path, flag: str) -> None:
    """Make sure `path` can be created or replaced as a file, creating missing parent folders
    as the command would; leave an existing file as it is.

    Raises:
        UsageError: it cannot; the message names the flag, the path and why.
    """
    shown = f"{flag} {str(path)!r}"
    absolute = Path(os.path.abspath(path))
    if absolute.is_dir():
        raise UsageError(
            f"{shown} is a directory; give a file path, e.g. {path / 'demo-events.jsonl'}"
        )
    existing = _nearest_existing(absolute.parent)
    if not existing.is_dir():
        raise UsageError(
            f"{shown} cannot be created: {existing} is a file, not a directory; choose another path"
        )
    try:
        absolute.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"{shown} cannot be created: making its directory failed ({exc.strerror})"
        ) from None
    existed = absolute.exists()
    try:
        # Append mode: an existing file is neither truncated nor changed by the check.
        with absolute.open("ab"):
            pass
    except OSError as exc:
        raise UsageError(f"{shown} cannot be written ({exc.strerror})") from None
    if not existed:
        absolute.unlink(missing_ok=True)
