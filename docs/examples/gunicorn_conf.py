"""gunicorn settings for an application wrapped by EventBusWSGIMiddleware (`-c` this file).

WSGI has no shutdown event, so the bus is stopped from gunicorn's `worker_exit` hook: what the
worker's bus still holds is delivered (within `EVENTBUS_STOP_TIMEOUT`) before the worker ends.
`stop_buses()` finds the bus of every EventBusWSGIMiddleware of the worker, wherever the
framework keeps the middleware (Flask's `app.wsgi_app`, Django's `application`).
"""

from __future__ import annotations

from typing import Any

bind = "127.0.0.1:8000"


def worker_exit(server: Any, worker: Any) -> None:
    """Deliver what this worker's buses hold before it ends."""
    from eventbus_core.wsgi import stop_buses

    stop_buses()
