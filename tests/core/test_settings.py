"""EventBusSettings: environment variables, defaults, aliases and errors that name the variable."""

from __future__ import annotations

import logging

import pytest

from eventbus_core import ENV_VARS, EventBusSettings, SettingsError


def test_defaults_match_the_seed() -> None:
    settings = EventBusSettings()
    assert (settings.backend, settings.buffer_size, settings.redis_url) == ("memory", 1000, None)
    assert settings.stop_timeout == 5.0
    assert (settings.redis_key, settings.redis_ttl, settings.redis_max_len) == (
        "llm-proxy-events",
        86_400.0,
        10_000,
    )
    assert (settings.redis_stream, settings.redis_group) == (
        "llm-proxy-events",
        "llm-proxy-dispatchers",
    )


def test_reads_the_seed_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_PROXY_EVENT_BUS", "redis")
    monkeypatch.setenv("OBSERVABILITY_BUFFER_SIZE", "250")
    monkeypatch.setenv("REDIS_URL", "redis://localhost:6379/3")
    monkeypatch.setenv("EVENTBUS_STOP_TIMEOUT", "1.5")
    settings = EventBusSettings()
    assert (settings.backend, settings.buffer_size, settings.stop_timeout) == ("redis", 250, 1.5)
    assert str(settings.redis_url) == "redis://localhost:6379/3"


@pytest.mark.parametrize("spelling", ["in-memory", "In-Memory", " memory ", "MEMORY"])
def test_in_memory_is_an_alias_of_memory(monkeypatch: pytest.MonkeyPatch, spelling: str) -> None:
    monkeypatch.setenv("LLM_PROXY_EVENT_BUS", spelling)
    assert EventBusSettings().backend == "memory"


def test_keyword_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBSERVABILITY_BUFFER_SIZE", "250")
    assert EventBusSettings(buffer_size=9).buffer_size == 9


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("OBSERVABILITY_BUFFER_SIZE", "abc", "valid integer"),
        ("OBSERVABILITY_BUFFER_SIZE", "0", "greater than or equal to 1"),
        ("EVENTBUS_STOP_TIMEOUT", "-1", "greater than or equal to 0"),
        # Parsed as floats, and unbounded: stop() would never be bounded, and its waits overflow.
        ("EVENTBUS_STOP_TIMEOUT", "inf", "finite number"),
        ("EVENTBUS_STOP_TIMEOUT", "nan", "finite number"),
        ("EVENTBUS_FLUSH_INTERVAL", "Infinity", "finite number"),
        ("EVENTBUS_REDIS_TTL", "inf", "finite number"),
        ("EVENTBUS_NATS_ACK_WAIT", "inf", "finite number"),
        ("LLM_PROXY_EVENT_BUS", "  ", "must not be empty"),
        ("REDIS_URL", "http://u:hunter2@example:6379", "is not a Redis URL"),
        # redis-py would take these and fail at every connection attempt instead.
        ("REDIS_URL", "redis://u:hunter2@example:notaport/0", "has no valid port"),
        ("REDIS_URL", "rediss://example:99999/0", "has no valid port"),
        ("REDIS_URL", "redis://example:0", "has no valid port"),
        ("EVENTBUS_REDIS_MAX_LEN", "many", "valid integer"),
    ],
)
def test_invalid_values_name_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        EventBusSettings()
    text = str(info.value)
    assert variable in text and message in text
    assert isinstance(info.value, ValueError)
    assert "hunter2" not in text


def test_keyword_errors_name_the_variable_too() -> None:
    with pytest.raises(SettingsError, match="OBSERVABILITY_BUFFER_SIZE"):
        EventBusSettings(buffer_size=-5)


def test_redis_password_never_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "rediss://default:s3cr3t-pw@redis.internal:6380/0")
    settings = EventBusSettings()
    assert "s3cr3t-pw" not in repr(settings)
    assert "s3cr3t-pw" not in str(settings)
    assert "rediss://default:***@redis.internal:6380/0" in repr(settings)
    assert str(settings.redis_url).endswith("s3cr3t-pw@redis.internal:6380/0")  # still usable


def test_every_field_has_its_own_variable() -> None:
    assert set(ENV_VARS) == set(EventBusSettings.model_fields)
    assert len(set(ENV_VARS.values())) == len(ENV_VARS)
    # The seed's variables, and the Go llm-proxy's own Redis address variables.
    legacy = {
        "LLM_PROXY_EVENT_BUS",
        "OBSERVABILITY_BUFFER_SIZE",
        "REDIS_URL",
        "REDIS_ADDR",
        "REDIS_DB",
        "LLM_PROXY_API_KEY",
    }
    for variable in ENV_VARS.values():
        assert variable in legacy or variable.startswith("EVENTBUS_")


def test_a_misspelt_variable_is_warned_about_naming_the_setting_it_resembles(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # pydantic-settings ignores variables no setting reads: EVENTBUS_REDIS_KEYS left the bus on
    # the key the Go llm-proxy shares, LLM_PROXY_EVENTBUS=redis ran on memory (helper-74).
    from eventbus_core import _log

    monkeypatch.setattr(_log, "_warned", set())
    monkeypatch.setenv("LLM_PROXY_EVENTBUS", "redis")
    monkeypatch.setenv("EVENTBUS_REDIS_KEYS", "mine")
    monkeypatch.setenv("EVENTBUS_SINK_QUEUE_SIZ", "5")  # core's EVENTBUS_SINK_QUEUE_SIZE
    # Other software's names, however close to ours: NATS_NKEY is not NATS_KEY.
    for other in ("REDIS_HOST", "REDIS_OM_URL", "NATS_NKEY", "NATS_CLUSTER", "LLM_PROXY_PORT"):
        monkeypatch.setenv(other, "x")
    monkeypatch.setenv("EVENTBUS_SINK_JSONL_PTH", "x")  # a sink option: the sink refuses it
    # Sink options that are right, however close to a core setting (EVENTBUS_STOP_TIMEOUT,
    # EVENTBUS_OTLP_CAPTURE_CONTENT): they were called ignored, and worked.
    monkeypatch.setenv("EVENTBUS_SINK_OTLP_TIMEOUT", "1")
    monkeypatch.setenv("EVENTBUS_SINK_OTLP_CAPTURE_CONTENT", "true")
    monkeypatch.setenv("EVENTBUS_TEST_REDIS_URL", "redis://h")  # the tests' own
    caplog.set_level(logging.WARNING, logger="eventbus")
    EventBusSettings()
    EventBusSettings()  # once per process
    warned = [m for r in caplog.records if "no setting has that name" in (m := r.getMessage())]
    assert sorted(warned) == sorted(
        [
            "eventbus: LLM_PROXY_EVENTBUS is set, but no setting has that name, so it is "
            "ignored; did you mean LLM_PROXY_EVENT_BUS?",
            "eventbus: EVENTBUS_REDIS_KEYS is set, but no setting has that name, so it is "
            "ignored; did you mean EVENTBUS_REDIS_KEY?",
            "eventbus: EVENTBUS_SINK_QUEUE_SIZ is set, but no setting has that name, so it is "
            "ignored; did you mean EVENTBUS_SINK_QUEUE_SIZE?",
        ]
    )


@pytest.mark.parametrize(
    "guess", ["EVENTBUS_BACKEND", "eventbus_backend", "EVENTBUS_BUS", "LLM_PROXY_EVENT_BACKEND"]
)
def test_a_guessed_name_for_the_backend_variable_is_warned_about(
    guess: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # EVENTBUS_BACKEND=redis ran on memory without a word: too far from LLM_PROXY_EVENT_BUS
    # (the Go llm-proxy's name) for the typo check.
    from eventbus_core import _log

    monkeypatch.setattr(_log, "_warned", set())
    monkeypatch.setenv(guess, "redis")
    caplog.set_level(logging.WARNING, logger="eventbus")
    assert EventBusSettings().backend == "memory"
    assert [r.getMessage() for r in caplog.records] == [
        f"eventbus: {guess} is set, but no setting has that name, so it is ignored; did you "
        "mean LLM_PROXY_EVENT_BUS?"
    ]


def test_every_setting_is_far_enough_from_every_other_not_to_be_called_a_typo() -> None:
    # A variable that is a setting is never warned about, whatever its neighbours.
    from eventbus_core._env_typos import misspelt_settings
    from eventbus_core._settings import all_env_vars

    known = list(all_env_vars().values())
    assert misspelt_settings(known, known) == []


def test_a_setting_read_from_a_name_in_another_case_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # `redis_url=...` configured eventbus (names are read whatever their case) but not the Go
    # llm-proxy, and every message then named REDIS_URL, which was never set (trial 117).
    from eventbus_core import _log

    monkeypatch.setattr(_log, "_warned", set())
    monkeypatch.delenv("EVENTBUS_STOP_TIMEOUT", raising=False)
    monkeypatch.setenv("eventbus_stop_timeout", "3")
    caplog.set_level(logging.WARNING, logger="eventbus")
    assert EventBusSettings().stop_timeout == 3
    EventBusSettings()  # once per process
    warned = [m for r in caplog.records if "another" in (m := r.getMessage()) or "read as" in m]
    assert warned == [
        "eventbus: eventbus_stop_timeout is read as EVENTBUS_STOP_TIMEOUT (eventbus reads names "
        "whatever their case, and its messages name EVENTBUS_STOP_TIMEOUT); programs that read "
        "exact names, the Go llm-proxy among them, do not see it: write EVENTBUS_STOP_TIMEOUT"
    ]


def test_an_invalid_value_under_a_name_in_another_case_is_named_as_it_was_set(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The error named EVENTBUS_STOP_TIMEOUT, never set, and the warning did not come (trial 119).
    from eventbus_core import SettingsError, _log

    monkeypatch.setattr(_log, "_warned", set())
    monkeypatch.delenv("EVENTBUS_STOP_TIMEOUT", raising=False)
    monkeypatch.setenv("eventbus_stop_timeout", "-3")
    caplog.set_level(logging.WARNING, logger="eventbus")
    with pytest.raises(SettingsError) as info:
        EventBusSettings()
    assert "eventbus_stop_timeout (read as EVENTBUS_STOP_TIMEOUT)='-3'" in str(info.value)
    assert any("eventbus_stop_timeout is read as" in r.getMessage() for r in caplog.records)


def test_seconds_past_what_a_thread_can_wait_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # EVENTBUS_SHUTDOWN_TIMEOUT=1e10: stop() raised OverflowError, and the stop watchdog's
    # thread died at start (trial 118).
    from eventbus_core import SettingsError

    for huge in ("1e10", "9223372036"):  # the second: just under TIMEOUT_MAX (trial 120)
        monkeypatch.setenv("EVENTBUS_SHUTDOWN_TIMEOUT", huge)
        with pytest.raises(SettingsError, match=rf"EVENTBUS_SHUTDOWN_TIMEOUT='{huge}'.*at most"):
            EventBusSettings()
    monkeypatch.setenv("EVENTBUS_SHUTDOWN_TIMEOUT", "86400")
    assert EventBusSettings().shutdown_timeout == 86400


def test_a_setting_set_in_two_cases_says_which_value_is_read(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # REDIS_URL and redis_url both set: the one pydantic-settings met last won, silently
    # (trial 119).
    from eventbus_core import _env_typos, _log

    monkeypatch.setattr(_log, "_warned", set())
    environ = {"EVENTBUS_STOP_TIMEOUT": "5", "eventbus_stop_timeout": "3"}
    caplog.set_level(logging.WARNING, logger="eventbus")
    _env_typos.warn_misspelt_settings(["EVENTBUS_STOP_TIMEOUT"], environ)
    assert [r.getMessage() for r in caplog.records] == [
        "eventbus: both EVENTBUS_STOP_TIMEOUT and eventbus_stop_timeout are set, and names are "
        "read whatever their case: the value of eventbus_stop_timeout is the one read; unset "
        "eventbus_stop_timeout"
    ]


def test_an_error_names_the_spelling_that_was_read_of_a_variable_set_twice() -> None:
    # Both set, the error blamed REDIS_URL while redis_url's value was read (trial 121).
    from eventbus_core._plugin_settings import as_set

    both = {"EVENTBUS_STOP_TIMEOUT": "5", "eventbus_stop_timeout": "-3"}
    assert as_set("EVENTBUS_STOP_TIMEOUT", both) == (
        "eventbus_stop_timeout (read as EVENTBUS_STOP_TIMEOUT)"
    )
    assert as_set("EVENTBUS_STOP_TIMEOUT", dict(reversed(both.items()))) == "EVENTBUS_STOP_TIMEOUT"
    assert as_set("EVENTBUS_STOP_TIMEOUT", {}) == "EVENTBUS_STOP_TIMEOUT"


def test_a_sink_option_in_another_case_is_warned_about(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # eventbus_sink_webhook_url was read with no word, and errors named
    # EVENTBUS_SINK_WEBHOOK_URL (trial 121).
    from eventbus_core import _env_typos, _log

    monkeypatch.setattr(_log, "_warned", set())
    caplog.set_level(logging.WARNING, logger="eventbus")
    environ = {"eventbus_sink_webhook_url": "http://h/x", "EVENTBUS_SINK_JSONL_PATH": "a"}
    _env_typos.warn_misspelt_sink_options(["webhook", "jsonl"], [], environ)
    assert [r.getMessage() for r in caplog.records] == [
        "eventbus: eventbus_sink_webhook_url is read as EVENTBUS_SINK_WEBHOOK_URL (eventbus "
        "reads names whatever their case, and its messages name EVENTBUS_SINK_WEBHOOK_URL); "
        "programs that read exact names, the Go llm-proxy among them, do not see it: write "
        "EVENTBUS_SINK_WEBHOOK_URL"
    ]


def test_every_settings_keyword_named_after_a_field_goes_to_that_field() -> None:
    # A field's name that is another field's variable in another case went to the other
    # field (redis_stream_max_len to the Go proxy's REDIS_STREAM_MAX_LEN: trial 204).
    from pydantic import BaseModel, Field

    from eventbus_core._plugin_settings import env_vars_of, installed_models, route

    class Clash(BaseModel):
        own_limit: int = Field(default=1, validation_alias="EVENTBUS_OWN_LIMIT")
        go_limit: str | None = Field(default=None, validation_alias="OWN_LIMIT")

    models: list[type[BaseModel]] = [*installed_models(), Clash]
    for model in models:
        for field in model.model_fields:
            _, routed = route({field: 7}, models, ENV_VARS)
            if field in ENV_VARS and model not in routed:
                continue  # core's own field
            assert routed.get(model, {}) == {field: 7}, (model, field, routed)
            assert field in env_vars_of(model)
    assert route({"own_limit": 7}, [Clash], ENV_VARS)[1] == {Clash: {"own_limit": 7}}
    assert route({"OWN_LIMIT": "7"}, [Clash], ENV_VARS)[1] == {Clash: {"go_limit": "7"}}
    assert route({"Own_Limit": 7}, [Clash], ENV_VARS)[1] == {Clash: {"own_limit": 7}}


def test_a_bus_built_by_its_constructor_reads_no_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # configuration.md: constructors take their keywords and defaults only (trial 207); only
    # EventBusSettings() reads (and checks) the environment.
    import redis

    from eventbus_memory import InMemoryEventBus
    from eventbus_redis import RedisEventBus

    monkeypatch.setenv("EVENTBUS_PUBLISH_PATH", "bogus")
    monkeypatch.setenv("OBSERVABILITY_BUFFER_SIZE", "77")
    memory = InMemoryEventBus()
    client = redis.Redis(host="127.0.0.1", port=1)  # never connected: nothing is published
    publisher = RedisEventBus.publisher(client, "t:constructor")
    try:
        assert memory.buffer_size != 77 and publisher.buffer_size != 77
    finally:
        memory.stop(0)
        publisher.stop(0)
        client.close()
    with pytest.raises(SettingsError, match="EVENTBUS_PUBLISH_PATH"):
        EventBusSettings()
