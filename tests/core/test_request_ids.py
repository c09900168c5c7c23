"""Generated request ids: UUID4 strings, never repeated across batches, threads or a fork."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterable

import pytest

from eventbus_core import _request_observer
from eventbus_core.asgi import new_request_id


def test_generated_ids_are_uuid4_across_several_batches() -> None:
    count = 3 * _request_observer._ID_BATCH + 7
    ids = [new_request_id() for _ in range(count)]
    assert len(set(ids)) == count
    for made in ids:
        parsed = uuid.UUID(made)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == made  # lower case, dashes where Go's uuid puts them
    # The variant digit takes each of its four values, as uuid4's does.
    assert {made[19] for made in ids} == set("89ab")


def test_an_id_is_returned_even_when_another_thread_empties_the_batch_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class TakenByAnotherThread(list[str]):
        """Emptied by "another thread" right after each refill."""

        def extend(self, items: Iterable[str]) -> None:
            super().extend(items)
            self.clear()

    monkeypatch.setattr(_request_observer, "_ids", TakenByAnotherThread())
    assert uuid.UUID(new_request_id()).version == 4


def test_threads_drawing_ids_at_once_never_share_one() -> None:
    per_thread = 2 * _request_observer._ID_BATCH
    drawn: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(len(drawn))

    def draw(into: list[str]) -> None:
        start.wait()
        into.extend(new_request_id() for _ in range(per_thread))

    threads = [threading.Thread(target=draw, args=(into,)) for into in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [made for into in drawn for made in into]
    assert len(set(every)) == len(every) == 8 * per_thread


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_hand_out_its_parents_ids() -> None:
    new_request_id()  # the parent now holds a batch the child would inherit
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next ids, then leave without running pytest's teardown
        try:
            os.write(write_end, " ".join(new_request_id() for _ in range(20)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child = set(pipe.read().decode().split())
    os.waitpid(pid, 0)
    parent = {new_request_id() for _ in range(20)}
    assert len(child) == 20
    assert not child & parent
