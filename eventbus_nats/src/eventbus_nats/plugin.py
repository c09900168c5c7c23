"""Registers backend `nats` (entry point `nats` of group `eventbus`).

Registration does no I/O; a bus connects to NATS in the background when it is built.
"""

from __future__ import annotations

from eventbus_core import EventBusSettings, RegisterFn, hookimpl
from eventbus_nats._bus import NatsEventBus
from eventbus_nats._settings import NatsSettings

__all__ = ["build_bus", "eventbus_register_backends"]


def build_bus(settings: EventBusSettings) -> NatsEventBus:
    """Build backend `nats`: `OBSERVABILITY_BUFFER_SIZE` and `EVENTBUS_STOP_TIMEOUT` from
    `settings`, `NATS_URL` and `EVENTBUS_NATS_*` from its `NatsSettings` (the environment, or
    keywords given to `EventBusSettings`)."""
    return NatsEventBus.from_settings(settings, settings.plugin_settings(NatsSettings))


@hookimpl
def eventbus_register_backends(register: RegisterFn) -> None:
    """Register backend `nats` (NATS JetStream) with its settings (`NatsSettings`)."""
    register("nats", build_bus, settings=NatsSettings)
