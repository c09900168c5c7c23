"""eventbus-nats installs with pip beside eventbus-core alone (no Redis packages) and works."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.nats.conftest import delete_streams, require_nats
from tests.test_packaging import ROOT, _run, _venv

pytestmark = [pytest.mark.nats, pytest.mark.slow]


def test_installs_beside_core_alone_and_publishes(tmp_path: Path) -> None:
    url = require_nats()
    python = _venv(tmp_path, ROOT / "eventbus_core", ROOT / "eventbus_nats")
    listed = subprocess.run(
        [str(python.with_name("eventbus")), "plugins", "--json"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    plugins = {p["name"]: p for p in json.loads(listed.stdout)["plugins"]}
    assert plugins["nats"]["distribution"] == "eventbus-nats"
    assert plugins["nats"]["backends"] == ["nats"]
    token = uuid.uuid4().hex[:10]
    stream = f"EVENTBUS_PKG_{token}"
    try:
        out = _run(
            python,
            """
import importlib.util, json
from eventbus_core import create_bus
from eventbus_core.testing import make_event
bus = create_bus()
bus.publish(make_event(1))
ok = bus.flush(20)
newest = [e.request_id for e in bus.newest(1)]
bus.stop()
print(json.dumps({"type": type(bus).__name__, "ok": ok, "newest": newest,
                  "redis": importlib.util.find_spec("redis") is not None}))
""",
            LLM_PROXY_EVENT_BUS="nats",
            NATS_URL=url,
            EVENTBUS_NATS_STREAM=stream,
            EVENTBUS_NATS_SUBJECT=f"eventbus-pkg.{token}",
        )
    finally:
        delete_streams(url, stream, f"{stream}_DEAD")
    result = json.loads(out)
    assert result == {"type": "NatsEventBus", "ok": True, "newest": ["req-1"], "redis": False}
