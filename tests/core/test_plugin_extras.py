"""`missing_extras`: the extras a plugin's entry point names, checked against what is installed."""

from __future__ import annotations

import importlib.metadata as md
from types import SimpleNamespace

import pytest

from eventbus_core import _plugin_extras


def _installed_only(requires: list[str], present: set[str]):  # type: ignore[no-untyped-def]
    def distribution(name: str) -> object:
        if name == "acme-sinks":
            return SimpleNamespace(requires=requires)
        if name in present:
            return SimpleNamespace(requires=[])
        raise md.PackageNotFoundError(name)

    return distribution


def test_names_each_missing_package_of_an_extra_with_its_pip_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    requires = [
        "pydantic>=2",
        'grpcio>=1.6; extra == "Fast_Wire"',
        "protobuf ; extra=='fast-wire'",
        'uvloop; extra == "fast-wire" and sys_platform != "win32"',  # may not apply: left out
        'orjson; extra == "other"',
    ]
    fake = _installed_only(requires, present={"protobuf"})
    monkeypatch.setattr(_plugin_extras.md, "distribution", fake)
    assert _plugin_extras.missing_extras("acme-sinks", ["fast-wire"]) == [
        'needs grpcio to build: pip install "acme-sinks[fast-wire]"'
    ]
    assert _plugin_extras.missing_extras("acme-sinks", ["other", "fast-wire"]) == [
        'needs orjson to build: pip install "acme-sinks[other]"',
        'needs grpcio to build: pip install "acme-sinks[fast-wire]"',
    ]


def test_says_nothing_when_it_cannot_tell_or_nothing_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = _installed_only(['grpcio; extra == "x"'], present={"grpcio"})
    monkeypatch.setattr(_plugin_extras.md, "distribution", fake)
    assert _plugin_extras.missing_extras("acme-sinks", ["x"]) == []
    assert _plugin_extras.missing_extras(None, ["x"]) == []  # registered without a distribution
    assert _plugin_extras.missing_extras("not-installed", ["x"]) == []
    assert _plugin_extras.missing_extras("acme-sinks", []) == []


def test_the_status_cell_says_what_is_missing_not_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    # "ok; needs ..." read as usable to a script checking the column (trial 199).
    from eventbus_core._plugins import PluginInfo
    from eventbus_core.cli import _plugins_cmd

    fake = _installed_only(['grpcio; extra == "fast"'], present=set())
    monkeypatch.setattr(_plugin_extras.md, "distribution", fake)
    needing = PluginInfo("acme", "acme.sink", distribution="acme-sinks", extras=("fast",))
    assert _plugins_cmd._status(needing) == (
        'needs grpcio to build: pip install "acme-sinks[fast]"'
    )
    assert _plugins_cmd._status(PluginInfo("acme", "acme.sink", distribution="acme-sinks")) == "ok"
    broken = PluginInfo("acme", "acme.sink", error="ImportError: no", extras=("fast",))
    assert _plugins_cmd._status(broken) == "ERROR ImportError: no"
