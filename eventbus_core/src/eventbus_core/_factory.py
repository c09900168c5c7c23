"""`create_bus()`: the backend the settings name, built through its plugin's factory."""

from __future__ import annotations

from typing import Final

from eventbus_core._bus import BaseEventBus, EventBus, ManagedBus
from eventbus_core._errors import BackendLoadError, PluginError
from eventbus_core._log import add_patterns, scrub
from eventbus_core._plugins import PluginRegistry, get_registry
from eventbus_core._settings import ENV_VARS, EventBusSettings

__all__ = ["backend_given_as", "create_bus"]

_BUS_METHODS: Final = ("publish", "subscribe", "stop", "stats")


def backend_given_as(settings: EventBusSettings) -> str:
    """Where `settings.backend` came from, as an error message should say it: the variable, or
    "the default" when nobody set it (not a variable the user never typed)."""
    variable = ENV_VARS["backend"]
    if "backend" in settings.model_fields_set:
        return variable
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
    if registration.settings is not None:
        # Its settings, read as the other plugins' were: a model that could not be read (a
        # broken plugin, which the other backends do without) is refused here, naming it.
        settings.plugin_settings(registration.settings)
    try:
        bus: EventBus = registry.build(registration, "backend", settings)
    except PluginError as exc:
        if not isinstance(exc.__cause__, ImportError):
            raise
        raise BackendLoadError(
            f"backend {registration.name!r} ({registry.owner(registration)}) could not import "
            f"what it needs: {scrub(str(exc.__cause__))}"
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
