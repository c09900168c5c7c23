"""The plugin registry: hooks, entry points, selection by name and helpful errors."""

from __future__ import annotations

import importlib.metadata as md
import types
import warnings
from typing import Any

import pytest

from eventbus_core import (
    BackendLoadError,
    EventBusSettings,
    PluginLoadWarning,
    PluginRegistry,
    UnknownBackendError,
    UnknownSinkError,
    create_bus,
    hookimpl,
)
from eventbus_core.testing import RecordingBus, make_event
from eventbus_memory import InMemoryEventBus


class RecordingPlugin:
    """A plugin object registering one backend and one sink."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def eventbus_register_backends(self, register: Any) -> None:
        self.calls += 1
        register("recording", lambda settings: RecordingBus(settings.buffer_size))

    @hookimpl
    def eventbus_register_sinks(self, register: Any) -> None:
        register("null", lambda settings, options: object())


def test_hooks_run_once_at_registration_not_per_bus() -> None:
    plugin = RecordingPlugin()
    registry = PluginRegistry(load_entry_points=False, plugins=[plugin])
    for _ in range(3):
        bus = create_bus(EventBusSettings(backend="recording", buffer_size=5), registry=registry)
        assert isinstance(bus, RecordingBus) and bus.buffer_size == 5
    assert plugin.calls == 1
    assert registry.sink("null").plugin == registry.backend("recording").plugin


def test_installed_entry_points_register_memory_and_redis() -> None:
    names = {ep.name for ep in md.entry_points(group="eventbus")}
    assert {"memory", "redis"} <= names
    registry = PluginRegistry()
    assert "memory" in registry.backends
    info = registry.plugins["memory"]
    assert (info.distribution, info.error) == ("eventbus-memory", None)
    assert info.version == md.version("eventbus-memory")
    assert info.backends == ["memory"]


def test_unknown_backend_lists_installed_and_pip_command() -> None:
    registry = PluginRegistry(load_entry_points=False, plugins=[RecordingPlugin()])
    with pytest.raises(UnknownBackendError) as info:
        create_bus(EventBusSettings(backend="kafka"), registry=registry)
    message = str(info.value)
    assert isinstance(info.value, LookupError)
    assert "'kafka'" in message and "LLM_PROXY_EVENT_BUS" in message
    assert "Installed backends: recording" in message
    assert "pip install eventbus-kafka" in message


def test_missing_builtin_backend_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # Installed from an index (not a checkout): the extra is the command that works.
    monkeypatch.setattr("eventbus_core._install.checkout_root", lambda: None)
    registry = PluginRegistry(load_entry_points=False)
    with pytest.raises(UnknownBackendError, match=r'pip install "eventbus-core\[redis\]"'):
        registry.backend("redis-streams")
    with pytest.raises(UnknownBackendError, match="Installed backends: none"):
        registry.backend("memory")


def test_unknown_sink_lists_installed_sinks() -> None:
    registry = PluginRegistry(load_entry_points=False, plugins=[RecordingPlugin()])
    with pytest.raises(UnknownSinkError, match="Installed sinks: null"):
        registry.sink("kafka")


class _BrokenEntryPoint:
    """Stands in for an installed entry point whose module fails to import."""

    name = "broken"
    value = "eventbus_broken.plugin"
    dist = None

    def load(self) -> Any:
        raise ImportError("No module named 'eventbus_broken_dependency'")


def test_plugin_that_fails_to_import_is_skipped_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = md.entry_points

    def entry_points(**kwargs: Any) -> Any:
        return [*real(**kwargs), _BrokenEntryPoint()]

    monkeypatch.setattr(md, "entry_points", entry_points)
    with pytest.warns(PluginLoadWarning, match="'broken'.*failed to load"):
        registry = PluginRegistry()
    assert "memory" in registry.backends  # the others still load
    assert registry.plugins["broken"].error == (
        "ImportError: No module named 'eventbus_broken_dependency'"
    )
    # Selecting the broken plugin raises its own error, chained.
    with pytest.raises(BackendLoadError, match="failed to load") as info:
        create_bus(EventBusSettings(backend="broken"), registry=registry)
    assert isinstance(info.value.__cause__, ImportError)
    # Selecting another backend works, and an unknown name mentions the broken plugin.
    create_bus(EventBusSettings(backend="memory"), registry=registry).stop()
    with pytest.raises(UnknownBackendError, match="Plugins that failed to load: broken"):
        registry.backend("nope")


def test_factory_import_error_becomes_backend_load_error() -> None:
    plugin = types.SimpleNamespace()

    @hookimpl
    def eventbus_register_backends(register: Any) -> None:
        def factory(settings: EventBusSettings) -> Any:
            raise ImportError("redis is not installed")

        register("needs-redis", factory)

    plugin.eventbus_register_backends = eventbus_register_backends
    registry = PluginRegistry(load_entry_points=False, plugins=[plugin])
    with pytest.raises(BackendLoadError, match="redis is not installed"):
        create_bus(EventBusSettings(backend="needs-redis"), registry=registry)


def test_duplicate_names_keep_the_first_and_warn() -> None:
    first, second = RecordingPlugin(), RecordingPlugin()
    registry = PluginRegistry(load_entry_points=False)
    registry.register_plugin(first, name="first")
    with pytest.warns(PluginLoadWarning, match="registered by both"):
        registry.register_plugin(second, name="second")
    assert registry.backend("recording").plugin == "first"


def test_register_rejects_bad_arguments() -> None:
    class Bad:
        @hookimpl
        def eventbus_register_backends(self, register: Any) -> None:
            register("", lambda s: None)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = PluginRegistry(load_entry_points=False, plugins=[Bad()])
    assert "non-empty str name" in (registry.plugins["Bad"].error or "")
    assert any(issubclass(w.category, PluginLoadWarning) for w in caught)


def test_create_bus_without_environment_is_in_memory() -> None:
    bus = create_bus()
    assert isinstance(bus, InMemoryEventBus)
    sub = bus.subscribe()
    bus.publish(make_event(1))
    assert sub.get(timeout=5).request_id == "req-1"
    bus.stop()


def test_one_module_behind_two_entry_points_registers_once() -> None:
    module = types.ModuleType("two_names")
    calls: list[int] = []

    @hookimpl
    def eventbus_register_backends(register: Any) -> None:
        calls.append(1)
        register("alpha", lambda settings: RecordingBus())
        register("beta", lambda settings: RecordingBus())

    module.eventbus_register_backends = eventbus_register_backends  # type: ignore[attr-defined]
    registry = PluginRegistry(load_entry_points=False)
    registry.register_plugin(module, name="alpha")
    second = registry.register_plugin(module, name="beta")
    assert calls == [1]
    assert second.backends == ["alpha", "beta"]
    assert set(registry.backends) == {"alpha", "beta"}
