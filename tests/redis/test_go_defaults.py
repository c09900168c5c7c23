"""With default settings, a Python process and the Go llm-proxy share events on one Redis.

The Go proxy reads `REDIS_ADDR` (host:port) and `REDIS_DB` (no password), writes the LIST key
`llm-proxy-events` (INCR `llm-proxy-events:seq`, then LPUSH) or the stream `llm-proxy-events`
(XADD ... data <json>), and its dispatcher reads the stream through group
`llm-proxy-dispatchers`. Here only Go's variables are set, everything else is a default.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import Field

from eventbus_core import EventBusSettings, PluginSettings, SettingsError, create_bus, hookimpl
from eventbus_core._plugins import PluginRegistry
from eventbus_core.testing import RecordingBus, make_event
from eventbus_redis import RedisEventBus, RedisStreamsEventBus
from tests._services import close_client
from tests.redis._servers import ThrowawayRedis


def test_go_variables_give_the_redis_address_when_redis_url_is_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_ADDR", "redis.internal:6380")
    monkeypatch.setenv("REDIS_DB", "4")
    settings = EventBusSettings()
    assert str(settings.redis_url) == "redis://redis.internal:6380/4"
    assert settings.redis_url_source == "REDIS_ADDR/REDIS_DB"
    monkeypatch.delenv("REDIS_DB")
    assert str(EventBusSettings().redis_url) == "redis://redis.internal:6380/0"
    monkeypatch.setenv("REDIS_URL", "redis://other:6379/1")  # both set: REDIS_URL wins
    settings = EventBusSettings()
    assert (str(settings.redis_url), settings.redis_url_source) == (
        "redis://other:6379/1",
        "REDIS_URL",
    )


def test_an_empty_host_in_redis_addr_is_the_local_host_as_for_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Go dials the loopback address for ":6379"; eventbus refused it (trial 140).
    monkeypatch.setenv("REDIS_ADDR", ":6379")
    assert str(EventBusSettings().redis_url) == "redis://127.0.0.1:6379/0"
    monkeypatch.setenv("REDIS_ADDR", ":")
    with pytest.raises(SettingsError, match="must be host:port"):
        EventBusSettings()


def test_defaults_are_the_go_proxys_key_stream_group_and_field() -> None:
    settings = EventBusSettings()
    assert (settings.redis_key, settings.redis_stream, settings.redis_group) == (
        "llm-proxy-events",
        "llm-proxy-events",
        "llm-proxy-dispatchers",
    )
    client = redis.Redis.from_url("redis://127.0.0.1:1/0")  # never connected
    assert RedisEventBus(client).key == "llm-proxy-events"
    streams = RedisStreamsEventBus(client)
    assert (streams.stream, streams.group) == ("llm-proxy-events", "llm-proxy-dispatchers")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("REDIS_ADDR", "localhost", "must be host:port"),
        ("REDIS_ADDR", "redis://localhost:6379", "set REDIS_URL instead"),
        # The value as typed, scheme and all: it is what is wrong.
        ("REDIS_ADDR", "redis://localhost:6379", "REDIS_ADDR='redis://localhost:6379' must be"),
        ("REDIS_ADDR", "local host:6379", "must be host:port"),
        ("REDIS_ADDR", "::1:6379", r"REDIS_ADDR='::1:6379': an IPv6 address goes in brackets"),
        ("REDIS_ADDR", "[::1]", r"REDIS_ADDR='\[::1\]' has no port"),
        ("REDIS_ADDR", "[a:6379", "unbalanced brackets"),
        ("REDIS_ADDR", "a]:6379", "unbalanced brackets"),
        ("REDIS_URL", "redis://local host:6379/0", "holds whitespace"),
        ("EVENTBUS_REDIS_TTL", "0.0001", r"ttl must be 0 \(no expiry\) or from 0.001"),
        ("EVENTBUS_REDIS_TTL", "1e300", r"ttl must be 0 \(no expiry\) or from 0.001"),
        ("REDIS_ADDR", "localhost:http", "port 'http' is not a number"),
        ("REDIS_ADDR", "localhost:70000", "from 1 to 65535"),
        ("REDIS_DB", "two", "valid integer"),
        ("REDIS_DB", "-1", "greater than or equal to 0"),
    ],
)
def test_invalid_address_variables_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv("REDIS_ADDR", "localhost:6379")
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=message) as caught:
        EventBusSettings()
    assert variable in str(caught.value)


@pytest.mark.parametrize("password", ["hunter2", "hun ter2", "hun/ter2", "hun@ter2"])
def test_a_password_put_in_redis_addr_is_not_echoed(
    monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    monkeypatch.setenv("REDIS_ADDR", f"user:{password}@localhost:6379")
    with pytest.raises(SettingsError, match="REDIS_ADDR") as caught:
        EventBusSettings()
    assert "ter2" not in str(caught.value)


def test_a_password_with_a_space_is_taken_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    # redis-py sends it as it is; only whitespace in the host is refused.
    monkeypatch.setenv("REDIS_URL", "redis://:hun ter2@localhost:6379/0")
    settings = EventBusSettings()
    assert str(settings.redis_url) == "redis://:hun ter2@localhost:6379/0"
    assert "ter2" not in repr(settings) and "ter2" not in settings.redis_url.redacted
    monkeypatch.setenv("REDIS_URL", "redis://:hun ter2@local host:6379/0")
    with pytest.raises(SettingsError, match="its host holds whitespace") as caught:
        EventBusSettings()
    assert "ter2" not in str(caught.value)


def test_no_address_at_all_names_both_ways_to_give_one() -> None:
    with pytest.raises(SettingsError, match="REDIS_URL") as caught:
        create_bus(EventBusSettings(backend="redis"))
    assert "REDIS_ADDR" in str(caught.value)


def go_event(log_id: int, request_id: str, go_vectors: list[dict[str, Any]]) -> bytes:
    """An event as the Go proxy's encoding/json writes it (a shared sample, renamed)."""
    doc = dict(go_vectors[0], LogID=log_id, RequestID=request_id)
    return json.dumps(doc, separators=(",", ":")).encode()


@pytest.mark.redis
def test_list_log_shared_with_go_by_default(
    throwaway: ThrowawayRedis, monkeypatch: pytest.MonkeyPatch, go_vectors: list[dict[str, Any]]
) -> None:
    monkeypatch.setenv("LLM_PROXY_EVENT_BUS", "redis")
    monkeypatch.setenv("REDIS_ADDR", f"127.0.0.1:{throwaway.port}")
    monkeypatch.setenv("REDIS_DB", "2")
    go = redis.Redis(host="127.0.0.1", port=throwaway.port, db=2)  # the Go proxy's client
    bus = create_bus()
    assert isinstance(bus, RedisEventBus)
    sub = bus.subscribe()
    seq = go.incr("llm-proxy-events:seq")  # what the Go publisher does, per event
    go.lpush("llm-proxy-events", go_event(int(seq), "from-go", go_vectors))
    assert sub.get(timeout=10).request_id == "from-go"  # Go's event reaches Python
    bus.publish(make_event(1, request_id="from-python"))
    assert bus.flush(10)
    # ... and Python's lands where the Go dispatcher reads (LRANGE llm-proxy-events 0 -1).
    newest = json.loads(go.lindex("llm-proxy-events", 0) or b"")
    assert (newest["RequestID"], newest["LogID"]) == ("from-python", 2)
    bus.stop(5)
    close_client(go)


@pytest.mark.redis
@pytest.mark.parametrize("backend", ["redis-streams", None])
def test_stream_shared_with_go_by_default(
    throwaway: ThrowawayRedis,
    monkeypatch: pytest.MonkeyPatch,
    go_vectors: list[dict[str, Any]],
    backend: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # None: the check, "only the Redis address set, in Go's variables": the Go proxy's
    # backend is then its default, Redis streams, and the in-memory default met nothing of it.
    from eventbus_core import _log

    monkeypatch.setattr(_log, "_warned", set())
    if backend is not None:
        monkeypatch.setenv("LLM_PROXY_EVENT_BUS", backend)
    monkeypatch.setenv("REDIS_ADDR", f"127.0.0.1:{throwaway.port}")
    monkeypatch.setenv("REDIS_DB", "2")
    go = redis.Redis(host="127.0.0.1", port=throwaway.port, db=2)
    with caplog.at_level(logging.WARNING, logger="eventbus"):
        bus = create_bus()
    assert isinstance(bus, RedisStreamsEventBus)
    said = [r.getMessage() for r in caplog.records if "selects backend" in r.getMessage()]
    if backend is None:  # said, with how to choose: events leave the process
        assert said == [
            "LLM_PROXY_EVENT_BUS is not set and REDIS_ADDR is, which selects backend "
            "'redis-streams' (its plugin's default for that setting): set "
            "LLM_PROXY_EVENT_BUS=redis-streams to keep it and end this warning, "
            # A Go proxy of a version that writes the LIST breaks once eventbus made the stream
            # (WRONGTYPE): the other choice is named (trial 214).
            "LLM_PROXY_EVENT_BUS=redis (its plugin's other backend) where the software that "
            "shares REDIS_ADDR uses that one, or LLM_PROXY_EVENT_BUS=memory to keep events "
            "inside this process"
        ]
    else:
        assert said == []
    go.xadd("llm-proxy-events", {"data": go_event(0, "from-go", go_vectors)})  # Go: LogID 0
    bus.publish(make_event(1, request_id="from-python"))
    assert bus.flush(10)
    consumer = bus.consumer(name="py-dispatcher")  # group llm-proxy-dispatchers, as Go's
    got: list[str] = []
    for _ in range(50):
        got += [d.event.request_id for d in consumer.read(10, timeout=0.1)]
        if len(got) == 2:
            break
    assert got == ["from-go", "from-python"]
    groups = [g["name"] for g in go.xinfo_groups("llm-proxy-events")]
    assert groups == [b"llm-proxy-dispatchers"]
    consumer.close()
    bus.stop(5)
    close_client(go)


def test_a_password_in_redis_addr_beside_redis_url_is_masked_in_the_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # "... point at different places (redis://...; REDIS_ADDR=u:hunter2@127.0.0.1:6379 ...)"
    # printed the password in clear (trial 121).
    import logging

    from eventbus_redis import _settings

    monkeypatch.setattr(_settings, "_warned_apart", set())
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/9")
    monkeypatch.setenv("REDIS_ADDR", "u:hunter2@127.0.0.1:6379")
    caplog.set_level(logging.WARNING, logger="eventbus")
    EventBusSettings()
    warned = [r.getMessage() for r in caplog.records if "point at different" in r.getMessage()]
    assert len(warned) == 1 and "hunter2" not in warned[0], warned
    assert "REDIS_ADDR=u:***@127.0.0.1:6379" in warned[0]


def test_go_stream_variables_are_used_when_eventbus_s_are_unset(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Go's environment (a shared Helm chart) left eventbus on llm-proxy-events while Go wrote
    # another stream: the two shared nothing, without a word (trial 178).
    import logging

    monkeypatch.setenv("REDIS_STREAM_KEY", "go-events")
    monkeypatch.setenv("REDIS_CONSUMER_GROUP", "go-group")
    monkeypatch.setenv("REDIS_STREAM_MAX_LEN", "500")
    caplog.set_level(logging.WARNING, logger="eventbus")
    settings = EventBusSettings()
    assert (settings.redis_stream, settings.redis_group, settings.redis_stream_max_len) == (
        "go-events",
        "go-group",
        500,
    )
    assert not caplog.records
    # Derived, not given: the in-memory default's warning names the variables actually set.
    assert {"redis_stream", "redis_group", "redis_stream_max_len"}.isdisjoint(
        settings.model_fields_set
    )
    monkeypatch.setenv("REDIS_STREAM_KEY", "")  # empty is unset, as in Go
    assert EventBusSettings().redis_stream == "llm-proxy-events"


def test_eventbus_stream_variables_win_over_go_s_with_a_warning_when_they_differ(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from eventbus_redis import _settings

    monkeypatch.setattr(_settings, "_warned_go_layout", set())
    caplog.set_level(logging.WARNING, logger="eventbus")
    monkeypatch.setenv("REDIS_CONSUMER_GROUP", "same")
    monkeypatch.setenv("EVENTBUS_REDIS_GROUP", "same")
    monkeypatch.setenv("REDIS_STREAM_KEY", "go-events")
    monkeypatch.setenv("EVENTBUS_REDIS_STREAM", "py-events")
    settings = EventBusSettings()
    assert (settings.redis_stream, settings.redis_group) == ("py-events", "same")
    EventBusSettings()  # once per process
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1, warned
    assert "EVENTBUS_REDIS_STREAM='py-events' and REDIS_STREAM_KEY='go-events'" in warned[0]


def test_a_bad_go_stream_max_len_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    for value in ("abc", "-1", str(10**16), "1.5"):
        monkeypatch.setenv("REDIS_STREAM_MAX_LEN", value)
        with pytest.raises(SettingsError, match="REDIS_STREAM_MAX_LEN="):
            create_bus(EventBusSettings(backend="redis-streams"))
        # Only by the backend that uses it: the others start (trial 182).
        for backend in ("memory", "redis"):
            create_bus(EventBusSettings(backend=backend)).stop(0)
    # Not where it is not used (eventbus's own is set), and empty is unset, as in Go: both
    # stopped every backend from starting (review 181).
    monkeypatch.setenv("EVENTBUS_REDIS_STREAM_MAX_LEN", "7")
    assert EventBusSettings().redis_stream_max_len == 7
    monkeypatch.delenv("EVENTBUS_REDIS_STREAM_MAX_LEN")
    monkeypatch.setenv("REDIS_STREAM_MAX_LEN", " ")
    assert EventBusSettings().redis_stream_max_len == 10_000


def test_redis_addr_alone_selects_redis_streams_and_redis_url_alone_does_not(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from eventbus_core import _log

    monkeypatch.setattr(_log, "_warned", set())
    caplog.set_level(logging.WARNING, logger="eventbus")
    monkeypatch.setenv("REDIS_ADDR", "127.0.0.1:6379")
    settings = EventBusSettings()
    assert (settings.backend, settings.backend_chosen_by) == ("redis-streams", ("REDIS_ADDR",))
    assert "backend" not in settings.model_fields_set  # the user did not choose it
    # Chosen, it stays chosen, whatever REDIS_ADDR says.
    monkeypatch.setenv("LLM_PROXY_EVENT_BUS", "memory")
    assert (EventBusSettings().backend, EventBusSettings().backend_chosen_by) == ("memory", ())
    assert EventBusSettings(backend="redis").backend == "redis"
    # Empty is unset, as in Go, and blank too (as the plugin reads it): not named by the
    # warning of settings the memory default ignores either (trial 188).
    monkeypatch.delenv("LLM_PROXY_EVENT_BUS")
    monkeypatch.setenv("REDIS_ADDR", "")
    assert EventBusSettings().backend == "memory"
    monkeypatch.setenv("REDIS_ADDR", "   ")
    assert EventBusSettings().backend == "memory"
    create_bus().stop()
    assert not [r for r in caplog.records if "REDIS_ADDR" in r.getMessage()]
    # REDIS_URL is not the Go proxy's (a cache may set it): the in-memory default stays, and
    # the warning names what it ignores ("... REDIS_ADDR, REDIS_URL" with one unset, trial 178).
    monkeypatch.delenv("REDIS_ADDR")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    create_bus().stop()
    warned = [r.getMessage() for r in caplog.records if "default backend" in r.getMessage()]
    assert len(warned) == 1 and "ignores REDIS_URL (set:" in warned[0], warned


@pytest.mark.redis
def test_a_dispatcher_given_only_go_s_address_delivers_go_s_events(
    throwaway: ThrowawayRedis, go_vectors: list[dict[str, Any]], tmp_path: Path
) -> None:
    # Issue 9's check: "a Python ... dispatcher with their defaults (only the Redis address
    # set, in Go's variables) receive every event". It ran on memory and received nothing.
    go = redis.Redis(host="127.0.0.1", port=throwaway.port, db=3)
    for i in range(5):
        go.xadd("llm-proxy-events", {"data": go_event(0, f"go-{i}", go_vectors)})
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EVENTBUS_", "LLM_PROXY_", "REDIS_", "OBSERVABILITY_"))
    }
    env |= {"REDIS_ADDR": f"127.0.0.1:{throwaway.port}", "REDIS_DB": "3"}
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "eventbus_core.cli", "dispatch", "--sink", "jsonl"]
    command += ["--sink-opt", f"path={out}", "--dead-letter", ""]
    child = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            if out.exists() and len(out.read_text().splitlines()) >= 5:
                break
            time.sleep(0.1)
    finally:
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=60)
    lines = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    assert sorted(p["request_id"] for p in lines) == [f"go-{i}" for i in range(5)], stderr
    assert "REDIS_ADDR is, which selects backend 'redis-streams'" in stderr
    assert child.returncode == 0, stderr
    close_client(go)


def test_the_database_in_a_redis_url_query_is_the_one_compared_with_redis_db(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # redis://host/0?db=3 connects to 3 (redis-py: the query wins), and was compared as 0
    # with REDIS_DB=0: no warning, events in 3 while Go read 0 (trial 178).
    import logging

    from eventbus_redis import _settings

    monkeypatch.setattr(_settings, "_warned_apart", set())
    caplog.set_level(logging.WARNING, logger="eventbus")
    monkeypatch.setenv("REDIS_ADDR", "127.0.0.1:6379")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0?db=3")
    monkeypatch.setenv("REDIS_DB", "0")
    EventBusSettings()
    assert sum("point at different" in r.getMessage() for r in caplog.records) == 1
    caplog.clear()
    monkeypatch.setenv("REDIS_DB", "3")
    EventBusSettings()
    assert not any("point at different" in r.getMessage() for r in caplog.records)


class _ToySettings(PluginSettings):
    toy_addr: str | None = Field(default=None, validation_alias="T_TOY_ADDR", description="A.")


class _ToyPlugin:
    @hookimpl
    def eventbus_register_backends(self, register: Any) -> None:
        register("toy", lambda s: RecordingBus(s.buffer_size), settings=_ToySettings)


def test_what_redis_addr_chose_is_named_so_in_warnings_and_errors(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Chosen by REDIS_ADDR, redis-streams was called "the default backend" in the warning
    # about settings it ignores, and no test held the errors' "being set" wording (review 187).
    # A toy backend's setting, not NATS_URL: the Redis suite also runs without eventbus-nats.
    import eventbus_memory.plugin
    import eventbus_redis.plugin
    from eventbus_core import _log
    from eventbus_core import _plugins as plugins_module
    from eventbus_core.cli import main

    plugins = [eventbus_memory.plugin, eventbus_redis.plugin, _ToyPlugin()]
    registry = PluginRegistry(load_entry_points=False, plugins=plugins)
    monkeypatch.setattr(plugins_module, "_registry", registry)
    monkeypatch.setattr(_log, "_warned", set())
    monkeypatch.setenv("REDIS_ADDR", "127.0.0.1:6379")
    monkeypatch.setenv("T_TOY_ADDR", "here")
    # eventbus-nats not in this registry: its address is no reason to call redis-streams "the
    # default backend" that keeps events in this process (CI's Redis-only run).
    monkeypatch.setenv("NATS_URL", "nats://127.0.0.1:4222")
    with caplog.at_level(logging.WARNING, logger="eventbus"):
        create_bus().stop(0)
    said = [r.getMessage() for r in caplog.records]
    assert any(
        "LLM_PROXY_EVENT_BUS is not set, so backend 'redis-streams' (selected by REDIS_ADDR) is "
        "used, which ignores T_TOY_ADDR" in message
        for message in said
    ), said
    assert not any("is not installed" in message for message in said), said
    monkeypatch.delenv("T_TOY_ADDR")
    code = main(["stats", "--backend-option", "T_TOY_ADDR=here"])
    err = capsys.readouterr().err
    assert code == 2
    assert (
        "--backend-option T_TOY_ADDR is a setting of the toy backend, not of 'redis-streams' "
        "(from REDIS_ADDR being set, LLM_PROXY_EVENT_BUS unset)" in err
    ), err


def test_a_command_line_redis_addr_selects_no_backend(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Only the environment selects (the Go proxy's); on the command line --backend chooses,
    # and --backend-option REDIS_ADDR on the memory default is refused as before (review 187).
    from eventbus_core.cli import main

    assert EventBusSettings(redis_addr="127.0.0.1:6379").backend == "memory"
    code = main(["stats", "--backend-option", "REDIS_ADDR=127.0.0.1:6379"])
    err = capsys.readouterr().err
    assert code == 2 and "pass --backend redis" in err, err


@pytest.mark.parametrize("events", [100, 50_000])
def test_the_demo_s_processes_are_not_told_their_stream_differs_from_go_s(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, events: int
) -> None:
    # With the Go proxy's REDIS_STREAM_KEY set, each demo process warned that
    # EVENTBUS_REDIS_STREAM (the demo's own namespace, never set by the user) differed (trial
    # 186): the namespace gives Go's names the same values.
    from eventbus_redis import _settings

    monkeypatch.setenv("LLM_PROXY_EVENT_BUS", "redis-streams")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/15")
    monkeypatch.setenv("REDIS_STREAM_KEY", "go-events")
    monkeypatch.setenv("REDIS_CONSUMER_GROUP", "go-group")
    monkeypatch.setenv("REDIS_STREAM_MAX_LEN", "5000")
    bus = create_bus()
    try:
        isolation = bus.isolate("t1", events)  # the run's own keys: no I/O
    finally:
        bus.stop(0)
    for name, value in isolation.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(_settings, "_warned_go_layout", set())
    caplog.set_level(logging.WARNING, logger="eventbus")
    settings = EventBusSettings()  # as a demo process reads its environment
    assert settings.redis_stream == isolation.env["EVENTBUS_REDIS_STREAM"] != "go-events"
    assert settings.redis_stream_max_len == max(events, 5000)
    assert [r.getMessage() for r in caplog.records] == []


def test_a_keyword_that_is_another_fields_variable_in_another_case_sets_its_own_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # redis_stream_max_len=100 went to the Go proxy's REDIS_STREAM_MAX_LEN (a text field):
    # refused as "Input should be a valid string", naming Go's variable (trial 204).
    for value in (100, 0, "250"):
        settings = EventBusSettings(backend="redis-streams", redis_stream_max_len=value)
        assert settings.redis_stream_max_len == int(value)
    with pytest.raises(SettingsError) as info:
        EventBusSettings(redis_stream_max_len=-1)
    assert "EVENTBUS_REDIS_STREAM_MAX_LEN=-1" in str(info.value), info.value
    monkeypatch.setenv("REDIS_STREAM_MAX_LEN", "500")  # Go's variable: a keyword still wins
    assert EventBusSettings(redis_stream_max_len=100).redis_stream_max_len == 100
    assert EventBusSettings().redis_stream_max_len == 500
