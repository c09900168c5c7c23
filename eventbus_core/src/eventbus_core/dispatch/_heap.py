"""Tune the cyclic garbage collector for a process that is a dispatcher and nothing else.

A dispatcher makes and drops tens of thousands of containers a second (parsed bodies,
payloads, batches). Two things follow from that churn, and `prepare_dispatch_heap()` answers
both:

- **Full passes walk the whole process.** The churn triggers the collector's full passes, and
  each walks every object of the process, most of which live as long as it does: modules,
  settings, plugin registries, compiled patterns (about 50,000 objects in `eventbus
  dispatch`). In the dispatch benchmark those passes took about 10 µs per event, a tenth of the
  dispatcher's CPU time. `gc.freeze()` moves the objects that exist when the dispatcher starts
  into the collector's permanent generation, so later passes walk only what the dispatcher
  made since.
- **Young passes walk the batch in flight.** With CPython's default threshold (a young pass
  every 700 new containers), a batch of 100 chat events (about 6,000 containers while it is
  prepared) is walked eight times on its way through, and what survives is walked again in
  the older generations. Raising the threshold to `YOUNG_THRESHOLD` lets most of a batch die
  (freed by reference counting) before any pass sees it: 305,400 -> 290,800 instructions per
  event through the memory bus (callgrind; 5,000 and 50,000 gave the same within 1,500).
  Garbage in reference cycles, which only the collector frees, waits at most that many new
  containers longer; the dispatcher makes little of it.

`eventbus dispatch` calls it, in a process that is the dispatcher's alone. `Dispatcher.run()`
does not: an application that embeds a dispatcher owns its heap, and both settings are
process-wide.

Nothing is lost: frozen objects are freed by reference counting as ever; only a reference
cycle among them that becomes garbage later stays in memory (what is garbage at the time is
collected first). It is done once per process, so a process that runs many dispatchers one
after the other (tests) does not freeze the garbage of earlier ones.
"""

from __future__ import annotations

import gc
import threading
from typing import Final

__all__ = ["YOUNG_THRESHOLD", "prepare_dispatch_heap"]

YOUNG_THRESHOLD: Final = 20_000
"""New containers between two young passes of the collector in `eventbus dispatch`."""

_lock = threading.Lock()
_done = False


def prepare_dispatch_heap() -> None:
    """Collect, freeze every object there is now, and raise the young generation's threshold
    to `YOUNG_THRESHOLD` (once per process; see the module). A higher threshold, the older
    generations' thresholds, and a threshold of 0 (collection turned off) are kept."""
    global _done
    with _lock:
        if _done:
            return
        _done = True
        gc.collect()
        gc.freeze()
        young, middle, old = gc.get_threshold()
        if 0 < young < YOUNG_THRESHOLD:
            gc.set_threshold(YOUNG_THRESHOLD, middle, old)
