"""Shared fixtures: paths to the shared wire samples, and a real Redis URL for server tests."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _find_vectors() -> Path:
    # CI lays shared/ beside the clone; a developer's checkout has it at ../shared too.
    for base in (ROOT, *ROOT.parents):
        candidate = base / "shared" / "wire" / "go-event-vectors.json"
        if candidate.is_file():
            return candidate
    # A copy of the same samples, for a checkout without shared/ beside it.
    return ROOT / "tests" / "data" / "go-event-vectors.json"


GO_VECTORS_PATH = _find_vectors()


@pytest.fixture(scope="session")
def go_vectors() -> list[dict[str, Any]]:
    """The events the Go llm-proxy's encoding/json wrote (shared/wire/go-event-vectors.json)."""
    data: list[dict[str, Any]] = json.loads(GO_VECTORS_PATH.read_text())
    return data


@pytest.fixture(autouse=True)
def _clean_eventbus_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start from the documented defaults, whatever the developer's shell exports."""
    for name in list(os.environ):
        if name.startswith("EVENTBUS_") and not name.startswith("EVENTBUS_TEST_"):
            monkeypatch.delenv(name)
    for name in (
        "LLM_PROXY_EVENT_BUS",
        "OBSERVABILITY_BUFFER_SIZE",
        "REDIS_URL",
        "REDIS_ADDR",
        "REDIS_DB",
        "REDIS_STREAM_KEY",
        "REDIS_CONSUMER_GROUP",
        "REDIS_STREAM_MAX_LEN",
    ):
        monkeypatch.delenv(name, raising=False)
    # The nats backend reads the `nats` tool's variables (NATS_URL, NATS_CREDS, NATS_USER, ...).
    for name in list(os.environ):
        if name.startswith("NATS_"):
            monkeypatch.delenv(name)


@pytest.fixture
def not_event_log() -> None:
    """The once-a-minute line about publish() of a non-Event as a fresh process has it (an
    earlier test may have logged one, or had calls counted since)."""
    from eventbus_core.batching import _not_event

    _not_event._last = -_not_event._EVERY
    _not_event._since = 0
