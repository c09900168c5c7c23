"""Checking a file the command will write, before it does anything else.

A run that simulates thousands of requests (or starts processes against Redis) and only then
finds that it cannot write its output wastes the user's time and buries the reason under
unrelated errors. `check_output()` answers in one line, at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from eventbus_core._jsonl import file_problem
from eventbus_core.cli._ops import UsageError

__all__ = ["OnePath", "check_output", "path_argument"]


def path_argument(text: str) -> Path:
    """argparse `type` of a file path flag: an empty one is refused as typed (`Path("")` is
    `.`, and the error said "'.' is a directory", trial 165)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: give a file path, not an empty string")
    return Path(text)


class OnePath(argparse.Action):
    """Store a file path flag's value, refusing the flag given twice: `-f a.jsonl -f b.jsonl`
    published b.jsonl alone, a.jsonl's events left out without a word (trial 249)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        before = getattr(namespace, self.dest, None)
        if before is not None and before != self.default:
            raise argparse.ArgumentError(
                self,
                f"given twice ({str(before)!r}, then {str(values)!r}): it takes one path "
                "(to use several files, run the command once for each, or join them first)",
            )
        setattr(namespace, self.dest, values)


def check_output(path: Path, flag: str) -> None:
    """Make sure `path` can be created or replaced as a file, creating missing parent folders
    as the command would; leave an existing file as it is.

    Raises:
        UsageError: it cannot; the message names the flag, the path and why.
    """
    if str(path) == "-":
        # Often meant as standard output, which carries the command's summary here.
        raise UsageError(f"{flag} '-': give a file path ('-' would be a file named '-')")
    problem = file_problem(path)
    if problem is not None:
        raise UsageError(f"{flag} {str(path)!r} {problem}")
