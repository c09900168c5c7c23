"""A thread started in uWSGI's master before it forks from C is warned of (trial 242).

uWSGI without `--lazy-apps` loads the application in its master and forks the workers from C:
a worker forked while one of the master's threads runs Python code inherits the GIL held by a
thread it does not have, and hangs for good. Started at import (a publish, a subscriber), a
bus's thread could do that; nothing in the process said so. The `uwsgi` module is only
importable inside uWSGI, so a stand-in plays it here.
"""

from __future__ import annotations

import logging
import sys
from types import SimpleNamespace

import pytest

from eventbus_core.batching import _fork
from eventbus_core.testing import make_event
from eventbus_memory import InMemoryEventBus


@pytest.mark.parametrize(
    ("worker", "options", "warned"),
    [
        (0, {}, True),  # the master, no --lazy-apps
        (0, {"lazy-apps": True}, False),
        (0, {"lazy": True}, False),
        (1, {}, False),  # a worker: forked already
    ],
)
def test_a_drainer_thread_in_uwsgis_master_without_lazy_apps_is_warned_of(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    worker: int,
    options: dict[str, bool],
    warned: bool,
) -> None:
    stand_in = SimpleNamespace(worker_id=lambda: worker, opt=options)
    monkeypatch.setitem(sys.modules, "uwsgi", stand_in)
    monkeypatch.setattr(_fork, "_warned_c_fork", 0)
    caplog.set_level(logging.WARNING, logger="eventbus")
    bus = InMemoryEventBus(publish_path="thread")
    try:
        bus.publish(make_event(1))
        assert bus.flush(5)
    finally:
        bus.stop(5)
    said = [r.getMessage() for r in caplog.records if "forks its workers from C" in r.getMessage()]
    assert len(said) == (1 if warned else 0), said
    if warned:
        assert "--lazy-apps" in said[0] and "@postfork" in said[0]


def test_outside_uwsgi_nothing_is_said(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delitem(sys.modules, "uwsgi", raising=False)
    monkeypatch.setattr(_fork, "_warned_c_fork", 0)
    bus = InMemoryEventBus(publish_path="thread")
    bus.stop(5)
    assert "forks its workers from C" not in caplog.text
