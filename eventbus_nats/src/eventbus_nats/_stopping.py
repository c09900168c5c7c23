"""The end of fan-out at `stop()`: each subscription reads up to the newest event its bus
stored, then ends; what it was not handed is counted for it, with the true reason."""

from __future__ import annotations

import asyncio
import time
from typing import Final

from eventbus_core import get_logger
from eventbus_nats._fanout import Follower
from eventbus_nats._link import Link

__all__ = ["drain_followers"]

log = get_logger("eventbus.nats")

_LOOK_EVERY: Final = 0.25  # seconds between two looks at where the stream starts


async def _stream_bounds(link: Link, wait: float) -> tuple[int, int] | None:
    """The stream's first sequence (last + 1 when empty) and last one, or None if NATS does not
    say in time."""
    try:
        info = await asyncio.wait_for(link.stream_info(), max(0.0, wait))
    except Exception:  # frozen, disconnected, gone: the deadline decides, as before
        return None
    return int(info.state.first_seq), int(info.state.last_seq)


async def drain_followers(
    followers: list[Follower], target: int, deadline: float, link: Link | None = None
) -> None:
    """Deliver up to stream sequence `target` (the newest event this bus stored) to every
    subscription until `deadline`, then end them all; what a subscription could not be handed
    by then is counted in its `dropped` (its `unhanded` figure too) and logged.

    With `link`, where the stream starts is asked now and then: what its limits (or a purge)
    removed before a subscription read it is counted as missed and not waited for (nothing
    would ever arrive: the wait took the whole deadline, and was blamed for the loss). Where
    it ends is asked too, the first time: in a stream of the bus's subject alone, what other
    processes stored before the stop is delivered as well, or counted (trial 213: 2,000 of
    another process's events went uncounted); if NATS does not say, that is said, and each
    subscription left behind is marked `uncounted_at_close`.
    """
    next_look = 0.0
    # Asked once, and not waited for where no subscription is open (a bus that only
    # publishes: a frozen server held every stop its whole timeout, review 217).
    told_end = (
        link is None
        or not link.subject_alone
        or not any(not f.sub.finished and f.last_seq is not None for f in followers)
    )
    untold = False
    while True:
        now = time.monotonic()
        # Each looked at (a list, not all()'s first False): a full buffer's clock starts for
        # every subscription at once (trial 219: 0.25 s each, one after another).
        done = [f.sub.finished or f.behind(target) == 0 or f.stuck(now) for f in followers]
        if now >= deadline or (told_end and all(done)):
            break
        if link is not None and now >= next_look:
            next_look = now + _LOOK_EVERY
            bounds = await _stream_bounds(link, min(_LOOK_EVERY, deadline - now))
            if bounds is None:
                # NATS did not say: not asked again for the end (what other processes stored
                # is then counted nowhere, and said so), as the deadline decides the rest.
                untold, told_end = untold or not told_end, True
            else:
                first, last = bounds
                if not told_end:
                    target, told_end = max(target or 0, last), True
                for follower in followers:
                    follower.skip_removed(first)
            continue
        await asyncio.sleep(0.01)
    if (untold or not told_end) and followers:
        _say_untold(followers)
    for follower in followers:
        sub = follower.sub
        missed = follower.behind(target)
        if missed and not sub.finished and not follower.ended:
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


def _say_untold(followers: list[Follower]) -> None:
    """NATS did not say where the stream ends before the deadline: what other processes
    stored past each open subscription is counted nowhere; mark and say so."""
    names = []
    for follower in followers:
        if not follower.sub.finished and follower.last_seq is not None and not follower.ended:
            follower.sub.uncounted_at_close = True
            names.append(str(follower.sub.name))
    if names:
        log.warning(
            "eventbus nats: stop() ended subscription(s) %s without NATS saying, in time, how "
            "far the stream goes: any events other processes stored past them are counted "
            "nowhere (they stay in the stream, for eventbus replay)",
            ", ".join(names),
        )
