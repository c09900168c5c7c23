"""The batching core shared by backends: a bounded buffer, its accounting, and who drains it.

A backend's `publish()` appends to a `Batcher`; the batcher wakes a drainer only when the
drainer sleeps or the buffer passes half full, and the drainer runs the backend's cycle
(`BatchClient.cycle()`: take, hand on, settle). Two drivers drain:

- a thread (`ThreadDriver`), for sync apps: WSGI, scripts, threads;
- the publishing event loop (`LoopDriver`): when the first wake comes from a running loop, a
  loop timer drains, so a busy asyncio server never hands the GIL to a background thread.

`EVENTBUS_PUBLISH_PATH` (`Batcher(path=...)`) chooses: `auto` (default), `thread` or `asyncio`.
The guarantees hold on both: `publish()` never blocks or raises, the buffer is bounded,
`publish() calls == refused + taken + buffered` and every taken event is settled once
(delivered, lost, or the parent's after a fork), `flush()` and `close()` are bounded, forks get
a fresh drainer (also where a server forks without Python's fork hooks: `at_fork`,
`check_fork`), and a loop that goes away hands its leftovers to a thread.

See docs/plugins/writing-a-backend.md, "Batching".
"""

from eventbus_core.batching._batcher import (
    PUBLISH_PATHS,
    BatchClient,
    Batcher,
    ExitDelivery,
    PublishPath,
    ReportsDrops,
    deliver_at_exit,
    flush_before_exit,
)
from eventbus_core.batching._drops import DropReport
from eventbus_core.batching._fork import (
    at_fork,
    check_fork,
    check_fork_when_refusing,
    fork_announced,
    start_after_fork_in_child,
    warn_of_thread_before_c_fork,
)
from eventbus_core.batching._late import LateRefusals
from eventbus_core.batching._loop import LoopDriver
from eventbus_core.batching._not_event import report_not_an_event
from eventbus_core.batching._said_every import SaidEvery
from eventbus_core.batching._thread import DEEP_SLEEP_AFTER, ThreadDriver

__all__ = [
    "DEEP_SLEEP_AFTER",
    "PUBLISH_PATHS",
    "BatchClient",
    "Batcher",
    "DropReport",
    "ExitDelivery",
    "LateRefusals",
    "LoopDriver",
    "PublishPath",
    "ReportsDrops",
    "SaidEvery",
    "ThreadDriver",
    "at_fork",
    "check_fork",
    "check_fork_when_refusing",
    "deliver_at_exit",
    "flush_before_exit",
    "fork_announced",
    "start_after_fork_in_child",
    "warn_of_thread_before_c_fork",
    "report_not_an_event",
]
