"""The Event model: construction, immutability, durations and headers."""

from __future__ import annotations

import pickle
from datetime import timedelta
from types import MappingProxyType

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
    assert Event(duration=2**63 - 1).duration_ns == 2**63 - 1


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


def test_events_from_every_builder_are_immutable_events() -> None:
    # Decoded, stamped, replaced and middleware-built events are made by a faster route than
    # the constructor (a mutable twin class sealed into an Event): each must end up the same.
    base = Event(request_id="a", status=200, response_headers={"A": "b"})
    built = [
        Event.from_json(base.to_json()),
        base.with_log_id(7),
        base.replace(status=201),
        Event._trusted("a", "GET", "/", 200, 5, {"A": ("b",)}, b"x", None),
        pickle.loads(pickle.dumps(base)),
    ]
    for evt in built:
        assert type(evt) is Event
        with pytest.raises(AttributeError, match="immutable"):
            evt.status = 500  # type: ignore[misc]
        with pytest.raises(AttributeError):
            del evt.status
        assert evt.header("a") == "b"


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
    with pytest.raises(TypeError, match=r"response_headers\['X'\] must be a str or a sequence"):
        Event(response_headers={"X": [1]})  # type: ignore[list-item]
    for value in (1, None, b"bytes"):
        with pytest.raises(TypeError, match=r"response_headers\['X'\] must be a str or a seq"):
            Event(response_headers={"X": value})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="response_headers must be a mapping"):
        Event(response_headers=[("X", "1")])  # type: ignore[arg-type]
    # What has items() is taken as before, not only a registered Mapping (http.client's).
    import email
    import http.client

    message = email.message_from_string("X-A: 1\n\n", _class=http.client.HTTPMessage)
    assert dict(Event(response_headers=message).headers) == {"X-A": ("1",)}  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="log_id must be int"):
        Event().with_log_id("7")  # type: ignore[arg-type]
    for log_id in (-5, 2**63):
        with pytest.raises(ValueError, match="Event log_id must not be"):
            Event().with_log_id(log_id)


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


def test_repr_masks_credentials_in_the_path() -> None:
    evt = Event(path="/v1/chat?api_key=k3y-in-the-query&stream=true&password=hunter2")
    text = repr(evt)
    assert "k3y-in-the-query" not in text and "hunter2" not in text
    assert "path='/v1/chat?api_key=[REDACTED]&stream=true&password=[REDACTED]'" in text
    assert evt.path.endswith("hunter2")  # the event itself keeps what it was given


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"status": 99999}, "status"),
        ({"status": 99}, "status"),
        ({"status": 600}, "status"),
        ({"status": -1}, "status"),
        ({"status": 2**63}, "status"),
        ({"duration": timedelta(milliseconds=-1)}, "duration"),
        ({"duration": -1}, "duration"),
        ({"duration": 2**63}, "duration"),
        ({"duration": timedelta(days=200_000)}, "duration"),  # > 292 years of nanoseconds
        ({"log_id": -1}, "log_id"),
        ({"log_id": 2**63}, "log_id"),
    ],
)
def test_impossible_values_are_refused_naming_the_field(fields: dict, named: str) -> None:
    with pytest.raises(ValueError, match=f"Event {named} "):
        Event(**fields)
    with pytest.raises(ValueError, match=f"Event {named} "):
        Event(status=200).replace(**fields)


def test_boundary_values_are_accepted() -> None:
    for status in (0, 100, 200, 599):
        assert Event(status=status).status == status
    assert Event(log_id=2**63 - 1, duration=0).log_id == 2**63 - 1


def test_decoding_stays_as_lenient_as_go() -> None:
    # Go's decoder reads any int64: so does from_json, and the event survives a pickle.
    wire = '{"LogID": -7, "Status": 99999, "Duration": -5000, "Path": "/a"}'
    event = Event.from_json(wire)
    assert (event.log_id, event.status, event.duration_ns) == (-7, 99999, -5000)
    assert pickle.loads(pickle.dumps(event)) == event
    # A change of another field keeps what Go wrote; only the changed fields are checked.
    moved = event.replace(path="/b")
    assert (moved.status, moved.duration_ns, moved.path) == (99999, -5000, "/b")


def test_a_callers_header_proxy_is_copied() -> None:
    # A MappingProxyType is a view: the caller still holds the dict underneath.
    held: dict[str, tuple[str, ...]] = {"Content-Type": ("application/json",)}
    event = Event(response_headers=MappingProxyType(held))
    held["Authorization"] = ("Bearer sk-later",)
    held["Content-Type"] = ("text/plain",)
    assert dict(event.headers) == {"Content-Type": ("application/json",)}
    assert event.header("Authorization") is None


def test_replace_reuses_the_events_own_headers() -> None:
    event = Event(response_headers={"A": "1"})
    assert event.replace(path="/x").response_headers is event.response_headers
    assert event.replace(response_headers=event.response_headers).response_headers is (
        event.response_headers
    )
    changed = event.replace(response_headers={"B": ["2"]})
    assert dict(changed.headers) == {"B": ("2",)}
    assert dict(event.headers) == {"A": ("1",)}
