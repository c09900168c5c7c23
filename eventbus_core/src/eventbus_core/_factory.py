"""`create_bus()`: the backend the settings name, built through its plugin's factory."""

from __future__ import annotations

from typing import Final

from eventbus_core._backend_choice import is_set
from eventbus_core._bus import BaseEventBus, EventBus, ManagedBus
from eventbus_core._errors import BackendLoadError, PluginError
from eventbus_core._install import SIBLINGS, install_command, wanted_siblings
from eventbus_core._log import add_patterns, first_time, get_logger, scrub
from eventbus_core._plugins import PluginRegistry, Registration, get_registry
from eventbus_core._settings import ENV_VARS, EventBusSettings

__all__ = ["backend_given_as", "create_bus"]

_BUS_METHODS: Final = ("publish", "subscribe", "stop", "stats")

log = get_logger("eventbus")


def backend_given_as(settings: EventBusSettings) -> str:
    """Where `settings.backend` came from, as an error message should say it: the variable, or
    "the default" when nobody set it (not a variable the user never typed)."""
    variable = ENV_VARS["backend"]
    if "backend" in settings.model_fields_set:
        return variable
    if settings.backend_chosen_by:
        return f"{' and '.join(settings.backend_chosen_by)} being set, {variable} unset"
    return f"the default, {variable} being unset"


def create_bus(
    settings: EventBusSettings | None = None, *, registry: PluginRegistry | None = None
) -> BaseEventBus:
    """Build the event bus selected by `settings.backend` (`LLM_PROXY_EVENT_BUS`).

    Every bus it returns is a `BaseEventBus`: a sync and async context manager with `astop()`
    (a plugin's bus that is not one comes wrapped in a `ManagedBus`; `capability()` looks
    through it).

    Args:
        settings: Settings to use; read from the environment when omitted.
        registry: Plugin registry to look the backend up in; the installed plugins by default.

    Raises:
        UnknownBackendError: no installed plugin registers that backend; the message lists the
            installed ones and the pip command that brings the missing one.
        BackendLoadError: the plugin providing the backend is installed but failed to load,
            or its factory could not import what it needs.
        PluginError: the factory failed otherwise, or returned something that is not a bus.
        SettingsError: a setting is invalid; the message names the environment variable.
    """
    if settings is None:
        settings = EventBusSettings()
    # What the settings say to mask, logs mask too from now on, in a publishing process as in
    # a dispatcher (a middleware's process logged them as they were).
    add_patterns(settings.redact_pattern_list)
    registry = registry or get_registry()
    registration = registry.backend(settings.backend, given_as=backend_given_as(settings))
    if "backend" not in settings.model_fields_set:
        _say_chosen_by(settings, registration, registry)
        _warn_of_ignored_settings(settings, registration, registry)
        if not settings.backend_chosen_by:  # core's own default: nothing chose another
            _warn_of_missing_siblings(registration, registry)
    if registration.settings is not None:
        # Its settings, read as the other plugins' were: a model that could not be read (a
        # broken plugin, which the other backends do without) is refused here, naming it.
        settings.plugin_settings(registration.settings)
    try:
        bus: EventBus = registry.build(registration, "backend", settings)
    except PluginError as exc:
        if not isinstance(exc.__cause__, ImportError):
            raise
        advice = registry.dependency_advice(registration, exc.__cause__)
        raise BackendLoadError(
            f"backend {registration.name!r} ({registry.owner(registration)}) could not import "
            f"what it needs: {scrub(str(exc.__cause__))}" + (f". {advice}" if advice else "")
        ) from exc.__cause__
    missing = [m for m in _BUS_METHODS if not callable(getattr(bus, m, None))]
    if missing:
        raise PluginError(
            f"backend {registration.name!r} of {registry.owner(registration)}: its factory "
            f"returned {type(bus).__name__}, not an event bus (no {', '.join(missing)}); the "
            "factory must return the bus it builds"
        )
    if settings.redact_on_publish:
        from eventbus_core.redact._bus import RedactingBus
        from eventbus_core.redact._redact import Redactor

        return RedactingBus(bus, Redactor.from_settings(settings))
    return bus if isinstance(bus, BaseEventBus) else ManagedBus(bus)


def _say_chosen_by(
    settings: EventBusSettings, registration: Registration, registry: PluginRegistry
) -> None:
    """A backend chosen by a plugin's setting (`default_backend_when_set`) rather than by
    `LLM_PROXY_EVENT_BUS`: said once per process, with how to choose otherwise, since events
    then leave the process (into the Go proxy's Redis stream, for `REDIS_ADDR`). The plugin's
    other backends are named too: the software that shares the setting may use one of those
    (trial 214: an older Go proxy writing the Redis LIST was told nothing of it)."""
    chosen = settings.backend_chosen_by
    if not chosen:
        return
    variable = ENV_VARS["backend"]
    verb = "are" if len(chosen) > 1 else "is"
    others = sorted(
        name
        for name, other in registry.backends.items()
        if other.plugin == registration.plugin and other.factory is not registration.factory
    )
    also = (
        f", {variable}={' or '.join(others)} (its plugin's other "
        f"backend{'s' if len(others) > 1 else ''}) where the software that shares "
        f"{' and '.join(chosen)} uses {'one of those' if len(others) > 1 else 'that one'}"
        if others
        else ""
    )
    message = (
        f"{variable} is not set and {' and '.join(chosen)} {verb}, which selects backend "
        f"{settings.backend!r} (its plugin's default for that setting): set "
        f"{variable}={settings.backend} to keep it and end this warning{also}, or "
        f"{variable}=memory to keep events inside this process"
    )
    if first_time(message):
        log.warning("%s", message)


def _warn_of_missing_siblings(registration: Registration, registry: PluginRegistry) -> None:
    """The default backend while a variable says an eventbus backend that is not installed is
    wanted (`Sibling.variables`: `REDIS_ADDR` without eventbus-redis): no plugin reads it, so
    nothing else would say that events stay in this process (trial 186)."""
    variable = ENV_VARS["backend"]
    for sibling, given in wanted_siblings():
        if any(name in registry.backends for name, s in SIBLINGS.items() if s == sibling):
            continue  # installed: one of its backends is registered
        message = (
            f"{', '.join(given)} {'are' if len(given) > 1 else 'is'} set, but "
            f"{sibling.distribution}, whose backends read {'them' if len(given) > 1 else 'it'}, "
            f"is not installed: {variable} is not set, so the default backend "
            f"{registration.name!r} is used and events stay in this process; install it "
            f"({install_command(sibling)}), or set {variable}={registration.name} to end this "
            "warning"
        )
        if first_time(message):
            log.warning("%s", message)


def _warn_of_ignored_settings(
    settings: EventBusSettings, registration: Registration, registry: PluginRegistry
) -> None:
    """The default backend, with settings given (variables set, or keywords) that only other
    backends read: a process set up as the Go proxy is (`REDIS_ADDR`) published into the
    in-memory bus without a word (trial 154). The command line refuses such a flag; a variable
    may be set for something else too (a cache's `REDIS_URL`), so it gets a warning, which
    choosing the backend ends."""
    # Blank is unset, as the plugins read their variables (a blank REDIS_ADDR was called set).
    given = {f for f in settings.model_fields_set if is_set(getattr(settings, f, None))}
    elsewhere = registry.read_only_by_others(registration, given)
    if not elsewhere:
        return
    names = sorted(settings.env_var(field) for field in elsewhere)
    backends = sorted({name for readers in elsewhere.values() for name in readers})
    variable = ENV_VARS["backend"]
    chosen = settings.backend_chosen_by
    which = (
        f"backend {registration.name!r} (selected by {' and '.join(chosen)})"
        if chosen
        else f"the default backend {registration.name!r}"
    )
    message = (
        f"{variable} is not set, so {which} is used, which "
        f"ignores {', '.join(names)} (set: read by the {' and '.join(backends)} "
        f"backend{'s' if len(backends) > 1 else ''}): to use "
        f"{'them' if len(names) > 1 else 'it'}, set {variable} to "
        f"{'one of those backends' if len(backends) > 1 else repr(backends[0])}; to keep "
        f"{registration.name!r} and end this warning, set {variable}={registration.name}"
    )
    if first_time(message):
        log.warning("%s", message)
