"""`import eventbus_core` stays cheap: public names load on first use (PEP 562)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import eventbus_core

HEAVY = ("asyncio", "pydantic", "pydantic_settings", "pluggy", "eventbus_core.dispatch._dispatcher")


def imported_after(code: str) -> set[str]:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys\n{code}\nimport json; print(json.dumps(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(json.loads(out))


def test_importing_the_package_loads_nothing_heavy() -> None:
    loaded = imported_after("import eventbus_core")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_an_event_needs_neither_pydantic_nor_asyncio() -> None:
    loaded = imported_after(
        "from eventbus_core import Event\n"
        "Event(request_id='r', method='GET', path='/', status=200, duration=1).to_json()"
    )
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_the_wsgi_middleware_imports_no_event_loop() -> None:
    """middleware.md: the WSGI middleware "imports no framework and no asyncio"."""
    loaded = imported_after("from eventbus_core import EventBusWSGIMiddleware")
    assert "asyncio" not in loaded


def test_every_public_name_resolves() -> None:
    for name in eventbus_core.__all__:
        assert getattr(eventbus_core, name) is not None, name
    assert set(eventbus_core.__all__) <= set(dir(eventbus_core))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        eventbus_core.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
