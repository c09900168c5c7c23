"""Helpers for the dispatcher and sink tests (imported explicitly, not a pytest conftest)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eventbus_core import Delivery, Event, PermanentSinkError, RetryPolicy, TransientSinkError

FAST_RETRY = RetryPolicy(retries=3, base=0.001, cap=0.002)
"""Retries with delays of a millisecond, so failure paths run fast."""

SECRET_KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
SECRET_AUTH = "Bearer tok-9f8e7d6c5b4a39281706"


def make_events(n: int, start: int = 1, **fields: Any) -> list[Event]:
    """`n` events with request ids r<i> and LogIDs i."""
    return [
        Event(
            request_id=f"r{i}",
            method="POST",
            path="/v1/chat/completions",
            status=200,
            duration=1_500_000,
            log_id=i,
            **fields,
        )
        for i in range(start, start + n)
    ]


class RecordingSink:
    """Records every batch; fails its first `fail_times` sends with `error()`."""

    def __init__(self, name: str = "rec", *, fail_times: int = 0, error: Any = None) -> None:
        self.name = name
        self.fail_times = fail_times
        self.error = error or (lambda: TransientSinkError("temporarily down"))
        self.calls = 0
        self.batches: list[list[dict[str, Any]]] = []
        self.closed = False
        self.changed = asyncio.Event()

    @property
    def payloads(self) -> list[dict[str, Any]]:
        return [p for b in self.batches for p in b]

    async def send(self, batch: Sequence[dict[str, Any]]) -> None:
        self.calls += 1
        if self.calls <= self.fail_times:
            raise self.error()
        self.batches.append(list(batch))
        self.changed.set()

    async def close(self) -> None:
        self.closed = True

    async def wait_for(self, n: int) -> None:
        """Wait until `n` payloads have been accepted."""
        while len(self.payloads) < n:
            self.changed.clear()
            await self.changed.wait()


class AlwaysFailing(RecordingSink):
    """A sink that never accepts anything."""

    def __init__(self, name: str = "broken", *, permanent: bool = False) -> None:
        super().__init__(
            name,
            fail_times=10**9,
            error=(
                (lambda: PermanentSinkError("HTTP 400: bad request"))
                if permanent
                else (lambda: TransientSinkError("HTTP 503"))
            ),
        )


class GatedSink(RecordingSink):
    """Blocks every send until `gate` is set (a slow sink, without sleeping)."""

    def __init__(self, name: str = "slow") -> None:
        super().__init__(name)
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def send(self, batch: Sequence[dict[str, Any]]) -> None:
        self.waiting.set()
        await self.gate.wait()
        await super().send(batch)


class SlowSink(RecordingSink):
    """Takes `delay` seconds per send: for behaviour that depends on elapsed time itself
    (a consumer group's idle time), where a gate would not do."""

    def __init__(self, name: str = "slow", *, delay: float) -> None:
        super().__init__(name)
        self.delay = delay

    async def send(self, batch: Sequence[dict[str, Any]]) -> None:
        await asyncio.sleep(self.delay)
        await super().send(batch)


class ListSource:
    """A durable `AckableSource` over a fixed list: records acknowledgements."""

    def __init__(self, events: Sequence[Event], name: str = "list") -> None:
        self.name = name
        self._pending = [Delivery(e, token=e.log_id) for e in events]
        self.acked: list[Any] = []
        self.closed = False

    def read(self, max_items: int, timeout: float) -> list[Delivery]:
        out, self._pending = self._pending[:max_items], self._pending[max_items:]
        if not out and timeout:
            import time

            time.sleep(min(timeout, 0.01))  # a real source blocks; keep the poll loop calm
        return out

    def ack(self, tokens: Sequence[Any]) -> None:
        self.acked.extend(tokens)

    def close(self) -> None:
        self.closed = True


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL file, parsed (fails on a torn line)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def read_written_lines(path: Path) -> list[dict[str, Any]]:
    """The lines of a JSONL file a sink is still appending to, parsed: a batch's append may be
    seen half done, so what follows the last newline is left for the next look."""
    if not path.exists():
        return []
    whole, _, _ = path.read_bytes().rpartition(b"\n")
    return [json.loads(line) for line in whole.splitlines()]


class WebhookReceiver:
    """An ASGI app standing in for an observability backend's webhook.

    Answers the first requests with `script` (status, headers) pairs, then 200. Records every
    request's headers and JSON body. `hold_after`: from that request on, responses wait until
    `release` is set (a receiver that hangs, to kill a dispatcher mid-batch).
    """

    def __init__(
        self, script: Sequence[tuple[int, dict[str, str]]] = (), hold_after: int | None = None
    ) -> None:
        import threading

        self.script = list(script)
        self.requests: list[tuple[dict[str, str], Any, int]] = []
        self.lock = threading.Lock()
        self.hold_after = hold_after
        self.release = threading.Event()
        self.holding = threading.Event()

    @property
    def accepted(self) -> list[dict[str, Any]]:
        """Payloads of the requests answered 200."""
        with self.lock:
            return [p for _, body, status in self.requests if status == 200 for p in body]

    @property
    def statuses(self) -> list[int]:
        with self.lock:
            return [status for _, _, status in self.requests]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        with self.lock:
            n = len(self.requests)
            status, extra = self.script[n] if n < len(self.script) else (200, {})
            self.requests.append((headers, json.loads(b"".join(chunks)), status))
        if self.hold_after is not None and n >= self.hold_after and not self.release.is_set():
            self.holding.set()
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 60)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in extra.items()],
            }
        )
        await send({"type": "http.response.body", "body": b"{}"})


def serve(app: Any) -> Any:
    """Context manager: serve `app` with uvicorn on a free 127.0.0.1 port; yield the URL."""
    import contextlib
    import socket
    import threading

    import uvicorn

    @contextlib.contextmanager
    def run() -> Any:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            while not server.started:
                if not thread.is_alive():
                    raise RuntimeError("uvicorn did not start")
                threading.Event().wait(0.01)  # uvicorn exposes only a flag to poll
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            if isinstance(app, WebhookReceiver):
                app.release.set()
            thread.join(10)
            sock.close()

    return run()
