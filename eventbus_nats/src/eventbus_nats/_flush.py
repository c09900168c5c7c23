"""`flush_within()`: wait a bounded time for what a client sent to reach the server, without
leaving nats-py a cancelled reply-waiter.

nats-py's `flush(timeout)` sends a PING and waits for its PONG with `asyncio.wait_for`, which
cancels the waiting future on time-out but leaves it queued. When a server that was frozen
(SIGSTOP, a hung host) resumes and answers, nats-py (2.16) sets the result of that cancelled
future in its read loop, which fails with `InvalidStateError`: the connection is dropped, with
the pull requests it held, and their deliveries come back only after AckWait. A 12 s freeze
stalled a dispatcher for 42 s (trial 160; compare nats-io/nats.py#624).

So the PING waits here in a task of its own, with a time-out far past any freeze a connection
outlives (the client's pings give it up after 15 s, and reconnects on a new socket); the
caller stops waiting after its own bound, and the task ends when the PONG comes.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

__all__ = ["flush_within"]

_PATIENCE: Final = 120  # seconds the PING's own wait lasts (nats-py wants an int)
_WAITING: set[asyncio.Task[None]] = set()  # held: a task nobody refers to may be collected


async def flush_within(nc: Any, timeout: float) -> bool:
    """True once the server answered within `timeout` seconds, False otherwise (what was sent
    stays queued in the client). Never raises for the connection's trouble.

    A client that is not connected answers False: while nats-py reconnects, its `flush()`
    returns at once, with no round trip (its tasks cancelled), and acknowledgements sent to a
    killed server were taken for confirmed (trial 228)."""
    if not nc.is_connected:
        return False
    task: asyncio.Task[None] = asyncio.ensure_future(nc.flush(_PATIENCE))
    _WAITING.add(task)
    task.add_done_callback(_done)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    answered = bool(done) and not task.cancelled() and task.exception() is None
    return answered and nc.is_connected


def _done(task: asyncio.Task[None]) -> None:
    _WAITING.discard(task)
    with contextlib.suppress(asyncio.CancelledError):
        task.exception()  # retrieved: a closed connection's error is no news here
