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
