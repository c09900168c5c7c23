"""`ReplyHoldingProxy`: a TCP relay in front of a server (Redis, NATS) that can stop passing
replies.

Why: a Redis that applies a batch and then freezes (SIGSTOP, a paused VM) before its reply leaves
is a window of microseconds, too narrow to hit on purpose. Holding the replies at a relay makes
that state certain: Redis receives and applies every command, and the client never hears back.
The contract suite's `make_slow_bus()` uses it too: a write that never finishes, with no server
of the test run's own paused.
"""

from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["ReplyHoldingProxy"]


class ReplyHoldingProxy:
    """Relays 127.0.0.1:`port` to `target_port`; while `hold` is set, replies are swallowed."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.hold = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def holding(cls, target_port: int, target_host: str = "127.0.0.1") -> ReplyHoldingProxy:
        """A relay to `target_host:target_port` holding every reply from the start."""
        proxy = cls(target_port, target_host)
        proxy.hold.set()
        return proxy

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self._target)
            self._sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if not (replies and self.hold.is_set()):
                    dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            # Shut down first: a thread blocked in recv() on it wakes and ends, and the
            # server's end of the relay is closed now, not when the worker process ends.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
