"""Dead-letter destinations: where batches go that a sink refused for good.

The default is a JSON Lines file (`EVENTBUS_DEAD_LETTER_PATH`), one line per event:

    {"dead_lettered_at": "...", "sink": "webhook", "error": "HTTP 400: ...",
     "error_type": "400", "attempts": 1, "log_id": 42, "request_id": "...",
     "payload": {...}}

`payload` is what the sink would have received (transformed and redacted), so a record can be
replayed to the sink once it is fixed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from eventbus_core._jsonl import JsonlFile, dumps_line
from eventbus_core._utc import utc_now_iso

__all__ = ["DeadLetter", "JsonlDeadLetter", "MemoryDeadLetter"]


@runtime_checkable
class DeadLetter(Protocol):
    """Where the dispatcher puts events a sink could not take."""

    async def write(
        self,
        sink: str,
        payloads: Sequence[dict[str, Any]],
        error: str,
        error_type: str,
        attempts: int,
    ) -> None:
        """Store the events with the reason; raise `OSError` if they could not be stored."""

    async def close(self) -> None:
        """Release resources."""


def _records(
    sink: str, payloads: Sequence[dict[str, Any]], error: str, error_type: str, attempts: int
) -> list[dict[str, Any]]:
    now = utc_now_iso()
    return [
        {
            "dead_lettered_at": now,
            "sink": sink,
            "error": error,
            "error_type": error_type,
            "attempts": attempts,
            "log_id": p.get("log_id"),
            "request_id": p.get("request_id"),
            "payload": p,
        }
        for p in payloads
    ]


class JsonlDeadLetter:
    """Dead letters appended to a JSON Lines file, a whole batch at a time.

    Args:
        path: The file (created with its directories on first use).
        fsync: Flush to disk after each batch (default on: dead letters are the last resort).
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.file = JsonlFile(path, fsync=fsync)
        self.path = self.file.path

    async def write(
        self,
        sink: str,
        payloads: Sequence[dict[str, Any]],
        error: str,
        error_type: str,
        attempts: int,
    ) -> None:
        """Append one line per event."""
        lines = [dumps_line(r) for r in _records(sink, payloads, error, error_type, attempts)]
        await asyncio.to_thread(self.file.append_lines, lines)

    async def close(self) -> None:
        """Close the file."""
        self.file.close()


class MemoryDeadLetter:
    """Dead letters kept in a list (`records`), for tests and embedding applications."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def write(
        self,
        sink: str,
        payloads: Sequence[dict[str, Any]],
        error: str,
        error_type: str,
        attempts: int,
    ) -> None:
        """Keep the records."""
        self.records.extend(_records(sink, payloads, error, error_type, attempts))

    async def close(self) -> None:
        """Nothing to release."""
