"""The HTTP endpoint of `eventbus dispatch --metrics-port`: `/metrics`, `/healthz`, `/readyz`.

A small standard-library server in its own threads: scrapes and probes never run on the
dispatcher's event loop, so a slow scrape cannot delay deliveries, and a stuck loop is seen
by `/healthz` instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from eventbus_core._errors import SettingsError
from eventbus_core._extras import require
from eventbus_core._log import get_logger
from eventbus_core.metrics._figures import FiguresReader
from eventbus_core.metrics._health import Health, HealthProbe
from eventbus_core.metrics._prometheus import EventBusCollector

__all__ = ["MetricsEndpoint"]

log = get_logger("eventbus.metrics")

_WHERE = "--metrics-port / EVENTBUS_METRICS_PORT"
_HOST = "--metrics-host / EVENTBUS_METRICS_HOST"


def _bind_error(host: str, port: int, exc: OSError) -> str:
    """Name the setting that is wrong: a host that resolves to nothing, or to no address of
    this machine, is the host's fault; anything else (in use, privileged) the port's."""
    reason = exc.strerror or str(exc)
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot serve metrics on {host!r} ({_HOST}): {reason}; give an address of this "
            "host (0.0.0.0 for every interface, 127.0.0.1 for this machine only)"
        )
    return (
        f"cannot serve metrics on {host}:{port} ({_WHERE}): {reason}; "
        "choose another port, or stop what listens there"
    )


class MetricsEndpoint:
    """Serve a dispatcher's metrics and probes over HTTP (see the module docstring).

    The socket is bound when the object is built, so a port in use fails before anything
    else starts; `attach()` then names the dispatcher and `start()` serves.

    Args:
        host: Address to listen on (`0.0.0.0`: every interface, as Kubernetes probes need).
        port: TCP port (0 picks a free one; see `port` afterwards).

    Raises:
        ImportError: prometheus-client is missing (with the pip command).
        SettingsError: (a `ValueError`) the address cannot be used (in use, not an address
            of this host): `eventbus dispatch` exits 2 with it.
    """

    def __init__(self, host: str = "0.0.0.0", port: int = 9464) -> None:
        require("prometheus", what=f"the metrics endpoint ({_WHERE})")
        from prometheus_client import CollectorRegistry
        from prometheus_client.gc_collector import GCCollector
        from prometheus_client.platform_collector import PlatformCollector
        from prometheus_client.process_collector import ProcessCollector

        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.probe: HealthProbe | None = None
        try:
            self._server = _server_class(host)((host, port), _handler(self))
        except OSError as exc:
            raise SettingsError(_bind_error(host, port, exc)) from None
        self._server.daemon_threads = True
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    def attach(
        self,
        dispatcher: Any,
        *,
        bus: Any = None,
        max_lag: float = 300.0,
        say: Callable[[str], str] | None = None,
    ) -> None:
        """Export `dispatcher` (and its bus) and answer the probes for it; `say` puts what the
        backend's check says in the command line's terms (see `HealthProbe`)."""
        watched_bus = bus if bus is not None else getattr(dispatcher, "owned_bus", None)
        self.registry.register(EventBusCollector(FiguresReader(watched_bus, dispatcher)))
        self.probe = HealthProbe(dispatcher, watched_bus, max_lag=max_lag, say=say)

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="eventbus-metrics", daemon=True
        )
        self._thread.start()
        everywhere = self.host in ("0.0.0.0", "::", "")
        shown = "localhost" if everywhere else self.host
        shown = f"[{shown}]" if ":" in shown else shown  # an IPv6 address in a URL
        # "localhost" alone read as local only, for a server other hosts reach (trial 163).
        where = " (listening on every interface: --metrics-host)" if everywhere else ""
        log.info(
            "metrics on http://%s:%d/metrics%s, probes on /healthz and /readyz",
            shown,
            self.port,
            where,
        )

    async def run(self, dispatcher: Any) -> Any:
        """`dispatcher.serve()` with the probe's heartbeat beside it; returns its figures."""
        probe = self.probe
        if probe is None:
            return await dispatcher.serve()
        beat = asyncio.create_task(probe.heartbeat(), name="eventbus-heartbeat")
        try:
            return await dispatcher.serve()
        finally:
            probe.state = "stopped"
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:  # shutdown() waits for serve_forever() to have run
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()

    # ------------------------------------------------------------------------- responses

    def metrics(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition in the format the scraper asked for (text or OpenMetrics)."""
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def health(self, path: str) -> Health:
        """The probe's answer for `/healthz` or `/readyz`."""
        probe = self.probe
        if probe is None:
            from eventbus_core.metrics._health import Check

            alive = path == "/healthz"
            return Health((Check("dispatcher", alive, "starting"),))
        return probe.liveness() if path == "/healthz" else probe.readiness()


IDLE_TIMEOUT: Final = 10.0
"""Seconds a connection to the endpoint may wait for a request's next bytes before it is closed."""


def _handler(endpoint: MetricsEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "eventbus"
        # Each connection holds a thread: one that sends nothing (or half a request) is closed
        # after this long, not kept for as long as the client likes (trial 115).
        timeout = IDLE_TIMEOUT

        def do_HEAD(self) -> None:
            # What a GET would answer, without the body (some load balancers probe so).
            self._head_only = True
            self.do_GET()

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            try:
                status, body, content_type = self._answer(path)
            except Exception as exc:  # a probe's bug must answer 500, not kill the server
                log.warning("metrics endpoint failed on %s: %r", path, exc)
                status, body = 500, b"internal error (see the dispatcher's log)\n"
                content_type = "text/plain"
            try:
                self._reply(status, body, content_type)
            except _CLIENT_GONE as exc:
                # The scraper or probe gave up first (its timeout, while a figure was slow to
                # come): nothing to answer, and nobody to answer.
                log.debug("metrics endpoint: the client of %s left (%r)", path, exc)

        def _answer(self, path: str) -> tuple[int, bytes, str]:
            if path == "/metrics":
                body, content_type = endpoint.metrics(self.headers.get("Accept"))
                return 200, body, content_type
            if path in ("/healthz", "/readyz"):
                health = endpoint.health(path)
                body = json.dumps(health.as_dict()).encode() + b"\n"
                return 200 if health.ok else 503, body, "application/json"
            if path == "/":
                links = b"eventbus dispatcher: /metrics /healthz /readyz\n"
                return 200, links, "text/plain; charset=utf-8"
            return 404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain"

        def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not getattr(self, "_head_only", False):
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics endpoint: " + format, *args)

    return Handler


_CLIENT_GONE: Final = (BrokenPipeError, ConnectionResetError)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints the traceback to stderr, past the logging filter that scrubs
        # secrets: it goes through the log instead (a client that left: one DEBUG line).
        if isinstance(sys.exc_info()[1], _CLIENT_GONE):
            log.debug("metrics endpoint: the client %s left", client_address)
        else:
            log.warning("metrics endpoint: a request from %s failed", client_address, exc_info=True)


def _server_class(host: str) -> type[ThreadingHTTPServer]:
    """The HTTP server for `host`: ThreadingHTTPServer binds IPv4 only, so an IPv6 address
    (`::1`, `::`) gets a subclass of the IPv6 family."""
    if ":" not in host:
        return _Server

    class IPv6Server(_Server):
        address_family = socket.AF_INET6

    return IPv6Server
