"""The plugin registry: hooks, entry points, selection by name and helpful errors."""

from __future__ import annotations

import importlib.metadata as md
import io
import sys
import traceback
import types
import warnings
from typing import Any

import pytest

from eventbus_core import (
    BackendLoadError,
    EventBusSettings,
    MissingDependencyError,
    PluginError,
    PluginLoadWarning,
    PluginRegistry,
    UnknownBackendError,
    UnknownSinkError,
    create_bus,
    get_registry,
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


def test_an_unknown_name_that_no_distribution_can_have_gets_no_pip_example() -> None:
    # `--sink jsonl,` was told "pip install eventbus-jsonl," (trial 134).
    registry = PluginRegistry(load_entry_points=False, plugins=[RecordingPlugin()])
    with pytest.raises(UnknownSinkError) as raised:
        registry.sink("null,")
    message = str(raised.value)
    assert "did you mean 'null'" in message and "pip install" not in message, message
    with pytest.raises(UnknownSinkError, match=r"pip install eventbus-kafka\.v2\)"):
        registry.sink("kafka.v2")


def test_a_misspelt_name_gets_its_guess_and_no_pip_command_for_the_typo() -> None:
    # `LLM_PROXY_EVENT_BUS=memroy` was told "pip install eventbus-memroy": a name anyone could
    # register on PyPI (trial 166).
    registry = PluginRegistry(load_entry_points=False, plugins=[RecordingPlugin()])
    with pytest.raises(UnknownBackendError) as raised:
        registry.backend("recordng")
    message = str(raised.value)
    assert "did you mean 'recording'" in message and "pip install" not in message, message


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
    # The process's registry, which EventBusSettings reads, loaded before the broken entry
    # point appears: run alone, this test had it load (and warn) under the patch.
    get_registry()

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
    with pytest.warns(PluginLoadWarning, match="plugin 'first' had registered that name first"):
        info = registry.register_plugin(second, name="second")
    assert registry.backend("recording").plugin == "first"
    # `eventbus plugins` shows it, and exits 1 for it.
    assert info.problems == [
        "backend 'recording' not registered: plugin 'first' had registered that name first, and "
        "keeps it",
        "sink 'null' not registered: plugin 'first' had registered that name first, and keeps it",
    ]
    assert registry.plugins["first"].problems == []


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


# ------------------------------------------------------------ what a stranger's plugin gets


class _Dist:
    """The distribution of a stand-in entry point."""

    def __init__(self, name: str) -> None:
        self.metadata = {"Name": name}
        self.version = "0.1.0"


class _EntryPoint:
    """An installed entry point of group `eventbus`, standing in for a third-party one."""

    def __init__(self, name: str, dist: str, plugin: object = None, error: str = "") -> None:
        self.name, self.value, self.dist = name, f"{dist.replace('-', '_')}.plugin", _Dist(dist)
        self._plugin, self._error = plugin, error

    def load(self) -> Any:
        if self._error.startswith("missing:"):
            missing = self._error.removeprefix("missing:")
            raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)
        if self._error:
            raise ImportError(self._error)
        return self._plugin


def _with_entry_points(monkeypatch: pytest.MonkeyPatch, *extra: _EntryPoint) -> None:
    real = md.entry_points
    # The stand-ins come first, as an unlucky sys.path would list them.
    monkeypatch.setattr(md, "entry_points", lambda **kwargs: [*extra, *real(**kwargs)])
    # A process-wide registry built meanwhile holds them: the next test must not get it.
    monkeypatch.setattr("eventbus_core._plugins._registry", None)


def _registering(factories: dict[str, Any]) -> Any:
    """A hook implementation that registers `factories` (name -> factory)."""

    @hookimpl
    def hook(register: Any) -> None:
        for name, factory in factories.items():
            register(name, factory)

    return hook


def _plugin(backends: dict[str, Any] | None = None, sinks: dict[str, Any] | None = None) -> Any:
    """A plugin module standing in for a third party's: pluggy finds hooks by attribute name."""
    plugin = types.SimpleNamespace()
    if backends is not None:
        plugin.eventbus_register_backends = _registering(backends)
    if sinks is not None:
        plugin.eventbus_register_sinks = _registering(sinks)
    return plugin


SECRET_KEY = "sk-importsecret1234567890abcd"


def test_a_load_error_never_shows_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    message = f"cannot import, token {SECRET_KEY}, via redis://app:hunter2pass@db:6379"
    _with_entry_points(monkeypatch, _EntryPoint("leaky", "eventbus-leaky", error=message))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = PluginRegistry()
    error = registry.plugins["leaky"].error or ""
    assert error.startswith("ImportError: cannot import, token ")
    with pytest.raises(BackendLoadError) as raised:
        registry.backend("leaky")
    shown = [error, str(raised.value), *(str(w.message) for w in caught)]
    assert all(SECRET_KEY not in text and "hunter2pass" not in text for text in shown), shown


class _FailsHalfway:
    """Registers a backend and a sink, then calls register() with settings that are no model."""

    @hookimpl
    def eventbus_register_sinks(self, register: Any) -> None:
        register("halfway-sink", lambda settings, options: object())

    @hookimpl
    def eventbus_register_backends(self, register: Any) -> None:
        register("halfway-first", lambda settings: RecordingBus(1))
        register("halfway-bad", lambda settings: RecordingBus(1), settings=dict)


class _ExitsInItsHook:
    @hookimpl
    def eventbus_register_backends(self, register: Any) -> None:
        raise SystemExit(3)


def test_a_plugin_hook_that_raises_system_exit_is_skipped_not_the_end_of_the_process() -> None:
    # `eventbus plugins` printed nothing and exited 3, and create_bus() would have ended the
    # application whatever backend it chose (trial 169).
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        registry = PluginRegistry(load_entry_points=False, plugins=[RecordingPlugin()])
        info = registry.register_plugin(_ExitsInItsHook(), name="exits")
    assert (info.error or "").startswith("SystemExit")
    assert "recording" in registry.backends


def test_a_family_backend_typed_right_gets_no_guess_of_itself() -> None:
    # "unknown backend 'nats' (did you mean 'nats'? ...)", the pip command twice (trial 172).
    registry = PluginRegistry(load_entry_points=False, plugins=[RecordingPlugin()])
    with pytest.raises(UnknownBackendError) as raised:
        registry.backend("nats")
    message = str(raised.value)
    assert "did you mean" not in message and message.count("pip install") == 1, message


def _exiting_factory(settings: Any) -> Any:
    raise SystemExit(7)


def test_a_factory_raising_system_exit_is_a_plugin_error() -> None:
    # It escaped create_bus(): `eventbus publish` exited 7 with no message (trial 172).
    registry = PluginRegistry(
        load_entry_points=False, plugins=[_plugin(backends={"exits": _exiting_factory})]
    )
    with pytest.raises(PluginError, match="SystemExit"):
        create_bus(EventBusSettings(backend="exits"), registry=registry)


def _bare_exit_factory(settings: Any) -> Any:
    sys.exit()


def test_a_factory_calling_bare_sys_exit_is_named_without_an_empty_message() -> None:
    # "failed to start: SystemExit: . This is a fault..." (trial 174).
    registry = PluginRegistry(
        load_entry_points=False, plugins=[_plugin(backends={"bare": _bare_exit_factory})]
    )
    with pytest.raises(PluginError) as raised:
        create_bus(EventBusSettings(backend="bare"), registry=registry)
    assert "failed to start: SystemExit. This is a fault" in str(raised.value)


def test_a_typo_of_a_family_backend_not_installed_names_its_distribution() -> None:
    # `nast` was told `pip install eventbus-nast` (trial 169).
    registry = PluginRegistry(load_entry_points=False, plugins=[RecordingPlugin()])
    with pytest.raises(UnknownBackendError) as raised:
        registry.backend("nast")
    message = str(raised.value)
    assert "did you mean 'nats'? it comes with eventbus-nats" in message
    assert "eventbus-nast" not in message


def test_a_plugin_whose_hook_raises_is_skipped_whole() -> None:
    # Its first backend stayed registered and usable, and selecting the one whose register()
    # raised was "unknown ... pip install eventbus-halfway-bad" (trial 166); hooks.md: "the
    # plugin is skipped", and selecting what it provides raises BackendLoadError.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = PluginRegistry(load_entry_points=False)
        info = registry.register_plugin(_FailsHalfway(), name="halfway")
    assert any(issubclass(w.category, PluginLoadWarning) for w in caught)
    assert (info.backends, info.sinks, info.settings) == ([], [], [])
    assert "pydantic-settings model" in (info.error or "")
    assert not {"halfway-first", "halfway-bad"} & set(registry.backends)
    assert "halfway-sink" not in registry.sinks
    for name in ("halfway-first", "halfway-bad"):
        with pytest.raises(BackendLoadError, match="pydantic-settings model") as raised:
            registry.backend(name)
        assert "eventbus-halfway" not in str(raised.value)
    with pytest.raises(UnknownSinkError, match=r"the plugin 'halfway' .* failed to load"):
        registry.sink("halfway-sink")


def test_a_third_party_plugin_never_displaces_a_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    impostor = _plugin(backends={"memory": lambda s: None}, sinks={"jsonl": lambda s, o: None})
    _with_entry_points(monkeypatch, _EntryPoint("aaa-impostor", "eventbus-impostor", impostor))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = PluginRegistry()
    assert registry.backend("memory").plugin == "memory"
    assert registry.sink("jsonl").plugin == "jsonl"
    memory, core = md.version("eventbus-memory"), md.version("eventbus-core")
    problems = [
        f"backend 'memory' not registered: plugin 'memory' (eventbus-memory {memory}) had "
        "registered that name first, and keeps it",
        f"sink 'jsonl' not registered: plugin 'jsonl' (eventbus-core {core}) had registered "
        "that name first, and keeps it",
    ]
    assert registry.plugins["aaa-impostor"].problems == problems
    assert [str(w.message) for w in caught] == [
        f"eventbus plugin 'aaa-impostor': {p}" for p in problems
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the process-wide registry meets the impostor too
        bus = create_bus(EventBusSettings(backend="memory"), registry=registry)
    assert isinstance(bus, InMemoryEventBus)
    bus.stop()


def test_two_distributions_may_use_one_entry_point_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # As the docs' two examples do: a sink and a backend, both `sqlite`.
    sink = _EntryPoint("sqlite", "eventbus-sink-x", _plugin(sinks={"sqlite": lambda s, o: None}))
    backend = _EntryPoint(
        "sqlite", "eventbus-backend-x", _plugin(backends={"sqlite": RecordingBus})
    )
    _with_entry_points(monkeypatch, sink, backend)
    registry = PluginRegistry()
    assert registry.sink("sqlite").plugin == "sqlite (eventbus-sink-x)"
    assert registry.backend("sqlite").plugin == "sqlite"
    assert registry.plugins["sqlite"].distribution == "eventbus-backend-x"


def test_a_sink_whose_plugin_failed_to_load_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    _with_entry_points(monkeypatch, _EntryPoint("kafkaish", "eventbus-kafkaish", error="boom"))
    with pytest.warns(PluginLoadWarning):
        registry = PluginRegistry()
    with pytest.raises(UnknownSinkError) as raised:
        registry.sink("kafkaish")
    text = str(raised.value)
    assert "is installed but failed to load: ImportError: boom" in text
    assert "pip install --force-reinstall --no-deps eventbus-kafkaish" in text
    assert "its authors must fix it" in text


@pytest.mark.parametrize("kind", ["backend", "sink"])
def test_a_plugin_missing_a_dependency_is_told_to_install_it_not_to_reinstall_without(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    # `pip install --force-reinstall --no-deps` was the advice, the one reinstall that cannot
    # bring a dependency back (trial 152).
    failing = _EntryPoint("kafkaish", "eventbus-kafkaish", error="missing:confluent_kafka")
    _with_entry_points(monkeypatch, failing)
    with pytest.warns(PluginLoadWarning):
        registry = PluginRegistry()
    with pytest.raises((BackendLoadError, UnknownSinkError)) as raised:
        registry.backend("kafkaish") if kind == "backend" else registry.sink("kafkaish")
    text = str(raised.value)
    assert "--no-deps" not in text
    assert (
        "It needs the module 'confluent_kafka', which is not installed: install the plugin again "
        "with its dependencies (pip install --force-reinstall eventbus-kafkaish), or the package "
        "that provides 'confluent_kafka'"
    ) in text


def test_a_factory_that_fails_or_builds_no_bus_names_its_plugin() -> None:
    def explodes(settings: EventBusSettings) -> Any:
        password = "hunter2" + "pass"  # not in the source lines a traceback shows
        try:
            # Two arguments: OSError prints its strerror then, not its args (trial 161).
            raise ConnectionError(111, f"connecting to redis://app:{password}@db:6379 failed")
        except OSError as inner:
            err = RuntimeError(f"factory exploded with {SECRET_KEY}")
            err.add_note(f"it read redis://app:{password}@db:6379")
            raise err from inner

    plugin = _plugin(backends={"explodes": explodes, "nothing": lambda s: None})
    registry = PluginRegistry(load_entry_points=False)
    registry.register_plugin(plugin, name="trialbus")
    with pytest.raises(PluginError, match="backend 'explodes' of plugin 'trialbus' failed") as e:
        create_bus(EventBusSettings(backend="explodes"), registry=registry)
    assert SECRET_KEY not in str(e.value) and isinstance(e.value.__cause__, RuntimeError)
    # Nor in the exception chained under it, which a traceback prints too (trial 157).
    printed = "".join(traceback.format_exception(e.value))
    assert SECRET_KEY not in printed and "hunter2pass" not in printed, printed
    with pytest.raises(PluginError, match=r"returned NoneType, not an event bus \(no publish"):
        create_bus(EventBusSettings(backend="nothing"), registry=registry)


class _SyncSink:
    name = "syncsink"

    def send(self, batch: Any) -> None:
        pass

    async def close(self) -> None:
        pass


def test_a_sink_factory_must_build_a_sink_with_async_methods() -> None:
    from eventbus_core import Dispatcher
    from eventbus_core.dispatch._setup import build_sinks

    def fails(settings: EventBusSettings, options: Any) -> Any:
        raise RuntimeError("no")

    plugin = _plugin(
        sinks={"obj": lambda s, o: object(), "sync": lambda s, o: _SyncSink(), "f": fails}
    )
    registry = PluginRegistry(load_entry_points=False)
    registry.register_plugin(plugin, name="sinks")
    settings = EventBusSettings()
    with pytest.raises(PluginError, match=r"sink 'obj' of plugin 'sinks'.*object has no `name`"):
        build_sinks(settings, [("obj", {})], registry=registry)
    with pytest.raises(PluginError, match=r"_SyncSink.send\(\) must be `async def`"):
        build_sinks(settings, [("sync", {})], registry=registry)
    with pytest.raises(PluginError, match="sink 'f' of plugin 'sinks' failed to start: Runtime"):
        build_sinks(settings, [("f", {})], registry=registry)
    # A dispatcher built by hand refuses it too, before any event reaches it.
    with pytest.raises(TypeError, match=r"_SyncSink.send\(\) must be `async def`"):
        Dispatcher(InMemoryEventBus(), [_SyncSink()])


def test_hooks_pluggy_would_not_call_are_problems() -> None:
    class Misspelt:
        @hookimpl
        def eventbus_register_sink(self, register: Any) -> None:
            register("never", lambda s, o: None)

    class Unmarked:
        def eventbus_register_sinks(self, register: Any) -> None:
            register("never", lambda s, o: None)

        def eventbus_helper(self) -> None:
            """A function of its own, not a hook: no problem."""

    registry = PluginRegistry(load_entry_points=False)
    misspelt = registry.register_plugin(Misspelt(), name="misspelt")
    unmarked = registry.register_plugin(Unmarked(), name="unmarked")
    assert misspelt.problems[0].startswith(
        "eventbus_register_sink is not an eventbus hook (did you mean eventbus_register_sinks?)"
    )
    assert unmarked.problems[0] == (
        "eventbus_register_sinks is not marked with @eventbus_core.hookimpl, so it is never called"
    )
    assert len(misspelt.problems) == len(unmarked.problems) == 1
    empty = registry.register_plugin(types.SimpleNamespace(), name="empty")
    assert len(empty.problems) == 1
    assert empty.problems[0].startswith("registers no backend and no sink")
    assert registry.register_plugin(RecordingPlugin(), name="fine").problems == []


def test_cli_shows_problems_and_plugin_faults_plainly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from eventbus_core._plugins import reset_registry
    from eventbus_core.cli import main

    plugin = _plugin(backends={"memory": RecordingBus, "nothing": lambda s: None})
    _with_entry_points(monkeypatch, _EntryPoint("trialbus", "eventbus-trialbus", plugin))
    reset_registry()
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    try:
        assert main(["plugins"]) == 1
        out = capsys.readouterr().out
        row = next(line for line in out.splitlines() if line.startswith("trialbus "))
        assert "PROBLEM backend 'memory' not registered: plugin 'memory' (eventbus-memory" in row
        assert main(["publish", "--backend", "nothing"]) == 1
        err = capsys.readouterr().err
        assert "error: backend 'nothing' of plugin 'trialbus' (eventbus-trialbus 0.1.0)" in err
        assert "internal error" not in err
    finally:
        reset_registry()


_HANGING_BACKEND = """
import importlib.metadata as md, sys, threading, types
from eventbus_core import hookimpl
from eventbus_core.cli import main
from eventbus_core.testing import RecordingBus

class HangingBus(RecordingBus):
    def stop(self, timeout=None):
        # A plugin's bug: a non-daemon thread that never ends, and a stop() that never returns.
        threading.Thread(target=threading.Event().wait, name="plugin-worker", daemon=False).start()
        threading.Event().wait()

plugin = types.SimpleNamespace()

@hookimpl
def eventbus_register_backends(register):
    register("hanging", lambda settings: HangingBus())

plugin.eventbus_register_backends = eventbus_register_backends

class EntryPoint:
    name, value, dist = "hanging", "hanging", None
    def load(self):
        return plugin

real = md.entry_points
md.entry_points = lambda **kw: [*real(**kw), EntryPoint()]
sys.argv = ["eventbus", "publish", "--backend", "hanging"]
sys.exit(main())
"""


def test_a_backend_whose_stop_never_returns_does_not_hold_the_command(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys
    import time

    script = tmp_path / "hanging.py"
    script.write_text(_HANGING_BACKEND)
    env = {**os.environ, "EVENTBUS_STOP_TIMEOUT": "0.5"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(script)],
        check=False,
        input='{"RequestID": "r1", "Status": 200}\n',
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    took = time.monotonic() - started
    # stop() is left after EVENTBUS_STOP_TIMEOUT + 5 s, the plugin's thread 10 s later.
    assert done.returncode == 1, done.stderr
    assert took < 30, took
    assert "backend 'hanging': stop() did not return within 5.5 s" in done.stderr
    assert "thread(s) plugin-worker still running 10 s after the command ended" in done.stderr


def test_an_empty_name_is_said_to_be_empty() -> None:
    registry = PluginRegistry(load_entry_points=False, plugins=[RecordingPlugin()])
    with pytest.raises(
        UnknownSinkError, match=r"^an empty sink name \(--sink\); installed sinks: null$"
    ):
        registry.sink(" ", given_as="--sink")
    with pytest.raises(UnknownBackendError, match=r"^an empty backend name"):
        registry.backend("")


def test_a_misspelt_name_gets_a_guess() -> None:
    registry = PluginRegistry()
    with pytest.raises(
        UnknownBackendError, match=r"'redis-stream' \(X\) \(did you mean 'redis-streams'\?\)"
    ):
        registry.backend("redis-stream", given_as="X")
    with pytest.raises(UnknownSinkError, match=r"\(did you mean 'jsonl'\?\)"):
        registry.sink("jsnl")


class _MisspeltSink:
    @hookimpl
    def eventbus_register_sink(self, register: Any) -> None:
        register("misspelt", lambda s, o: None)


class _MisspeltBackend:
    @hookimpl
    def eventbus_register_backend(self, register: Any) -> None:
        register("misspelt", RecordingBus)


@pytest.mark.parametrize(
    ("kind", "plugin", "error"),
    [("sink", _MisspeltSink, UnknownSinkError), ("backend", _MisspeltBackend, UnknownBackendError)],
)
def test_a_name_whose_plugin_has_a_problem_says_so(
    monkeypatch: pytest.MonkeyPatch, kind: str, plugin: type, error: type[Exception]
) -> None:
    _with_entry_points(monkeypatch, _EntryPoint("misspelt", "eventbus-misspelt", plugin()))
    registry = PluginRegistry()
    with pytest.raises(error) as raised:
        getattr(registry, kind)("misspelt")
    text = str(raised.value)
    assert "the plugin 'misspelt' (eventbus-misspelt) is installed but registered no such" in text
    assert f"did you mean eventbus_register_{kind}s?" in text
    assert "pip install" not in text


def test_ctrl_c_while_waiting_for_a_plugins_threads_exits_130(tmp_path: Any) -> None:
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    script = tmp_path / "hanging.py"
    script.write_text(_HANGING_BACKEND)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "EVENTBUS_STOP_TIMEOUT": "0.5"},
    )
    assert proc.stdin is not None
    proc.stdin.write('{"RequestID": "r1", "Status": 200}\n')
    proc.stdin.close()
    assert proc.stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True)
    reader.start()
    # stop() is given up after 5.5 s, then the summary: waiting for the plugin's thread now.
    # Waited for by its output, not a fixed sleep: a loaded machine started the child late,
    # and the signal came before the wait it is about.
    deadline = time.monotonic() + 60
    while not any("accepted" in line for line in lines) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    proc.wait(timeout=30)
    reader.join(10)
    proc.stderr.close()
    err = "".join(lines)
    # It was 0: an interrupted join() marks the running thread as ended.
    assert proc.returncode == 130, err
    assert time.monotonic() - started < 3


def test_the_backend_flag_help_lists_the_installed_backends(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # It said "(redis, redis-streams, ...)" in an installation with neither (an outside trial):
    # core names no backend; the registry does.
    from eventbus_core import get_registry
    from eventbus_core.cli import main

    with pytest.raises(SystemExit):
        main(["publish", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"(installed: {', '.join(sorted(get_registry().backends))})" in out


class _PlainBus:
    """A plugin's bus with the four methods of `EventBus`, and `flush()`, but not built on
    `BaseEventBus`."""

    def __init__(self) -> None:
        self.inner = RecordingBus(100)
        self.stopped = 0

    def publish(self, event: Any) -> None:
        self.inner.publish(event)

    def subscribe(self, name: str | None = None) -> Any:
        return self.inner.subscribe(name)

    def stop(self, timeout: float | None = None) -> None:
        self.stopped += 1
        self.inner.stop(timeout)

    def stats(self) -> Any:
        return self.inner.stats()

    def flush(self, timeout: float | None = None) -> bool:
        return True


def test_every_bus_create_bus_returns_is_a_context_manager_with_astop() -> None:
    # `with create_bus() as bus:` (the quick start's) failed for a plugin's bus not built on
    # BaseEventBus, and type checking failed it for every bus (trial 129).
    import asyncio

    from eventbus_core import BaseEventBus
    from eventbus_core.capabilities import Flushable, capability

    made: list[_PlainBus] = []

    def build(settings: EventBusSettings) -> _PlainBus:
        made.append(_PlainBus())
        return made[-1]

    registry = PluginRegistry(load_entry_points=False)
    registry.register_plugin(_plugin(backends={"plain": build}), name="plainbus")
    settings = EventBusSettings(backend="plain")
    with create_bus(settings, registry=registry) as bus:
        assert isinstance(bus, BaseEventBus)
        sub = bus.subscribe()
        bus.publish(make_event(1))
        flushable = capability(bus, Flushable)  # what the plugin's bus offers, through it
        assert flushable is not None and flushable.flush(1.0) is True
        # Its own members too, as before it came wrapped (trial 130).
        assert bus.flush(1.0) is True and isinstance(bus, Flushable)  # type: ignore[attr-defined]
        assert bus.inner is made[0].inner  # type: ignore[attr-defined]
        with pytest.raises(TypeError, match=r"stop\(\) timeout must be a number"):
            bus.stop("1")  # type: ignore[arg-type]
    assert made[0].stopped == 1 and [e.request_id for e in sub] == ["req-1"]

    async def main() -> None:
        async with create_bus(settings, registry=registry) as bus:
            bus.publish(make_event(2))
        await create_bus(settings, registry=registry).astop()

    asyncio.run(main())
    assert [bus.stopped for bus in made] == [1, 1, 1]
    assert isinstance(create_bus(EventBusSettings(backend="memory")), InMemoryEventBus)


_TYPED_USE = """
import asyncio

from eventbus_core import EventBusSettings, create_bus
from eventbus_core.capabilities import Flushable, capability
from eventbus_core.testing import make_event

with create_bus(EventBusSettings(backend="memory")) as bus:
    bus.publish(make_event(1))
    flushable = capability(bus, Flushable)
    if flushable is not None:
        delivered: bool = flushable.flush(5.0)


async def main() -> None:
    async with create_bus(EventBusSettings(backend="memory")) as bus:
        bus.publish(make_event(2))
    await create_bus(EventBusSettings(backend="memory")).astop()


asyncio.run(main())
"""


def test_the_documented_uses_of_create_bus_pass_mypy_strict(tmp_path: Any) -> None:
    # They ran, but mypy --strict refused them: "EventBus" has no attribute "__enter__" (trial
    # 129), and the backend guide says users run mypy on code that calls eventbus.
    import subprocess
    import sys

    script = tmp_path / "uses.py"
    script.write_text(_TYPED_USE)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(script)],
        cwd=tmp_path,  # a user's project: not this repository's mypy settings
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


class _OwnManagers(_PlainBus):
    """A plugin's bus (not built on `BaseEventBus`) with a context manager and astop() of its
    own."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __enter__(self) -> _OwnManagers:
        self.calls.append("enter")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.calls.append("exit")
        self.stop()

    async def astop(self, timeout: float | None = None) -> None:
        self.calls.append("astop")
        self.stop(timeout)


def test_a_wrapped_plugin_bus_keeps_its_own_context_manager_and_astop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # ManagedBus used its own in their place (trial 132); RedactingBus let stop("1") through.
    import asyncio

    made: list[_OwnManagers] = []

    def build(settings: EventBusSettings) -> _OwnManagers:
        made.append(_OwnManagers())
        return made[-1]

    registry = PluginRegistry(load_entry_points=False)
    registry.register_plugin(_plugin(backends={"own": build}), name="ownbus")
    with create_bus(EventBusSettings(backend="own"), registry=registry):
        pass
    asyncio.run(create_bus(EventBusSettings(backend="own"), registry=registry).astop())
    assert [bus.calls for bus in made] == [["enter", "exit"], ["astop"]]
    monkeypatch.setenv("EVENTBUS_REDACT_ON_PUBLISH", "true")
    redacting = create_bus(EventBusSettings(backend="own"), registry=registry)
    with pytest.raises(TypeError, match=r"stop\(\) timeout must be a number"):
        redacting.stop("1")  # type: ignore[arg-type]
    redacting.stop()


@pytest.mark.parametrize(
    ("missing", "advice"),
    [
        # `redis.asyncio` missing on an old redis-py is no package to install (review 158).
        ("pytest.t158", "which the installed 'pytest' lacks: upgrade the package that provides"),
        # "upgrade the package that provides 'json' (pip install --upgrade ...)" (trial 159).
        ("json.t159", "this Python's standard library lacks"),
    ],
)
def test_a_missing_part_of_an_installed_package_asks_for_no_install(
    monkeypatch: pytest.MonkeyPatch, missing: str, advice: str
) -> None:
    def needs_a_newer_one(*args: Any) -> Any:
        raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)

    plugin = _plugin(backends={"older": needs_a_newer_one})
    _with_entry_points(monkeypatch, _EntryPoint("older", "eventbus-older", plugin))
    with pytest.raises(BackendLoadError) as raised:
        create_bus(EventBusSettings(backend="older"), registry=PluginRegistry())
    assert advice in str(raised.value)
    assert "pip install --force-reinstall" not in str(raised.value)


@pytest.mark.parametrize("kind", ["backend", "sink"])
def test_a_factory_missing_a_dependency_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    # The backend guide has factories import their driver when called: a missing one failed
    # there with no pip command (trial 155).
    def needs_a_driver(*args: Any) -> Any:
        raise ModuleNotFoundError("No module named 't155_driver'", name="t155_driver")

    factories = {"driven": needs_a_driver}
    plugin = _plugin(**({"backends": factories} if kind == "backend" else {"sinks": factories}))
    _with_entry_points(monkeypatch, _EntryPoint("driven", "eventbus-driven", plugin))
    registry = PluginRegistry()
    advice = (
        "It needs the module 't155_driver', which is not installed: install the plugin again "
        "with its dependencies (pip install --force-reinstall eventbus-driven)"
    )
    if kind == "backend":
        with pytest.raises(BackendLoadError, match="could not import what it needs") as raised:
            create_bus(EventBusSettings(backend="driven"), registry=registry)
    else:
        with pytest.raises(PluginError, match="failed to start") as raised:
            registry.build(registry.sink("driven"), "sink", EventBusSettings(), {})
    assert advice in str(raised.value)


def test_chained_exceptions_are_masked_whatever_their_shape() -> None:
    # An OSError prints its strerror, not its args; a group prints its members (trial 162).
    from eventbus_core._plugins import _scrub_args

    password = "hunter2" + "pass"
    oserror = ConnectionError("cannot open", {"password": password})
    inner = FileNotFoundError(2, f"redis://u:{password}@h", f"redis://u:{password}@h/x")
    group = ExceptionGroup("both", [ValueError(f"redis://u:{password}@h"), inner])
    for exc in (oserror, group):
        try:
            raise exc
        except BaseException as caught:
            printed = "".join(traceback.format_exception(_scrub_args(caught)))
        assert password not in printed, printed


def test_a_plugin_s_name_typed_as_a_backend_says_what_it_registers_instead() -> None:
    # Entry name `mism`, backend `mismatched-name`: "pip install eventbus-mism" for a plugin
    # that `eventbus plugins` showed as installed and ok (trial 176).
    registry = PluginRegistry(load_entry_points=False)
    registry.register_plugin(
        _plugin(backends={"mismatched-name": lambda settings: RecordingBus(1)}), name="mism"
    )
    with pytest.raises(UnknownBackendError) as raised:
        registry.backend("mism", given_as="--backend")
    message = str(raised.value)
    assert "pip install" not in message, message
    assert "the plugin 'mism'" in message and "registers backend(s) 'mismatched-name'" in message
    assert "(--backend)" in message


@pytest.mark.parametrize(
    ("missing", "advice"),
    [
        # `pip install --force-reinstall eventbus-fancy` cannot install an extra: `eventbus
        # plugins` said the right command and `eventbus dispatch` this one (trial 255).
        (
            "t255_alchemy",
            "It needs the module 't255_alchemy', which is not installed: the plugin's extra "
            "'fancy' brings it (pip install \"eventbus-fancy[fancy]\")",
        ),
        # Another module than the extra's package: the extra's command alone may not bring it
        # (trial 257), yet a package named otherwise than its module (PyYAML, `yaml`) is the
        # extra's (trial 260): both are said.
        (
            "t257_other",
            "It needs the module 't257_other', which is not installed. Its entry point's "
            "extra lacks packages too ('fancy' lacks t255-alchemy: pip install "
            '"eventbus-fancy[fancy]"): install it, or the package that provides '
            "'t257_other'",
        ),
    ],
)
def test_a_sink_missing_a_module_its_entry_points_extra_may_bring_is_told_that_extra(
    monkeypatch: pytest.MonkeyPatch, missing: str, advice: str
) -> None:
    def needs_a_module(*args: Any) -> Any:
        raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)

    entry = _EntryPoint("fancy", "eventbus-fancy", _plugin(sinks={"fancy": needs_a_module}))
    entry.value += " [fancy]"  # the entry point names the extra
    _with_entry_points(monkeypatch, entry)
    real = md.distribution

    def distribution(name: str) -> Any:
        if name == "eventbus-fancy":
            return types.SimpleNamespace(requires=['t255-alchemy>=2; extra == "fancy"'])
        return real(name)

    monkeypatch.setattr(md, "distribution", distribution)
    registry = PluginRegistry()
    with pytest.raises(PluginError, match="failed to start") as raised:
        registry.build(registry.sink("fancy"), "sink", EventBusSettings(), {})
    assert advice in str(raised.value)
    assert "force-reinstall" not in str(raised.value)
    # An installation problem: `eventbus dispatch` exits 2 with it (1 before, trial 263).
    assert isinstance(raised.value, MissingDependencyError)


def test_two_sinks_that_name_themselves_alike_are_a_settings_error() -> None:
    # "internal error: ValueError: sink names must be unique" and a traceback (trial 260).
    from eventbus_core import SettingsError
    from eventbus_core.dispatch._setup import build_sinks

    class Named:
        def __init__(self, name: str) -> None:
            self.name = name

        async def send(self, batch: Any) -> None:
            pass

        async def close(self) -> None:
            pass

    def named(name: str) -> Any:
        return lambda settings, options: Named(name)

    plugin = _plugin(sinks={"first": named("same"), "second": named("same")})
    registry = PluginRegistry(load_entry_points=False)
    registry.register_plugin(plugin, name="sinks")
    said = "sinks 'first' and 'second' .* both name themselves 'same'"
    with pytest.raises(SettingsError, match=said):
        build_sinks(EventBusSettings(), [("first", {}), ("second", {})], registry=registry)
