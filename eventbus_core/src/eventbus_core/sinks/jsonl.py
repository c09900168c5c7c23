"""The `jsonl` sink: one JSON object per line, appended to a file a whole batch at a time.

A batch is written with a single append; a failed write is taken back, and a line torn by a
crash is cut off when the file is next opened, so the file only ever holds whole lines.
Events may repeat after a crash (at-least-once delivery): de-duplicate by `log_id`.

Options (`--sink-opt key=value` or `EVENTBUS_SINK_JSONL_<KEY>`):
    path: The file (default `events.jsonl`).
    max_bytes: Rotate before a batch that would take the file past this size (default
        104857600; 0: never); a batch is never split, so a file holds at least one.
    backups: Rotated files kept as `path.1` ... `path.N` (default 5).
    fsync: Flush to disk after each batch (default false).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from typing import Any

from eventbus_core._bus import check_count
from eventbus_core._errors import SettingsError
from eventbus_core._jsonl import JsonlFile, dumps_line, file_problem
from eventbus_core._settings import EventBusSettings
from eventbus_core._sink import check_options, option_bool, option_int, option_where
from eventbus_core.hookspecs import RegisterFn, hookimpl

__all__ = ["JsonlSink", "build_sink", "eventbus_register_sinks"]


class JsonlSink:
    """Append payloads to a JSON Lines file (see the module docstring).

    Args:
        path: The file; its directory is created.
        max_bytes: Rotation size (0: never rotate).
        backups: Rotated files kept.
        fsync: `fsync` after each batch.
        name: The sink's name in stats and dead letters.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "events.jsonl",
        *,
        max_bytes: int = 100 * 1024 * 1024,
        backups: int = 5,
        fsync: bool = False,
        name: str = "jsonl",
    ) -> None:
        # As the sink's options are checked (trial 159: max_bytes=-1 rotated at every batch,
        # backups="x" failed every rotation).
        check_count("max_bytes", max_bytes, 0, "0: no rotation")
        check_count("backups", backups, 0)
        if not isinstance(fsync, bool):  # fsync="no" turned it on (trial 161)
            raise TypeError(f"fsync must be True or False, not {fsync!r}")
        if not isinstance(path, str | os.PathLike):  # os's own error named no argument
            raise TypeError(f"path must be a str or a path, not {type(path).__name__}")
        self.file = JsonlFile(path, max_bytes=max_bytes, backups=backups, fsync=fsync)
        self.path = self.file.path
        self.name = name

    async def send(self, batch: Sequence[Mapping[str, Any]]) -> None:
        """Append the batch (all lines or none), in a thread: writing a file blocks."""
        await asyncio.to_thread(self.send_blocking, batch)

    def send_blocking(self, batch: Sequence[Mapping[str, Any]]) -> None:
        """Append the batch (all lines or none) from the calling thread (`BlockingSend`)."""
        self.file.append_lines([dumps_line(p) for p in batch])

    async def close(self) -> None:
        """Close the file."""
        self.file.close()


def build_sink(settings: EventBusSettings, options: Mapping[str, str]) -> JsonlSink:
    """Sink factory: `jsonl` with its options."""
    check_options(options, "jsonl", ("path", "max_bytes", "backups", "fsync"))
    max_bytes = option_int(options, "jsonl", "max_bytes", 100 * 1024 * 1024)
    backups = option_int(options, "jsonl", "backups", 5)
    fsync = option_bool(options, "jsonl", "fsync", False)
    path = options.get("path", "events.jsonl")
    if not path.strip():  # given, and empty: not the default file without a word
        raise SettingsError(
            f"{option_where('jsonl', 'path')} is empty: give the file to write (without it, "
            "events.jsonl)"
        )
    problem = file_problem(path, pipes=True)
    if problem is not None:  # at start, not as a dead letter for every batch
        raise SettingsError(f"{option_where('jsonl', 'path')}: {path!r} {problem}")
    return JsonlSink(path, max_bytes=max_bytes, backups=backups, fsync=fsync)


@hookimpl
def eventbus_register_sinks(register: RegisterFn) -> None:
    """Register the `jsonl` sink."""
    register("jsonl", build_sink)
