"""The Event model: construction, immutability, durations and headers."""

from __future__ import annotations

import pickle
from datetime import timedelta

import pytest

from eventbus_core import Event


def test_contract_example() -> None:
    evt = Event(
        request_id="req-123",
        method="POST",
        path="/v1/chat/completions",
        status=200,
        duration=timedelta(milliseconds=150),
    )
    assert evt.duration_ns == 150_000_000
    assert evt.duration == timedelta(milliseconds=150)
    assert evt.log_id == 0
    assert evt.response_body is None and evt.response_headers is None


def test_duration_in_nanoseconds_is_exact() -> None:
    assert Event(duration=10_800_000_000_007).duration_ns == 10_800_000_000_007
    assert Event(duration=timedelta(days=2, microseconds=3)).duration_ns == 172_800_000_003_000
    assert Event(duration=-5000).duration_ns == -5000


@pytest.mark.parametrize("bad", [1.5, "150ms", None, True])
def test_duration_rejects_other_types(bad: object) -> None:
    with pytest.raises(TypeError, match="timedelta or an int of nanoseconds"):
        Event(duration=bad)  # type: ignore[arg-type]


def test_is_immutable() -> None:
    evt = Event(request_id="a")
    with pytest.raises(AttributeError, match="immutable"):
        evt.request_id = "b"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del evt.status


def test_headers_are_read_only_and_normalised() -> None:
    source = {"Content-Type": "application/json", "Set-Cookie": ["a=1", "b=2"]}
    evt = Event(response_headers=source)
    source["Content-Type"] = "text/plain"  # the caller's dict does not leak in
    assert evt.response_headers == {
        "Content-Type": ("application/json",),
        "Set-Cookie": ("a=1", "b=2"),
    }
    with pytest.raises(TypeError):
        evt.response_headers["X"] = ("y",)  # type: ignore[index]
    assert evt.header("content-type") == "application/json"
    assert evt.header("missing") is None


def test_rejects_wrong_field_types_with_clear_messages() -> None:
    with pytest.raises(TypeError, match="status must be int"):
        Event(status="200")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="encode it first"):
        Event(response_body="text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="non-str value"):
        Event(response_headers={"X": [1]})  # type: ignore[list-item]


def test_replace_and_with_log_id_make_copies() -> None:
    evt = Event(request_id="a", status=200, response_body=b"x")
    other = evt.replace(status=500, duration=timedelta(seconds=1))
    assert (other.status, other.duration_ns, other.response_body) == (500, 10**9, b"x")
    assert evt.status == 200
    stamped = evt.with_log_id(42)
    assert stamped.log_id == 42 and evt.log_id == 0
    assert stamped.replace(log_id=0) == evt
    with pytest.raises(TypeError, match="unknown field"):
        evt.replace(colour="red")


def test_equality_hash_and_pickle() -> None:
    a = Event(request_id="a", response_headers={"X": ["1"]}, request_body=b"\x00")
    b = Event(request_id="a", response_headers={"X": ("1",)}, request_body=b"\x00")
    assert a == b and hash(a) == hash(b)
    assert pickle.loads(pickle.dumps(a)) == a
    assert a != Event(request_id="b")


def test_repr_hides_bodies_and_header_values() -> None:
    evt = Event(
        request_id="r",
        response_headers={"Authorization": ["Bearer sk-secret"]},
        request_body=b"password=hunter2",
    )
    text = repr(evt)
    assert "sk-secret" not in text and "hunter2" not in text
    assert "<16 bytes>" in text
