"""`BusStats` as users see it."""

from __future__ import annotations

import ast

from eventbus_core import BusStats, SubscriberStats


def test_the_repr_shows_the_backends_figures_under_extra_as_the_constructor_takes_them() -> None:
    # `backend='memory', stopped=True` beside the attributes had users reach for
    # `stats.backend`, an AttributeError; `subscribers=1` read as an int (trial 166).
    stats = BusStats(
        3,
        1,
        lost=2,
        queue_depth=0,
        subscribers=(SubscriberStats("s", 1, 0, 0),),
        extra={"backend": "memory", "lost": 2, "stopped": True},
    )
    assert repr(stats) == (
        "BusStats(published=3, dropped=1, lost=2, queue_depth=0, "
        "subscribers=<1 subscription(s)>, extra={'backend': 'memory', 'stopped': True})"
    )
    shown = ast.literal_eval(
        repr(stats).split("extra=", 1)[1][:-1]
    )  # the extra part is a dict literal
    assert all(not hasattr(stats, name) for name in shown)


def test_a_lane_whose_source_could_not_count_at_close_is_named() -> None:
    # `eventbus dispatch` exits 1 for it: the backend did not answer how many events it left
    # unread, and the exit had said all was well (trial 182).
    from eventbus_core.dispatch._stats import DispatcherStats

    stats = DispatcherStats(
        sinks={},
        read=0,
        acked=0,
        source_dropped=0,
        lanes={"a": {"uncounted_at_close": True}, "b": {"uncounted_at_close": False}, "c": {}},
    )
    assert stats.uncounted == ["a"]
