"""`LineBudget`: a line per entry that can come by the thousand is logged as examples."""

from __future__ import annotations

import logging

import pytest

from eventbus_core import LineBudget, get_logger


def test_a_burst_is_said_then_quiet_until_the_window_ends(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One WARNING per dead letter: 2,647 lines in 8 s (trial 226).
    import eventbus_core._log as log_module

    now = [100.0]
    monkeypatch.setattr(log_module.time, "monotonic", lambda: now[0])
    caplog.set_level(logging.WARNING, logger="eventbus")
    log = get_logger("eventbus.test")
    budget = LineBudget(burst=3, every=30.0)
    for i in range(50):
        budget.warning(log, "the figure dead_lettered", "entry %d dead-lettered", i)
    said = [r.getMessage() for r in caplog.records]
    assert said[:2] == ["entry 0 dead-lettered", "entry 1 dead-lettered"]
    assert len(said) == 3 and said[2].startswith("entry 2 dead-lettered (3 such lines in 30 s")
    assert "the figure dead_lettered counts each" in said[2]
    now[0] += 30.0  # a new window: said again
    budget.warning(log, "the figure dead_lettered", "entry %d dead-lettered", 50)
    assert caplog.records[-1].getMessage() == "entry 50 dead-lettered"
