"""The bounded wait for forked children (`tests/_forked.py`) ends a hung child and retries once."""

from __future__ import annotations

import os
import time

import pytest

from tests._forked import ChildHung, read_from_child, retried_if_hung, wait_child


def _sleeping_child() -> int:
    pid = os.fork()
    if pid == 0:
        try:
            time.sleep(60)
        finally:
            os._exit(0)
    return pid


def test_a_hung_child_is_killed_and_said() -> None:
    pid = _sleeping_child()
    with pytest.raises(ChildHung, match=r"had not ended after 0\.3 s"):
        wait_child(pid, timeout=0.3)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # killed and reaped
    read, write = os.pipe()
    pid = _sleeping_child()
    try:
        with pytest.raises(ChildHung, match=r"wrote nothing in 0\.3 s"):
            read_from_child(read, pid, 10, timeout=0.3)
    finally:
        os.close(read)
        os.close(write)


def test_a_scenario_whose_child_hung_runs_once_more_and_a_wrong_result_does_not(
    capsys: pytest.CaptureFixture[str],
) -> None:
    runs: list[int] = []

    def hangs_once() -> int:
        runs.append(1)
        if len(runs) == 1:
            wait_child(_sleeping_child(), timeout=0.2)
        return 7

    assert retried_if_hung(hangs_once) == 7 and len(runs) == 2
    assert "running the scenario once more" in capsys.readouterr().err

    def always_hangs() -> int:
        return wait_child(_sleeping_child(), timeout=0.2)

    with pytest.raises(ChildHung):
        retried_if_hung(always_hangs)
