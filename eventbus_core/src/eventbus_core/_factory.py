"""`create_bus()`: the backend the settings name, built through its plugin's factory."""

from __future__ import annotations

from eventbus_core._bus import EventBus
from eventbus_core._errors import BackendLoadError
from eventbus_core._plugins import PluginRegistry, get_registry
from eventbus_core._settings import ENV_VARS, EventBusSettings

__all__ = ["backend_given_as", "create_bus"]


def backend_given_as(settings: EventBusSettings) -> str:
    """Where `settings.backend` came from, as an error message should say it: the variable, or
    "the default" when nobody set it (not a variable the user never typed)."""
    variable = ENV_VARS["backend"]
    if "backend" in settings.model_fields_set:
        return variable
    return f"the default, {variable} being unset"


def create_bus(
    settings: EventBusSettings | None = None, *, registry: PluginRegistry | None = None
) -> EventBus:
    """Build the event bus selected by `settings.backend` (`LLM_PROXY_EVENT_BUS`).

    Args:
        settings: Settings to use; read from the environment when omitted.
        registry: Plugin registry to look the backend up in; the installed plugins by default.

    Raises:
        UnknownBackendError: no installed plugin registers that backend; the message lists the
            installed ones and the pip command that brings the missing one.
        BackendLoadError: the plugin providing the backend is installed but failed to load.
        SettingsError: a setting is invalid; the message names the environment variable.
    """
    if settings is None:
        settings = EventBusSettings()
    registry = registry or get_registry()
    registration = registry.backend(settings.backend, given_as=backend_given_as(settings))
    try:
        bus: EventBus = registration.factory(settings)
    except ImportError as exc:
        raise BackendLoadError(
            f"backend {registration.name!r} (plugin {registration.plugin!r}) could not import "
            f"what it needs: {exc}"
        ) from exc
    if settings.redact_on_publish:
        from eventbus_core.redact._bus import RedactingBus
        from eventbus_core.redact._redact import Redactor

        bus = RedactingBus(bus, Redactor.from_settings(settings))
    return bus
