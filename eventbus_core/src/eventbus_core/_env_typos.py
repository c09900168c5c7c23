"""Environment variables that look like a misspelt setting, warned about once each.

pydantic-settings ignores a variable no setting reads, so a typo passes unnoticed:
a plugin's `..._KEYS=...` for its `..._KEY` left the bus on the default key (the one the Go
llm-proxy shares), and `LLM_PROXY_EVENTBUS=redis` ran on memory. A variable with one of
eventbus's prefixes that is close to a known setting's name, and is none, is named in a warning
with the one it resembles.
A sink's options (`EVENTBUS_SINK_<NAME>_*`) are further checked by the selected sink, which
refuses an unknown one.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from typing import Final

from eventbus_core._log import first_time, get_logger

__all__ = [
    "misspelt_settings",
    "misspelt_sink_options",
    "spelling_read",
    "warn_misspelt_settings",
    "warn_misspelt_sink_options",
]

log = get_logger("eventbus")

# eventbus's own names only: REDIS_* and NATS_* are shared with other software (REDIS_OM_URL,
# NATS_NKEY, NATS_CLUSTER), and the Go llm-proxy has LLM_PROXY_* settings of its own.
_PREFIXES: Final = ("EVENTBUS_", "LLM_PROXY_EVENT", "OBSERVABILITY_")
# Read by tests and benchmarks.
_NOT_SETTINGS: Final = ("EVENTBUS_TEST_", "EVENTBUS_BENCH_")
# `EVENTBUS_SINK_<NAME>_<KEY>`: a sink's option (`_sink.sink_options_from_env`).
_SINK_OPTION: Final = "EVENTBUS_SINK_"
_SINKS_OPTION: Final = "EVENTBUS_SINKS_"  # the same with EVENTBUS_SINKS' S
# Sink names are short: one letter out of place in `otlp` (`otpl`) is 0.75 alike.
_CLOSE_SINK_NAME: Final = 0.75
# How alike a name must be (difflib's ratio): one letter more, less or swapped in a name of
# ten or more, a separator left out; not a different word (REDIS_HOST against REDIS_ADDR).
_CLOSE: Final = 0.85
# Names a newcomer guesses for the variable that chooses the backend, too far from
# LLM_PROXY_EVENT_BUS (the Go llm-proxy's name) to be caught as typos: EVENTBUS_BACKEND=redis ran
# on memory with no word said. Compared with separators and case ignored.
_BACKEND_GUESSES: Final = frozenset(
    {
        "EVENTBUSBACKEND",
        "EVENTBUSBUS",
        "EVENTBUSEVENTBUS",
        "EVENTBUSTYPE",
        "EVENTBUSBACKENDNAME",
        "LLMPROXYEVENTBACKEND",
        "LLMPROXYEVENTBUSBACKEND",
        "LLMPROXYEVENTBUSTYPE",
    }
)
_BACKEND_VARIABLE: Final = "LLM_PROXY_EVENT_BUS"


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
        if _BACKEND_VARIABLE in names and upper.replace("_", "") in _BACKEND_GUESSES:
            found.append((variable, _BACKEND_VARIABLE))
            continue
        candidates = sink_names if upper.startswith(_SINK_OPTION) else names
        close = difflib.get_close_matches(upper, candidates, n=1, cutoff=_CLOSE)
        if close:
            found.append((variable, close[0]))
    return found


def warn_misspelt_settings(known: Iterable[str], environ: Mapping[str, str] | None = None) -> None:
    """Warn once per process for each variable `misspelt_settings` finds in the environment,
    and for each `other_case_settings` finds."""
    names = list(known)
    variables = os.environ if environ is None else environ
    _warn_once(misspelt_settings(variables, names), "no setting has that name")
    _warn_other_case(other_case_settings(variables, names), variables)


def spelling_read(name: str, environ: Iterable[str]) -> str | None:
    """The spelling of `name` whose value is read, names being read whatever their case: of
    those `environ` holds, the last it lists (pydantic-settings keeps the one it meets last);
    None if it holds none."""
    upper = name.upper()
    spelt = [key for key in environ if key.upper() == upper]
    return spelt[-1] if spelt else None


def _warn_other_case(found: Iterable[tuple[str, str]], variables: Mapping[str, str]) -> None:
    """Warn once per variable set in another case than the name it is read as (`meant`)."""
    for variable, meant in found:
        if not first_time(f"misspelt {variable}"):
            continue
        if meant in variables:
            # Both: the one met last is read, and a message then named REDIS_URL while
            # redis_url's value was used (trial 119).
            read = spelling_read(meant, variables)
            log.warning(
                "eventbus: both %s and %s are set, and names are read whatever their case: "
                "the value of %s is the one read; unset %s",
                meant,
                variable,
                read,
                variable,
            )
            continue
        log.warning(
            "eventbus: %s is read as %s (eventbus reads names whatever their case, and its "
            "messages name %s); programs that read exact names, the Go llm-proxy among them, "
            "do not see it: write %s",
            variable,
            meant,
            meant,
            meant,
        )


def other_case_settings(environ: Iterable[str], known: Iterable[str]) -> list[tuple[str, str]]:
    """`(variable, the setting it sets)` for each variable of `environ` that sets one of `known`
    under another case (`redis_url` for REDIS_URL): pydantic-settings reads it, and errors then
    name REDIS_URL, which the user never set (trial 117)."""
    names = {name.upper(): name for name in known}
    return [
        (variable, names[variable.upper()])
        for variable in environ
        if variable.upper() in names and variable != names[variable.upper()]
    ]


def misspelt_sink_options(
    environ: Iterable[str], sinks: Iterable[str], known: Iterable[str]
) -> list[tuple[str, str]]:
    """`(variable, the variable it resembles)` for each `EVENTBUS_SINK_<NAME>_<KEY>` of
    `environ` whose `<NAME>` is none of `sinks` but close to one (`EVENTBUS_SINK_OTPL_TIMEOUT`
    for the `otlp` sink); the sink reads only its own, so such a variable is ignored. Core's
    settings (`known`, such as EVENTBUS_SINK_QUEUE_SIZE) are not sink options."""
    names = {name.upper() for name in known}
    spelled = [sink.upper().replace("-", "_") for sink in sinks]
    found = []
    for variable in environ:
        upper = variable.upper()
        if upper in names:
            continue
        if upper.startswith(_SINKS_OPTION):
            # `EVENTBUS_SINKS_OTLP_TIMEOUT`: the prefix itself misspelt, the name maybe not.
            rest = upper[len(_SINKS_OPTION) :]
            exact = next((s for s in spelled if rest.startswith(f"{s}_")), None)
            if exact is not None:
                found.append((variable, f"{_SINK_OPTION}{rest}"))
                continue
        elif upper.startswith(_SINK_OPTION):
            rest = upper[len(_SINK_OPTION) :]
            if any(rest.startswith(f"{sink}_") for sink in spelled):
                continue
        else:
            continue
        # The name typed is the words before some `_`: the closest to a sink's name is meant.
        best = (0.0, "")
        for at in (i for i, c in enumerate(rest) if c == "_"):
            typed, key = rest[:at], rest[at + 1 :]
            for sink in spelled:
                ratio = difflib.SequenceMatcher(None, typed, sink).ratio()
                if key and ratio > best[0]:
                    best = (ratio, f"{_SINK_OPTION}{sink}_{key}")
        if best[0] >= _CLOSE_SINK_NAME:
            found.append((variable, best[1]))
    return found


def warn_misspelt_sink_options(
    sinks: Iterable[str], known: Iterable[str], environ: Mapping[str, str] | None = None
) -> None:
    """Warn once per process for each variable `misspelt_sink_options` finds."""
    variables = os.environ if environ is None else environ
    names = list(sinks)
    _warn_once(misspelt_sink_options(variables, names, known), "no installed sink takes it")
    _warn_other_case(other_case_sink_options(variables, names), variables)


def other_case_sink_options(environ: Iterable[str], sinks: Iterable[str]) -> list[tuple[str, str]]:
    """`(variable, the name it is read as)` for each sink option variable of `environ` in
    another case (`eventbus_sink_webhook_url`): read as its sink's option all the same, with no
    word, while an error then named EVENTBUS_SINK_WEBHOOK_URL (trial 121)."""
    prefixes = tuple(f"{_SINK_OPTION}{sink.upper().replace('-', '_')}_" for sink in sinks)
    return [
        (variable, variable.upper())
        for variable in environ
        if variable != variable.upper() and variable.upper().startswith(prefixes)
    ]


def _warn_once(found: Iterable[tuple[str, str]], why: str) -> None:
    for variable, meant in found:
        if not first_time(f"misspelt {variable}"):
            continue
        log.warning(
            "eventbus: %s is set, but %s, so it is ignored; did you mean %s?",
            variable,
            why,
            meant,
        )
