"""Fixtures for the NATS backend tests: the real server, and a unique stream per test.

Tests marked `nats` use the nats-server on 127.0.0.1:4222 (or EVENTBUS_TEST_NATS_URL) with a
stream and subject of their own, deleted afterwards. When no server answers they are skipped,
except under CI (env CI set to a true value), where a missing server is a failure: CI starts
one (.ci/run), so its absence is a broken setup, not a reason to pass. Tests that kill or pause
a server start their own (see `_servers.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import nats
import pytest

from eventbus_nats import NatsEventBus
from tests.nats._servers import jetstream_answers

NATS_URL = os.environ.get("EVENTBUS_TEST_NATS_URL", "nats://127.0.0.1:4222")
_answered: dict[str, bool] = {}


def in_ci() -> bool:
    """True when the environment variable CI says this is a CI run."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def require_nats(url: str = NATS_URL) -> str:
    """Return `url` if JetStream answers there; skip the test otherwise (fail under CI)."""
    if url not in _answered:
        _answered[url] = jetstream_answers(url, 3.0)
    if not _answered[url]:
        why = f"no nats-server with JetStream answers at {url}"
        if in_ci():
            pytest.fail(f"{why}, and CI must run the NATS tests (.ci/run starts nats-server)")
        pytest.skip(f"{why}; start one with: nats-server -js (or set EVENTBUS_TEST_NATS_URL)")
    return url


@dataclass(frozen=True)
class Names:
    """A stream and subject unique to one test."""

    stream: str
    subject: str

    def kwargs(self) -> dict[str, Any]:
        return {"stream": self.stream, "subject": self.subject}


async def _delete_streams(url: str, streams: list[str]) -> None:
    # nats-py keeps trying a refused first connection: bound it from outside.
    nc = await asyncio.wait_for(nats.connect(url, connect_timeout=2, allow_reconnect=False), 5)
    try:
        js = nc.jetstream()
        for name in streams:
            with contextlib.suppress(Exception):
                await js.delete_stream(name)
    finally:
        await nc.close()


def publish_raw(url: str, subject: str, data: bytes) -> None:
    """Store `data` on `subject` as another writer would, bypassing eventbus (junk, say)."""

    async def publish() -> None:
        nc = await asyncio.wait_for(nats.connect(url, connect_timeout=2), 5)
        try:
            await nc.jetstream().publish(subject, data)
        finally:
            await nc.close()

    asyncio.run(publish())


def delete_streams(url: str, *streams: str) -> None:
    """Delete `streams` (missing ones are fine)."""
    with contextlib.suppress(Exception):
        asyncio.run(_delete_streams(url, list(streams)))


@pytest.fixture
def nats_url() -> str:
    """The shared test server's URL (skip, or fail under CI, if it does not answer)."""
    return require_nats()


@pytest.fixture
def names(nats_url: str) -> Iterator[Names]:
    """A unique stream and subject; both streams (events and dead letters) deleted after."""
    token = uuid.uuid4().hex[:12]
    found = Names(f"EVENTBUS_TEST_{token}", f"eventbus-test.{token}.events")
    yield found
    delete_streams(nats_url, found.stream, f"{found.stream}_DEAD")


@pytest.fixture
def make_bus(nats_url: str, names: Names) -> Iterator[Callable[..., NatsEventBus]]:
    """Build buses on this test's stream; every one is stopped at the end."""
    made: list[NatsEventBus] = []

    def make(**kwargs: Any) -> NatsEventBus:
        bus = NatsEventBus(kwargs.pop("url", nats_url), **{**names.kwargs(), **kwargs})
        made.append(bus)
        return bus

    yield make
    for bus in made:
        bus.stop(5.0)
