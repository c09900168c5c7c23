"""The backend a plugin's setting selects when `LLM_PROXY_EVENT_BUS` is unset.

A plugin's settings model may declare `default_backend_when_set` (field name to one of the
plugin's own backends): set in the environment, that field makes its backend the default in
place of `memory`. The Redis plugin declares the Go llm-proxy's `REDIS_ADDR`: a process given
the proxy's environment, where the proxy writes to Redis streams, must meet its events there
(issue 9), not publish into memory. Core names no backend here; it reads the declarations.

Only the environment selects: a keyword of `EventBusSettings` or a command-line option is a
choice made in code or on the command line, where the backend is chosen the same way
(`backend=`, `--backend`), and a flag such as `--backend-option REDIS_ADDR=...` on the memory
default is refused by the command line as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any

from pydantic_settings import BaseSettings

from eventbus_core._log import first_time, get_logger
from eventbus_core._plugin_settings import env_vars_of

__all__ = ["chosen_backend", "declaration_problems", "is_set"]

log = get_logger("eventbus.plugins")


def chosen_backend(
    built: Mapping[type[BaseSettings], BaseSettings],
    keywords: Mapping[type[BaseSettings], Set[str]],
    registered: Mapping[str, type[BaseSettings] | None],
    aliases: Mapping[str, str],
) -> tuple[str, tuple[str, ...]] | None:
    """The backend the environment selects through the declarations of the `built` plugin
    settings, and the variables that select it; None when none does, or when plugins name
    different backends (then core's default stays, and its warning names what it ignores).

    Args:
        built: Each installed plugin's settings model and its instance.
        keywords: Per model, the fields given as keywords (not from the environment).
        registered: Each registered backend's name and its settings model.
        aliases: Other spellings of backend names (`BACKEND_ALIASES`).
    """
    named: dict[str, list[str]] = {}
    for model, instance in built.items():
        declared = _declaration(model, registered, aliases)
        given = keywords.get(model, set())
        for field, backend in declared.items():
            if field in given or field not in instance.model_fields_set:
                continue
            if is_set(getattr(instance, field, None)):
                named.setdefault(backend, []).append(env_vars_of(model)[field])
    if len(named) != 1:
        return None
    ((backend, variables),) = named.items()
    return backend, tuple(variables)


def is_set(value: Any) -> bool:
    """Set as a variable means for the plugins that read one: not empty, blanks included (the
    Redis plugin reads `REDIS_ADDR="  "` as unset; taken as set, it selected a backend that
    then asked for an address, review 187)."""
    if value is None:
        return False
    return bool(value.strip()) if isinstance(value, str) else True


def _declaration(
    model: type[BaseSettings],
    registered: Mapping[str, type[BaseSettings] | None],
    aliases: Mapping[str, str],
) -> dict[str, str]:
    """`model.default_backend_when_set`, its wrong entries left out, each said once (see
    `declaration_problems`)."""
    declared, problems = _checked(model, registered, aliases)
    for problem in problems:
        _ignore(f"{model.__module__}.{model.__qualname__}", problem)
    return declared


def declaration_problems(
    model: type[BaseSettings],
    registered: Mapping[str, type[BaseSettings] | None],
    aliases: Mapping[str, str],
) -> list[str]:
    """What is wrong with `model.default_backend_when_set`, for `eventbus plugins` to show (a
    wrong declaration was shown as ok: it was said only where settings were read with
    `LLM_PROXY_EVENT_BUS` unset, trial 188)."""
    return _checked(model, registered, aliases)[1]


def _checked(
    model: type[BaseSettings],
    registered: Mapping[str, type[BaseSettings] | None],
    aliases: Mapping[str, str],
) -> tuple[dict[str, str], list[str]]:
    """The declaration of `model`, checked: a mapping of its own fields to backends its plugin
    registers with this model, and what is wrong with it. A wrong declaration is ignored: a
    plugin's mistake must not stop the other backends (a list there made every
    `EventBusSettings()` raise, review 187)."""
    declared = getattr(model, "default_backend_when_set", None)
    if not declared:
        return {}, []
    if not isinstance(declared, Mapping):
        return {}, [f"it is a {type(declared).__name__}, not a mapping of field to backend"]
    out: dict[str, str] = {}
    problems: list[str] = []
    for field, backend in declared.items():
        if field not in model.model_fields:
            problems.append(f"{field!r} is not one of its fields")
            continue
        spelt = str(backend).strip().lower()
        wanted = aliases.get(spelt, spelt)
        if wanted not in registered or registered[wanted] is not model:
            problems.append(
                f"{backend!r} is not a backend its plugin registers with these settings"
            )
            continue
        out[field] = wanted
    return out, problems


def _ignore(model: str, why: str) -> None:
    message = (
        f"eventbus: the settings of an installed plugin ({model}) declare "
        f"default_backend_when_set wrongly ({why}); that declaration is ignored"
    )
    if first_time(message):
        log.warning("%s", message)
