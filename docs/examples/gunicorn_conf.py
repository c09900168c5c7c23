"""gunicorn settings for an application wrapped by EventBusWSGIMiddleware (`-c` this file).

WSGI has no shutdown event, so the bus is stopped from gunicorn's `worker_exit` hook: what the
worker's bus still holds is delivered (within `EVENTBUS_STOP_TIMEOUT`) before the worker ends.
"""

from __future__ import annotations

from typing import Any

bind = "127.0.0.1:8000"


def worker_exit(server: Any, worker: Any) -> None:
    """Stop the bus of the application this worker served (the middleware keeps it as `bus`)."""
    bus = getattr(worker.wsgi, "bus", None)
    if bus is not None:
        bus.stop()
