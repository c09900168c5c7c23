"""Lines of an input file or stream, each read with a bound: a line is never held whole past
`MAX_LINE_BYTES`.

`eventbus publish </dev/zero` read one endless "line" until the kernel killed the process for
the machine's memory (24 GB), and `replay --dead-letters /dev/zero` ran for a quarter of an
hour (trial 249). A line longer than the bound is read through in pieces and discarded, and
stands in the iteration as a `TooLong` with its length, for the command to report and skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Final, TextIO

__all__ = ["MAX_LINE_BYTES", "TooLong", "bounded_lines"]

MAX_LINE_BYTES: Final = 64 * 1024 * 1024
"""The longest line read: an event with its bodies base64-encoded fits many times over."""

_PIECE: Final = 1024 * 1024


@dataclass(frozen=True)
class TooLong:
    """A line longer than the bound, skipped: `length` bytes, its newline included."""

    length: int

    def __str__(self) -> str:
        return (
            f"longer than {MAX_LINE_BYTES // (1024 * 1024)} MiB ({self.length} bytes read "
            "before its end): skipped"
        )


def bounded_lines(
    stream: BinaryIO | TextIO, limit: int = MAX_LINE_BYTES
) -> Iterator[bytes | str | TooLong]:
    """Each line of `stream` (with its newline), or a `TooLong` in place of one past `limit`
    bytes (characters, on a text stream); memory stays within about `limit` whatever the
    input."""
    while True:
        line: bytes | str = stream.readline(limit + 1)
        if not line:
            return
        newline: Any = "\n" if isinstance(line, str) else b"\n"
        if len(line) <= limit or line.endswith(newline):
            yield line
            continue
        length = len(line)
        while not line.endswith(newline):  # the rest of it, a piece at a time, discarded
            line = stream.readline(_PIECE)
            if not line:
                break
            length += len(line)
        yield TooLong(length)
