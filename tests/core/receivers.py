"""A real HTTP receiver for the sink tests: `http.server` on a free 127.0.0.1 port, in a thread.

It records every request (path, headers, raw body) and answers from a script of
`(status, headers, body)` tuples, then with `default` once the script is used up.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Request:
    """One request as the receiver saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered


class Receiver:
    """Records requests and answers them from `script` (see the module docstring)."""

    def __init__(self, script: Sequence[Reply] = (), default: Reply = (200, {}, b"")) -> None:
        self.script = list(script)
        self.default = default
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.url = ""

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        with self.lock:
            n = len(self.requests)
            status, headers, reply = self.script[n] if n < len(self.script) else self.default
            self.requests.append(
                Request(
                    handler.command,
                    handler.path,
                    {k.lower(): v for k, v in handler.headers.items()},
                    body,
                    status,
                )
            )
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(reply)))
        handler.end_headers()
        handler.wfile.write(reply)

    def ok(self) -> list[Request]:
        """The requests answered 2xx."""
        with self.lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    @contextmanager
    def running(self) -> Iterator[Receiver]:
        """Serve until the block ends; `url` is `http://127.0.0.1:<port>`."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)
