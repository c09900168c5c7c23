"""eventbus-memory: the in-process backend of eventbus (backend name `memory`)."""

from eventbus_memory._bus import InMemoryEventBus

__all__ = ["InMemoryEventBus"]
