"""Go's own encoding/json reads what `Event.to_json()` writes, and we read what Go writes.

Runs tests/go/roundtrip.go with the Go toolchain (CI installs Debian's golang-go). Without Go
on a developer's machine the test is skipped; under CI a missing Go fails it (`tests/_services.py`).
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from eventbus_core import Event
from eventbus_core.testing import make_event
from tests._services import require_go

PROGRAM = Path(__file__).resolve().parent.parent / "go" / "roundtrip.go"


def _go_roundtrip(lines: list[bytes], tmp_path: Path) -> list[dict[str, Any]]:
    go = require_go()
    env = {
        **os.environ,
        "GOCACHE": str(tmp_path / "gocache"),
        "GOPATH": str(tmp_path / "gopath"),
        "GO111MODULE": "off",
        "GOFLAGS": "",
    }
    binary = tmp_path / "roundtrip"
    subprocess.run([go, "build", "-o", str(binary), str(PROGRAM)], env=env, check=True, timeout=240)
    done = subprocess.run(
        [str(binary)], input=b"\n".join(lines) + b"\n", capture_output=True, check=True, timeout=60
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_go_decodes_what_we_write_and_we_decode_what_go_writes(
    tmp_path: Path, go_vectors: list[dict[str, Any]]
) -> None:
    events = [
        make_event(1),
        Event(),
        Event(response_headers={}, response_body=b"", request_body=b"\x00\xff\x80"),
        Event(
            log_id=9007199254740993,
            path="/x?a=<b>&c=\u2028\u00e9",
            status=503,
            duration=timedelta(hours=3, microseconds=7),
            request_id="\U0001f600",
        ),
        # Out of the constructor's range, but Go writes such values: decoded as they are.
        Event.from_json(
            json.dumps(
                {
                    "LogID": -1,
                    "Status": 99999,
                    "Duration": -5000,
                    "ResponseHeaders": {"Set-Cookie": ["a=1", "b=2"], "X-Empty": []},
                }
            )
        ),
        Event(response_body=bytes(range(256)) * 300),
    ]
    events += [Event.from_json(json.dumps(v)) for v in go_vectors]
    answers = _go_roundtrip([e.to_json() for e in events], tmp_path)
    assert len(answers) == len(events)
    for event, answer in zip(events, answers, strict=True):
        assert "error" not in answer, answer
        assert Event.from_json(json.dumps(answer)) == event


def test_go_rejects_what_we_reject(tmp_path: Path) -> None:
    # Integer fields with fractions are refused by both decoders, for the same reason.
    bad = [b'{"Duration": 1.5}', b'{"Status": "200"}', b'{"ResponseBody": "***"}']
    answers = _go_roundtrip(bad, tmp_path)
    assert all("error" in a for a in answers)
    for line in bad:
        with pytest.raises(ValueError, match="must be"):
            Event.from_json(line)
