"""Keep the long-lived objects of a dispatcher's process out of the cyclic collector's passes.

A dispatcher makes and drops tens of thousands of containers a second (parsed bodies,
payloads, batches). That churn triggers the collector's full passes, and each full pass walks
every object of the process, most of which live as long as it does: modules, settings, plugin
registries, compiled patterns (about 50,000 objects in `eventbus dispatch`). In the dispatch
benchmark those passes took about 10 µs per event, a tenth of the dispatcher's CPU time.
`gc.freeze()` moves the objects that exist when the dispatcher starts into the collector's
permanent generation, so later passes walk only what the dispatcher made since.

`eventbus dispatch` calls it, in a process that is the dispatcher's alone. `Dispatcher.run()`
does not: an application that embeds a dispatcher owns its heap, and a freeze is process-wide.

Nothing is lost: frozen objects are freed by reference counting as ever; only a reference
cycle among them that becomes garbage later stays in memory (what is garbage at the time is
collected first). It is done once per process, so a process that runs many dispatchers one
after the other (tests) does not freeze the garbage of earlier ones.
"""

from __future__ import annotations

import gc
import threading

__all__ = ["freeze_startup_heap"]

_lock = threading.Lock()
_done = False


def freeze_startup_heap() -> None:
    """Collect, then freeze every object there is now (once per process; see the module)."""
    global _done
    with _lock:
        if _done:
            return
        _done = True
        gc.collect()
        gc.freeze()
