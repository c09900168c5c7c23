"""The `console` sink: one human-readable line per event, for local development.

Options (`--sink-opt key=value` or `EVENTBUS_SINK_CONSOLE_<KEY>`):
    stream: `stdout` (default) or `stderr`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from eventbus_core._control_chars import escape_control
from eventbus_core._errors import SettingsError
from eventbus_core._settings import EventBusSettings
from eventbus_core._sink import check_options, option_where
from eventbus_core.hookspecs import RegisterFn, hookimpl

__all__ = ["ConsoleSink", "build_sink", "eventbus_register_sinks", "format_line"]


def format_line(payload: Mapping[str, Any]) -> str:
    """Render one payload: method, path, status, duration, then model and tokens if known, on
    one line (control characters written as `\\xNN`)."""
    parts = [
        str(payload.get("method") or "-"),
        str(payload.get("path") or "-"),
        str(payload.get("status") if payload.get("status") is not None else "-"),
    ]
    duration = payload.get("duration_ms")
    parts.append(f"{duration:.1f}ms" if isinstance(duration, int | float) else "-")
    if payload.get("model"):
        parts.append(f"model={payload['model']}")
    usage = payload.get("usage")
    if isinstance(usage, Mapping) and usage:
        parts.append(
            "tokens={}+{}={}".format(
                usage.get("prompt_tokens", "?"),
                usage.get("completion_tokens", "?"),
                usage.get("total_tokens", "?"),
            )
        )
    if payload.get("request_id"):
        parts.append(f"request_id={payload['request_id']}")
    if payload.get("log_id"):
        parts.append(f"log_id={payload['log_id']}")
    if payload.get("transform_error"):
        parts.append(f"transform_error={payload['transform_error']!r}")
    # The path and request id come from clients: a CR/LF in them would forge a line, an ESC
    # drive the terminal.
    return escape_control(" ".join(parts))


class ConsoleSink:
    """Print one line per event.

    Args:
        stream: Where to write (default `sys.stdout`, looked up at each batch so that
            redirection and capture work).
        name: The sink's name in stats and dead letters.
    """

    def __init__(self, stream: TextIO | None = None, *, name: str = "console") -> None:
        self._stream = stream
        self.name = name

    async def send(self, batch: Sequence[Mapping[str, Any]]) -> None:
        """Write the batch's lines in one write (lines of a batch are never interleaved)."""
        stream = self._stream or sys.stdout
        stream.write("".join(format_line(p) + "\n" for p in batch))
        stream.flush()

    async def close(self) -> None:
        """Flush the stream."""
        (self._stream or sys.stdout).flush()


def build_sink(settings: EventBusSettings, options: Mapping[str, str]) -> ConsoleSink:
    """Sink factory: `console` with its options."""
    check_options(options, "console", ("stream",))
    where = options.get("stream", "stdout").strip().lower()
    if where not in ("stdout", "stderr"):
        raise SettingsError(
            f"{option_where('console', 'stream')} must be stdout or stderr, got {where!r}"
        )
    return ConsoleSink(sys.stderr if where == "stderr" else None)


@hookimpl
def eventbus_register_sinks(register: RegisterFn) -> None:
    """Register the `console` sink."""
    register("console", build_sink)
