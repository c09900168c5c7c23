"""Hook specifications of eventbus (pluggy project name `eventbus`).

Plugins are modules or objects exposed through an entry point of group `eventbus`; the entry
name is the word users type (`LLM_PROXY_EVENT_BUS=redis`, `EVENTBUS_SINKS=jsonl`). They
implement any of the hooks below with the `eventbus_core.hookimpl` marker.

Both hooks are *registration* hooks: they are called once, when the plugin registry is built
(at start-up, before the first bus or dispatcher is created), and never per event. They must
not do I/O or open connections: register factories, and let the factories do the work when a
user selects them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import pluggy

__all__ = ["BackendFactory", "RegisterFn", "SinkFactory", "hookimpl", "hookspec"]

PROJECT_NAME = "eventbus"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

BackendFactory = Callable[[Any], Any]
"""`factory(settings: EventBusSettings) -> EventBus`."""

SinkFactory = Callable[..., Any]
"""`factory(settings: EventBusSettings, options: dict[str, str]) -> Sink`."""


class RegisterFn(Protocol):
    """`register(name, factory, *, settings=None)`: what the hooks receive.

    `settings` is the plugin's own pydantic-settings model (a `BaseSettings` subclass, e.g. an
    `eventbus_core.PluginSettings`): its fields become settings of eventbus. `EventBusSettings`
    accepts them as keywords and attributes and validates them from the environment, `eventbus
    plugins` and `--backend-option KEY=VALUE` know them, and a field declaring
    `json_schema_extra={"cli_flag": "--flag"}` gets that command-line flag. Register the same
    model with each backend that reads it.
    """

    def __call__(
        self, name: str, factory: Callable[..., Any], /, *, settings: type[Any] | None = None
    ) -> None:
        """Register `factory` under `name` (with its settings model, if any)."""


@hookspec
def eventbus_register_backends(register: RegisterFn) -> None:
    """Register event bus backends.

    Called once when the plugin registry is built; never per event.

    Args:
        register: Call `register(name, factory, settings=Model)` for each backend. `name` is
            the word users put in `LLM_PROXY_EVENT_BUS` (lower case, conventionally the
            plugin's entry-point name); `factory(settings: EventBusSettings) -> EventBus`
            builds a bus from settings and is only called when the user selects `name`.
            `settings` (optional) is the backend's own pydantic-settings model; the factory
            reads its values with `settings.plugin_settings(Model)` (or as attributes of
            `settings`).

    Returns:
        Nothing; the hook must not do I/O.
    """


@hookspec
def eventbus_register_sinks(register: RegisterFn) -> None:
    """Register sinks: the destinations the dispatcher sends batches of events to.

    Called once when the plugin registry is built; never per event.

    Args:
        register: Call `register(name, factory)` for each sink. `name` is the word users put in
            `EVENTBUS_SINKS` or `--sink`; `factory(settings: EventBusSettings, options:
            dict[str, str]) -> Sink` builds the sink, where `options` are the sink's own options
            (`--sink-opt key=value`, or `EVENTBUS_SINK_<NAME>_<KEY>` in the environment).

    Returns:
        Nothing; the hook must not do I/O.
    """
