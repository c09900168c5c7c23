"""Registers the `memory` backend (entry point `memory` of group `eventbus`)."""

from __future__ import annotations

from eventbus_core import EventBusSettings, RegisterFn, hookimpl
from eventbus_memory._bus import InMemoryEventBus

__all__ = ["build_bus", "eventbus_register_backends"]


def build_bus(settings: EventBusSettings) -> InMemoryEventBus:
    """Build an `InMemoryEventBus` from `OBSERVABILITY_BUFFER_SIZE`, `EVENTBUS_STOP_TIMEOUT`
    and `EVENTBUS_PUBLISH_PATH`."""
    return InMemoryEventBus(
        settings.buffer_size,
        stop_timeout=settings.stop_timeout,
        publish_path=settings.publish_path,
    )


@hookimpl
def eventbus_register_backends(register: RegisterFn) -> None:
    """Register backend `memory` (`in-memory` is accepted as its alias by the settings)."""
    register("memory", build_bus)
