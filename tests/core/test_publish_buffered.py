"""`eventbus publish` paces itself by the bus's own buffer (`Buffered`), not only by
OBSERVABILITY_BUFFER_SIZE: a plugin may size its buffer from a setting of its own, as the
backend guide's `queue` backend does (`QUEUE_BUS_DEPTH`)."""

from __future__ import annotations

import io
import json
import time
import types
from typing import Any

import pytest

from eventbus_core import _plugins as plugins_module
from eventbus_core import hookimpl
from eventbus_core._plugins import PluginRegistry
from eventbus_core.capabilities import Buffered, capability
from eventbus_core.cli import main
from tests.core.test_contract_suite import guide_queue_bus


def _guide_queue_bus_class() -> Any:
    module = types.ModuleType("guide_queue_bus")
    exec(compile(guide_queue_bus(), "queue_bus.py", "exec"), module.__dict__)
    return module.QueueBus


class _SmallBufferPlugin:
    """The guide's QueueBus with a buffer of 4 (its own setting's, say) and a slow write."""

    def __init__(self) -> None:
        queue_bus = _guide_queue_bus_class()

        class SlowQueueBus(queue_bus):  # type: ignore[misc, valid-type]
            def _write(self, batch: list[Any]) -> None:
                time.sleep(0.001)  # a network round trip

        self.cls = SlowQueueBus
        self.built: list[Any] = []

    @hookimpl
    def eventbus_register_backends(self, register: Any) -> None:
        register("smallbuf", self.build)

    def build(self, settings: Any) -> Any:
        bus = self.cls(buffer_size=4)
        self.built.append(bus)
        return bus


def test_publish_waits_every_half_of_the_bus_s_own_smaller_buffer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # OBSERVABILITY_BUFFER_SIZE (1000) paced it: a wait every 500 events, into a buffer of 100,
    # and 800 of 1000 lines were dropped (trial 176).
    plugin = _SmallBufferPlugin()
    monkeypatch.setattr(plugins_module, "_registry", PluginRegistry(plugins=[plugin]))
    lines = "".join(
        json.dumps({"RequestID": f"r{i}", "Method": "GET", "Path": "/", "Status": 200}) + "\n"
        for i in range(300)
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    code = main(["publish", "--backend", "smallbuf"])
    err = capsys.readouterr().err
    (bus,) = plugin.built
    assert capability(bus, Buffered) is bus
    stats = bus.stats()
    assert (stats.published, stats.dropped) == (300, 0), err
    assert code == 0, err


@pytest.mark.parametrize("size", [10.7, True, 0])
def test_a_buffer_size_that_is_no_positive_whole_number_is_said_not_taken_silently(
    size: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The old pacing came back without a word, most of a file dropped (trial 180).
    plugin = _SmallBufferPlugin()
    build = plugin.build

    def odd(settings: Any) -> Any:
        bus = build(settings)
        bus.buffer_size = size
        return bus

    plugin.build = odd  # type: ignore[method-assign]
    monkeypatch.setattr(plugins_module, "_registry", PluginRegistry(plugins=[plugin]))
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    main(["publish", "--backend", "smallbuf"])
    err = capsys.readouterr().err
    assert f"the backend's buffer_size is {size!r}, not a whole number" in err, err


def test_the_pacing_takes_the_smaller_buffer_and_survives_a_raising_property(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A large buffer of the plugin's own could take longer than EVENTBUS_STOP_TIMEOUT to
    # flush half of, ending the pacing; a property that raised escaped (review 181).
    from eventbus_core import EventBusSettings
    from eventbus_core.cli._publish_cmd import _buffer_size

    settings = EventBusSettings(buffer_size=1000)

    class Sized:
        def __init__(self, size: int) -> None:
            self.buffer_size = size

    class Raising:
        @property
        def buffer_size(self) -> int:
            raise RuntimeError("broken")

    assert _buffer_size(object(), settings) == 1000
    assert _buffer_size(Sized(4), settings) == 4
    assert _buffer_size(Sized(10**9), settings) == 1000
    assert _buffer_size(Raising(), settings) == 1000
    assert "RuntimeError raised" in capsys.readouterr().err
