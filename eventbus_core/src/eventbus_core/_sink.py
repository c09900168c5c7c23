"""The sink contract, and helpers sink factories use to read their options.

A sink is any object with `name`, an async `send(batch)` and an async `close()`. `send` gets a
list of payloads (dicts, already transformed and redacted); it returns when the whole batch is
stored, or raises: `PermanentSinkError` if retrying cannot help, `TransientSinkError` (with
`retry_after` if the destination said) or any other exception if it may. The dispatcher calls
`send` from one task per sink, never concurrently for the same sink.

Options reach a factory as `dict[str, str]`, from `--sink-opt key=value` on the command line
or from `EVENTBUS_SINK_<NAME>_<KEY>` environment variables (`sink_options_from_env`).
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from eventbus_core._errors import SettingsError

__all__ = [
    "Sink",
    "check_options",
    "option_bool",
    "option_float",
    "option_int",
    "option_where",
    "sink_figures",
    "sink_options_from_env",
    "sink_problem",
]


@runtime_checkable
class Sink(Protocol):
    """A destination for batches of payloads (see the module docstring)."""

    name: str

    async def send(self, batch: Sequence[dict[str, Any]]) -> None:
        """Store or forward the whole batch, or raise."""

    async def close(self) -> None:
        """Flush and release resources; called once when the dispatcher stops."""


def sink_problem(sink: object) -> str | None:
    """What keeps `sink` from being a sink (see the module docstring), or None if nothing does.

    A `send` or `close` that is a plain function, not `async def`, is refused here, before any
    event reaches it: awaiting what it returns would fail every batch.
    """
    name = getattr(sink, "name", None)
    if not isinstance(name, str) or not name:
        return f"{type(sink).__name__} has no `name` (a non-empty str)"
    for method in ("send", "close"):
        fn = getattr(sink, method, None)
        if not callable(fn):
            return f"{type(sink).__name__} has no {method}() method"
        plain = inspect.ismethod(fn) or inspect.isfunction(fn)
        if plain and not inspect.iscoroutinefunction(fn):
            return f"{type(sink).__name__}.{method}() must be `async def`"
    return None


def sink_options_from_env(sink: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Collect `EVENTBUS_SINK_<SINK>_<KEY>=value` variables as `{key: value}` (key lower case).

    Dashes in the sink name are written as underscores in the variable name.
    """
    env = os.environ if environ is None else environ
    prefix = f"EVENTBUS_SINK_{sink.upper().replace('-', '_')}_"
    return {
        name[len(prefix) :].lower(): value
        for name, value in env.items()
        if name.upper().startswith(prefix) and len(name) > len(prefix)
    }


def option_where(sink: str, key: str) -> str:
    """How a message names option `key` of `sink`: by both ways to give it (the flag and the
    variable), since the message cannot know which one the user typed."""
    return (
        f"sink option {key!r} of {sink!r} (--sink-opt {key}=... or "
        f"EVENTBUS_SINK_{sink.upper().replace('-', '_')}_{key.upper()})"
    )


def check_options(
    options: Mapping[str, str], sink: str, known: Iterable[str], prefixes: Iterable[str] = ()
) -> None:
    """Refuse options the sink does not take: a misspelt `pth=` must not be ignored silently.

    Args:
        known: The option names the sink reads.
        prefixes: Prefixes of open-ended option families (the webhook's `header_<name>`).

    Raises:
        SettingsError: an unknown option; the message names it, suggests the nearest known
            one and lists them all.
    """
    names = sorted(known)
    starts = tuple(prefixes)
    for key in options:
        if key in names or (starts and key.startswith(starts)):
            continue
        close = difflib.get_close_matches(key, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        families = "".join(f", {p}<name>" for p in starts)
        raise SettingsError(
            f"unknown {option_where(sink, key)}{hint}; {sink} takes: {', '.join(names)}{families}"
        )


def option_float(
    options: Mapping[str, str], sink: str, key: str, default: float, *, positive: bool = False
) -> float:
    """Read a float option; raises `SettingsError` naming the option if it is not a finite
    number >= 0, or > 0 with `positive` (a timeout of `nan` or 0 would fail every send, and
    dead-letter every batch)."""
    raw = options.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{option_where(sink, key)} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise SettingsError(f"{option_where(sink, key)} must be a finite number, got {raw!r}")
    if value < 0 or (positive and value == 0):
        raise SettingsError(
            f"{option_where(sink, key)} must be {'>' if positive else '>='} 0, got {raw!r}"
        )
    return value


def option_int(options: Mapping[str, str], sink: str, key: str, default: int) -> int:
    """Read an integer option (`_` allowed as a digit separator)."""
    raw = options.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise SettingsError(f"{option_where(sink, key)} must be an integer, got {raw!r}") from None
    if value < 0:
        raise SettingsError(f"{option_where(sink, key)} must be >= 0, got {raw!r}")
    return value


def option_bool(options: Mapping[str, str], sink: str, key: str, default: bool) -> bool:
    """Read a boolean option: 1/true/yes/on or 0/false/no/off."""
    raw = options.get(key)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{option_where(sink, key)} must be true or false, got {raw!r}")


def sink_figures(sink: object) -> dict[str, int]:
    """A sink's own counters (`capabilities.SinkFigures`), those that are ints; {} for a sink
    without any, or whose `figures()` fails (they are informative: a plugin's bug there must
    fail neither the dispatcher's stats nor a replay)."""
    from eventbus_core.capabilities import SinkFigures, capability

    own = capability(sink, SinkFigures)
    if own is None:
        return {}
    try:
        figures = dict(own.figures())
    except KeyboardInterrupt:
        raise  # the user's Ctrl-C, in a replay's main thread
    except BaseException:  # GeneratorExit, a library's own: a plugin's bug too (review 202)
        return {}
    return {
        k: v
        for k, v in figures.items()
        if isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
    }
