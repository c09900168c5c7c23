"""Environment variables that look like a misspelt setting, warned about once each.

pydantic-settings ignores a variable no setting reads, so a typo passes unnoticed:
`EVENTBUS_REDIS_KEYS=...` left the bus on the default key (the one the Go llm-proxy shares), and
`LLM_PROXY_EVENTBUS=redis` ran on memory. A variable with one of eventbus's prefixes that is
close to a known setting's name, and is none, is named in a warning with the one it resembles.
A sink's options (`EVENTBUS_SINK_<NAME>_*`) are further checked by the selected sink, which
refuses an unknown one.
"""

from __future__ import annotations

import difflib
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Final

from eventbus_core._log import get_logger

__all__ = ["misspelt_settings", "warn_misspelt_settings"]

log = get_logger("eventbus")

# eventbus's own names only: REDIS_* and NATS_* are shared with other software (REDIS_OM_URL,
# NATS_NKEY, NATS_CLUSTER), and the Go llm-proxy has LLM_PROXY_* settings of its own.
_PREFIXES: Final = ("EVENTBUS_", "LLM_PROXY_EVENT", "OBSERVABILITY_")
# Read by tests and benchmarks.
_NOT_SETTINGS: Final = ("EVENTBUS_TEST_", "EVENTBUS_BENCH_")
# `EVENTBUS_SINK_<NAME>_<KEY>`: a sink's option (`_sink.sink_options_from_env`).
_SINK_OPTION: Final = "EVENTBUS_SINK_"
# How alike a name must be (difflib's ratio): one letter more, less or swapped in a name of
# ten or more, a separator left out; not a different word (REDIS_HOST against REDIS_ADDR).
_CLOSE: Final = 0.85

_warned: set[str] = set()
_warned_lock = threading.Lock()


def misspelt_settings(environ: Iterable[str], known: Iterable[str]) -> list[tuple[str, str]]:
    """`(variable, the setting it resembles)` for each variable of `environ` that has one of
    eventbus's prefixes, is not one of `known` and is close to one (case ignored, as settings
    are read)."""
    names = {name.upper() for name in known}
    # A sink's option (`EVENTBUS_SINK_OTLP_TIMEOUT`) is compared with core's own `EVENTBUS_SINK_*`
    # settings only: against all of them it resembled EVENTBUS_STOP_TIMEOUT, and a working
    # option was called ignored. The selected sink refuses an option it does not know.
    sink_names = [name for name in names if name.startswith(_SINK_OPTION)]
    found = []
    for variable in environ:
        upper = variable.upper()
        if upper in names or not upper.startswith(_PREFIXES) or upper.startswith(_NOT_SETTINGS):
            continue
        candidates = sink_names if upper.startswith(_SINK_OPTION) else names
        close = difflib.get_close_matches(upper, candidates, n=1, cutoff=_CLOSE)
        if close:
            found.append((variable, close[0]))
    return found


def warn_misspelt_settings(known: Iterable[str], environ: Mapping[str, str] | None = None) -> None:
    """Warn once per process for each variable `misspelt_settings` finds in the environment."""
    for variable, meant in misspelt_settings(os.environ if environ is None else environ, known):
        with _warned_lock:
            if variable in _warned:
                continue
            _warned.add(variable)
        log.warning(
            "eventbus: %s is set, but no setting has that name, so it is ignored; did you mean %s?",
            variable,
            meant,
        )
