"""The end of fan-out at `stop()`: each subscription reads up to the newest event its bus
stored, then ends; what it was not handed is counted for it, with the true reason."""

from __future__ import annotations

import asyncio
import time

from eventbus_core import get_logger
from eventbus_nats._fanout import Follower

__all__ = ["drain_followers"]

log = get_logger("eventbus.nats")


async def drain_followers(followers: list[Follower], target: int, deadline: float) -> None:
    """Deliver up to stream sequence `target` (the newest event this bus stored) to every
    subscription until `deadline`, then end them all; what a subscription could not be handed
    by then is counted in its `dropped` (its `unhanded` figure too) and logged."""
    while True:
        now = time.monotonic()
        if now >= deadline or all(
            f.sub.finished or f.behind(target) == 0 or f.stuck(now) for f in followers
        ):
            break
        await asyncio.sleep(0.01)
    for follower in followers:
        sub = follower.sub
        missed = follower.behind(target)
        if missed and not sub.finished:
            sub.unhanded += missed
            sub.count_not_handed(missed)
            why = "its buffer stayed full" if sub.space() <= 0 else "stop's deadline passed"
            log.warning(
                "eventbus nats subscription %s ended with %d event(s) stored in the stream but "
                "not handed to it (%s); counted in its dropped",
                sub.name,
                missed,
                why,
            )
        sub.finish()
    remaining = deadline - time.monotonic()
    await asyncio.gather(*(f.close(min(0.5, remaining)) for f in followers), return_exceptions=True)
