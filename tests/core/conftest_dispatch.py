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
