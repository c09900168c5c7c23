"""Settings that belong to a plugin: registered with its backend, accepted by EventBusSettings
(keywords, attributes, environment), shown by `eventbus plugins`, set by `--backend-option`."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import pytest
from pydantic import Field, model_validator

from eventbus_core import (
    ENV_VARS,
    EventBusSettings,
    PluginRegistry,
    PluginSettings,
    SettingsError,
    all_env_vars,
    create_bus,
    hookimpl,
)
from eventbus_core import _plugins as plugins_module
from eventbus_core.cli import _plugins_cmd as plugins_cmd
from eventbus_core.cli import main
from eventbus_core.testing import RecordingBus


class ToySettings(PluginSettings):
    settings_label = "toy backend"

    toy_depth: int = Field(
        default=3, ge=1, validation_alias="EVENTBUS_TOY_DEPTH", description="How deep."
    )
    toy_name: str = Field(
        default="toy",
        validation_alias="EVENTBUS_TOY_NAME",
        description="What it is called.",
        json_schema_extra={"cli_flag": "--toy-name"},
    )


class ToyPlugin:
    def __init__(self) -> None:
        self.built: list[EventBusSettings] = []

    @hookimpl
    def eventbus_register_backends(self, register: Any) -> None:
        register("toy", self.build, settings=ToySettings)

    def build(self, settings: EventBusSettings) -> RecordingBus:
        self.built.append(settings)
        return RecordingBus(settings.buffer_size)


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> ToyPlugin:
    """The process-wide registry: the installed plugins and the toy backend."""
    plugin = ToyPlugin()
    monkeypatch.setattr(plugins_module, "_registry", PluginRegistry(plugins=[plugin]))
    return plugin


def test_core_names_no_plugin_setting() -> None:
    assert not [f for f in EventBusSettings.model_fields if f.startswith(("redis", "nats"))]
    assert not [v for v in ENV_VARS.values() if "REDIS" in v or "NATS" in v]
    # ... yet every installed plugin's settings are known, e.g. to the docs test.
    assert {"REDIS_URL", "EVENTBUS_REDIS_GROUP", "NATS_URL"} <= set(all_env_vars().values())


def test_keywords_and_attributes_reach_the_plugin(toy: ToyPlugin) -> None:
    settings = EventBusSettings(backend="toy", toy_depth=7)
    assert (settings.toy_depth, settings.toy_name) == (7, "toy")
    assert settings.plugin_settings(ToySettings).toy_depth == 7
    assert "toy_depth" in settings.model_fields_set
    assert "toy_depth=7" in repr(settings)
    assert settings.env_var("toy_depth") == "EVENTBUS_TOY_DEPTH"
    # The variable's name works as a keyword too, as for core's settings.
    assert EventBusSettings(EVENTBUS_TOY_DEPTH=9).toy_depth == 9
    copied = settings.model_copy(update={"toy_depth": 8, "buffer_size": 5})
    assert (copied.toy_depth, copied.buffer_size, settings.toy_depth) == (8, 5, 7)
    with pytest.raises(AttributeError):
        _ = settings.toy_dpeth
    settings.toy_name = "renamed"
    assert settings.plugin_settings(ToySettings).toy_name == "renamed"


def test_the_environment_is_read_and_errors_name_the_variable(
    toy: ToyPlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTBUS_TOY_DEPTH", "4")
    assert EventBusSettings().toy_depth == 4
    monkeypatch.setenv("EVENTBUS_TOY_DEPTH", "0")
    monkeypatch.setenv("OBSERVABILITY_BUFFER_SIZE", "-1")
    with pytest.raises(SettingsError) as info:
        EventBusSettings()
    text = str(info.value)
    assert "EVENTBUS_TOY_DEPTH='0'" in text and "OBSERVABILITY_BUFFER_SIZE" in text
    assert {p[0] for p in info.value.problems} == {"toy_depth", "buffer_size"}


def test_a_setting_is_read_from_its_variable_only_not_its_field_name(
    toy: ToyPlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `TOY_DEPTH` (the field's name, in any case) set the plugin's setting without a word, and
    # an error then named EVENTBUS_TOY_DEPTH, which nobody set (trial 125: NATS_STREAM); core's
    # `BUFFER_SIZE` did the same.
    monkeypatch.setenv("TOY_DEPTH", "0")
    monkeypatch.setenv("toy_name", "from-the-field-name")
    monkeypatch.setenv("BUFFER_SIZE", "7")
    settings = EventBusSettings(backend="toy")
    assert (settings.toy_depth, settings.toy_name, settings.buffer_size) == (3, "toy", 1000)
    assert ToySettings().toy_depth == 3
    # The variable is still read in any case, and keywords by field name still work.
    monkeypatch.setenv("eventbus_toy_depth", "5")
    assert EventBusSettings(backend="toy", buffer_size=9).toy_depth == 5
    assert EventBusSettings(backend="toy", buffer_size=9).buffer_size == 9


def test_an_unknown_keyword_is_refused_by_name(toy: ToyPlugin) -> None:
    with pytest.raises(SettingsError, match="unknown eventbus setting 'toy_colour'"):
        EventBusSettings(toy_colour="red")


def test_the_factory_gets_the_plugin_settings(toy: ToyPlugin) -> None:
    bus = create_bus(EventBusSettings(backend="toy", toy_name="x"))
    bus.stop()
    assert toy.built[0].plugin_settings(ToySettings).toy_name == "x"


def test_register_refuses_settings_that_are_not_a_model() -> None:
    class Broken:
        @hookimpl
        def eventbus_register_backends(self, register: Any) -> None:
            register("broken", lambda s: None, settings=dict)

    with pytest.warns(match="pydantic-settings model"):
        registry = PluginRegistry(load_entry_points=False, plugins=[Broken()])
    assert "broken" not in registry.backends


def test_plugins_command_lists_each_plugins_settings(
    toy: ToyPlugin, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "settings of redis, redis-streams" in out
    assert "EVENTBUS_REDIS_GROUP" in out and "llm-proxy-dispatchers" in out
    assert "NATS_URL" in out
    assert main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    redis = next(p for p in data["plugins"] if p["name"] == "redis")
    url = next(s for s in redis["settings"] if s["field"] == "redis_url")
    assert (url["env_var"], url["flag"]) == ("REDIS_URL", "--redis-url")


@pytest.mark.parametrize(
    "argv",
    [
        ["--backend-option", "EVENTBUS_TOY_DEPTH=5"],
        ["--backend-option", "toy_depth=5"],
    ],
)
def test_backend_option_sets_a_plugin_setting(
    toy: ToyPlugin, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["publish", "--backend", "toy", *argv, "--toy-name", "named"]) == 0
    (settings,) = toy.built
    assert (settings.toy_depth, settings.toy_name) == (5, "named")


def test_backend_option_errors_name_what_was_typed(
    toy: ToyPlugin, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["publish", "--backend", "toy", "--backend-option", "EVENTBUS_TOY_DEPTH=0"]) == 2
    assert "--backend-option EVENTBUS_TOY_DEPTH" in capsys.readouterr().err
    assert main(["publish", "--backend", "toy", "--backend-option", "nope=1"]) == 2
    err = capsys.readouterr().err
    assert "--backend-option names 'nope'" in err and "toy_depth" in err
    # A credential's name typed: the message's list of settings was masked as its "value".
    assert main(["publish", "--backend", "toy", "--backend-option", "password=x"]) == 2
    err = capsys.readouterr().err
    assert "--backend-option names 'password'" in err and "toy_depth" in err, err
    assert main(["publish", "--backend", "toy", "--backend-option", "novalue"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_the_redis_settings_live_in_the_redis_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    from eventbus_redis import RedisSettings

    settings = EventBusSettings(redis_group="g")
    assert settings.plugin_settings(RedisSettings).redis_group == "g"
    assert RedisSettings().redis_group == "llm-proxy-dispatchers"
    monkeypatch.setenv("REDIS_ADDR", "u:hunter2@nohost")
    with pytest.raises(SettingsError, match="REDIS_ADDR") as info:
        EventBusSettings()
    assert "hunter2" not in str(info.value)


class ExplodingSettings(PluginSettings):
    """A broken plugin's settings: the model raises something other than a validation error."""

    boom_level: int = Field(default=1, validation_alias="EVENTBUS_BOOM_LEVEL", description="x")

    @model_validator(mode="after")
    def _explode(self) -> ExplodingSettings:
        raise RuntimeError("settings model exploded, secret=hunter2hunter2")


class BackendWith:
    """A plugin registering backend `name` (a RecordingBus) with the settings `model`."""

    def __init__(self, name: str, model: type[PluginSettings]) -> None:
        self.name = name
        self.model = model

    @hookimpl
    def eventbus_register_backends(self, register: Any) -> None:
        register(
            self.name, lambda settings: RecordingBus(settings.buffer_size), settings=self.model
        )


def add_plugin(monkeypatch: pytest.MonkeyPatch, plugin: object) -> None:
    """The installed plugins and `plugin`, for the library and for `eventbus plugins` alike."""
    registry = PluginRegistry(plugins=[plugin])
    monkeypatch.setattr(plugins_module, "_registry", registry)
    monkeypatch.setattr(plugins_cmd, "PluginRegistry", lambda: registry)


def test_a_plugin_whose_settings_model_raises_leaves_the_other_backends_working(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Like a plugin that fails to import: the default backend (and any other) still works; the
    # broken one is refused when selected, naming its model, and `eventbus plugins` says so.
    monkeypatch.delenv("LLM_PROXY_EVENT_BUS", raising=False)
    add_plugin(monkeypatch, BackendWith("boom", ExplodingSettings))
    bus = create_bus()
    assert bus.stats().published == 0
    bus.stop()
    with pytest.raises(SettingsError, match=r"ExplodingSettings\).*RuntimeError: settings model"):
        create_bus(EventBusSettings(backend="boom"))
    assert main(["plugins"]) == 1
    out = capsys.readouterr().out
    assert "its settings model raised RuntimeError: settings model exploded" in out
    # Masked as its log line is (the table showed it in clear, helper-112).
    assert "hunter2hunter2" not in out and "secret=[REDACTED]" in out
    assert main(["plugins", "--json"]) == 1
    assert "hunter2hunter2" not in capsys.readouterr().out


class NeedySettings(PluginSettings):
    settings_label = "needy backend"

    needy_url: str = Field(validation_alias="EVENTBUS_NEEDY_URL", description="Required.")


def test_a_plugins_own_errors_carry_its_label_and_eventbus_plugins_shows_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A field without a default fails every backend's settings while its variable is unset
    # (every installed plugin's settings are checked): the message says whose setting it is,
    # and `eventbus plugins` shows the plugin with that problem (exit 1).
    monkeypatch.delenv("EVENTBUS_NEEDY_URL", raising=False)
    add_plugin(monkeypatch, BackendWith("needy", NeedySettings))
    with pytest.raises(SettingsError, match=r"^invalid needy backend setting: EVENTBUS_NEEDY_URL"):
        EventBusSettings()
    assert main(["plugins"]) == 1
    assert "settings: invalid needy backend setting: EVENTBUS_NEEDY_URL" in capsys.readouterr().out
    monkeypatch.setenv("EVENTBUS_NEEDY_URL", "x")
    assert EventBusSettings(backend="needy").needy_url == "x"


class TwinSettings(PluginSettings):
    """Another plugin's model declaring the toy's flag, and one of eventbus's own."""

    settings_label = "twin backend"

    toy_name: str = Field(
        default="twin",
        validation_alias="EVENTBUS_TWIN_NAME",
        json_schema_extra={"cli_flag": "--toy-name"},
    )
    twin_backend: str = Field(
        default="x",
        validation_alias="EVENTBUS_TWIN_BACKEND",
        json_schema_extra={"cli_flag": "--backend"},
    )
    twin_mode: str = Field(
        default="x",
        validation_alias="EVENTBUS_TWIN_MODE",
        json_schema_extra={"cli_flag": "twin-mode"},  # no leading --
    )
    twin_level: str = Field(
        default="x",
        validation_alias="EVENTBUS_TWIN_LEVEL",
        json_schema_extra={"cli_flag": "--twin-level=3"},  # argparse: --twin-level given 3
    )


class TwinPlugin:
    @hookimpl
    def eventbus_register_backends(self, register: Any) -> None:
        register("twin", lambda settings: RecordingBus(), settings=TwinSettings)


def test_a_flag_another_setting_or_eventbus_has_is_not_offered_and_said(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two plugins declaring --queue-url broke every command, `eventbus plugins` and `--version`
    # included, with argparse's traceback; a plugin's --backend was dropped without a word
    # (trial 119).
    registry = PluginRegistry(plugins=[ToyPlugin(), TwinPlugin()])
    monkeypatch.setattr(plugins_module, "_registry", registry)
    # `eventbus plugins` loads a registry of its own, as installed: the same plugins here.
    fresh = PluginRegistry(plugins=[ToyPlugin(), TwinPlugin()])
    monkeypatch.setattr(plugins_cmd, "PluginRegistry", lambda: fresh)
    code = main(["plugins"])
    out = capsys.readouterr().out
    assert code == 1
    twin = next(info for info in registry.plugins.values() if "twin" in info.backends)
    assert twin.problems == [
        "flag --toy-name (of EVENTBUS_TWIN_NAME) not offered: another setting has it; set "
        "EVENTBUS_TWIN_NAME, or pass --backend-option EVENTBUS_TWIN_NAME=VALUE",
        "flag --backend (of EVENTBUS_TWIN_BACKEND) not offered: an option of eventbus has it; "
        "set EVENTBUS_TWIN_BACKEND, or pass --backend-option EVENTBUS_TWIN_BACKEND=VALUE",
        # Ignored without a word before (trial 176).
        "flag 'twin-mode' (of EVENTBUS_TWIN_MODE) not offered: a flag is -- then letters, "
        "digits, - or _ (such as --my-setting); set EVENTBUS_TWIN_MODE, or pass "
        "--backend-option EVENTBUS_TWIN_MODE=VALUE",
        "flag '--twin-level=3' (of EVENTBUS_TWIN_LEVEL) not offered: a flag is -- then letters, "
        "digits, - or _ (such as --my-setting); set EVENTBUS_TWIN_LEVEL, or pass "
        "--backend-option EVENTBUS_TWIN_LEVEL=VALUE",
    ]
    assert "PROBLEM" in out
    # The settings table does not advertise a flag that was not offered (trial 176), nor
    # does --json (trial 180).
    assert "(flag --backend)" not in out and "(flag --backend not offered" in out
    assert main(["plugins", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    settings = {
        s["env_var"]: s for p in data["plugins"] if "twin" in p["backends"] for s in p["settings"]
    }
    refused = settings["EVENTBUS_TWIN_BACKEND"]
    assert (refused["flag"], refused["flag_not_offered"]) == (None, "--backend")
    # The first plugin keeps its flag, and every command still works.
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["publish", "--backend", "toy", "--toy-name", "t", "-q"]) == 0


def test_whole_number_defaults_are_shown_as_the_docs_write_them() -> None:
    # `eventbus plugins` printed 86400.0 and 120.0 where every settings table says 86400 and
    # 120 (trial 131); a fraction stays as it is.
    from eventbus_core import describe_settings
    from eventbus_redis._settings import RedisSettings

    shown = {row.env_var: row.default for row in describe_settings(RedisSettings)}
    assert shown["EVENTBUS_REDIS_TTL"] == "86400"

    class Fractions(PluginSettings):
        wait: float = Field(default=0.25, validation_alias="T_WAIT", description="Wait.")

    assert [row.default for row in describe_settings(Fractions)] == ["0.25"]


def test_variables_only_another_backend_reads_are_named_when_the_default_backend_is_used(
    toy: ToyPlugin, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Set up as the Go proxy is (REDIS_ADDR) with LLM_PROXY_EVENT_BUS unset, a process
    # published into the in-memory default without a word (trial 154).
    from eventbus_core import _log

    monkeypatch.setattr(_log, "_warned", set())
    monkeypatch.delenv(ENV_VARS["backend"], raising=False)
    monkeypatch.setenv("EVENTBUS_TOY_DEPTH", "5")
    with caplog.at_level("WARNING", logger="eventbus"):
        create_bus().stop()
        create_bus().stop()  # once per process
    warned = [r.getMessage() for r in caplog.records if "EVENTBUS_TOY_DEPTH" in r.getMessage()]
    assert warned == [
        "LLM_PROXY_EVENT_BUS is not set, so the default backend 'memory' is used, which ignores "
        "EVENTBUS_TOY_DEPTH (set: read by the toy backend): to use it, set LLM_PROXY_EVENT_BUS "
        "to 'toy'; to keep 'memory' and end this warning, set LLM_PROXY_EVENT_BUS=memory"
    ]
    caplog.clear()
    # A keyword of the settings is no different (review 158).
    monkeypatch.setattr(_log, "_warned", set())
    monkeypatch.delenv("EVENTBUS_TOY_DEPTH")
    with caplog.at_level("WARNING", logger="eventbus"):
        create_bus(EventBusSettings(toy_name="other")).stop()
    assert [r.getMessage() for r in caplog.records if "EVENTBUS_TOY_NAME" in r.getMessage()]
    caplog.clear()
    # Chosen, not defaulted: the choice is the user's, and nothing is said.
    monkeypatch.setattr(_log, "_warned", set())
    monkeypatch.setenv(ENV_VARS["backend"], "memory")
    with caplog.at_level("WARNING", logger="eventbus"):
        create_bus().stop()
    assert not [r for r in caplog.records if "EVENTBUS_TOY_DEPTH" in r.getMessage()]


class ChoosingSettings(PluginSettings):
    default_backend_when_set: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"choosing_addr": "choosing"}
    )

    choosing_addr: str | None = Field(
        default=None, validation_alias="T_CHOOSING_ADDR", description="Where it is."
    )


class RivalSettings(PluginSettings):
    default_backend_when_set: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"rival_addr": "rival"}
    )

    rival_addr: str | None = Field(
        default=None, validation_alias="T_RIVAL_ADDR", description="Where it is."
    )


class ChoosingPlugins:
    @hookimpl
    def eventbus_register_backends(self, register: Any) -> None:
        register("choosing", lambda s: RecordingBus(s.buffer_size), settings=ChoosingSettings)
        register("rival", lambda s: RecordingBus(s.buffer_size), settings=RivalSettings)


def test_a_plugin_s_setting_can_select_its_backend_when_none_is_chosen(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The mechanism behind REDIS_ADDR selecting redis-streams (issue 9): declared by a plugin,
    # core naming no backend; the user's choice always wins, and rivals leave the default.
    from eventbus_core import _log

    monkeypatch.setattr(plugins_module, "_registry", PluginRegistry(plugins=[ChoosingPlugins()]))
    monkeypatch.setattr(_log, "_warned", set())
    monkeypatch.setenv("T_CHOOSING_ADDR", "here")
    settings = EventBusSettings()
    assert (settings.backend, settings.backend_chosen_by) == ("choosing", ("T_CHOOSING_ADDR",))
    with caplog.at_level("WARNING", logger="eventbus"):
        create_bus(settings).stop()
    assert [r.getMessage() for r in caplog.records] == [
        "LLM_PROXY_EVENT_BUS is not set and T_CHOOSING_ADDR is, which selects backend "
        "'choosing' (its plugin's default for that setting): set LLM_PROXY_EVENT_BUS=choosing "
        "to keep it and end this warning, LLM_PROXY_EVENT_BUS=rival (its plugin's other "
        "backend) where the software that shares T_CHOOSING_ADDR uses that one, or "
        "LLM_PROXY_EVENT_BUS=memory to keep events inside this process"
    ]
    assert EventBusSettings(backend="memory").backend == "memory"
    monkeypatch.setenv(ENV_VARS["backend"], "rival")
    assert (EventBusSettings().backend, EventBusSettings().backend_chosen_by) == ("rival", ())
    monkeypatch.delenv(ENV_VARS["backend"])
    monkeypatch.setenv("T_RIVAL_ADDR", "there")
    assert EventBusSettings().backend == "memory"  # two plugins, two backends: neither
    monkeypatch.delenv("T_RIVAL_ADDR")
    monkeypatch.setenv("T_CHOOSING_ADDR", "")
    assert EventBusSettings().backend == "memory"  # empty is unset
    monkeypatch.setenv("T_CHOOSING_ADDR", "   ")
    assert EventBusSettings().backend == "memory"  # blank too, as the plugins read it
    # A keyword is a choice made in code, where backend= is given the same way: it selects
    # nothing (a command-line option neither: review 187).
    monkeypatch.delenv("T_CHOOSING_ADDR")
    assert EventBusSettings(choosing_addr="here").backend == "memory"
    # A copy given the variable's field anew is no longer chosen by the environment.
    monkeypatch.setenv("T_CHOOSING_ADDR", "here")
    copied = EventBusSettings().model_copy(update={"choosing_addr": None})
    assert (copied.backend, copied.backend_chosen_by) == ("memory", ())
    copied = EventBusSettings().model_copy(update={"buffer_size": 5})
    assert (copied.backend, copied.backend_chosen_by) == ("choosing", ("T_CHOOSING_ADDR",))


class WrongDeclarations(PluginSettings):
    default_backend_when_set: ClassVar[Any] = ["wrong_addr"]

    wrong_addr: str | None = Field(default=None, validation_alias="T_WRONG_ADDR", description="A.")


class ForeignDeclarations(PluginSettings):
    default_backend_when_set: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"foreign_addr": "choosing", "nofield": "foreign", "foreign_other": "In-Memory"}
    )

    foreign_addr: str | None = Field(
        default=None, validation_alias="T_FOREIGN_ADDR", description="A."
    )
    foreign_other: str | None = Field(
        default=None, validation_alias="T_FOREIGN_OTHER", description="B."
    )


class WrongPlugins:
    @hookimpl
    def eventbus_register_backends(self, register: Any) -> None:
        register("choosing", lambda s: RecordingBus(s.buffer_size), settings=ChoosingSettings)
        register("wrong", lambda s: RecordingBus(s.buffer_size), settings=WrongDeclarations)
        register("foreign", lambda s: RecordingBus(s.buffer_size), settings=ForeignDeclarations)


def test_a_wrong_declaration_is_ignored_with_a_warning_and_the_rest_works(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A list made every EventBusSettings() raise AttributeError, whichever backend; a backend
    # of another plugin (or none) was taken (review 187).
    from eventbus_core import _log

    monkeypatch.setattr(plugins_module, "_registry", PluginRegistry(plugins=[WrongPlugins()]))
    monkeypatch.setattr(_log, "_warned", set())
    for name in ("T_WRONG_ADDR", "T_FOREIGN_ADDR", "T_FOREIGN_OTHER"):
        monkeypatch.setenv(name, "x")
    with caplog.at_level("WARNING", logger="eventbus"):
        assert EventBusSettings().backend == "memory"
    said = " | ".join(r.getMessage() for r in caplog.records)
    assert "WrongDeclarations) declare default_backend_when_set wrongly (it is a list" in said
    assert "'choosing' is not a backend its plugin registers with these settings" in said
    assert "'nofield' is not one of its fields" in said
    assert "'In-Memory' is not a backend its plugin registers" in said
    monkeypatch.setenv("T_CHOOSING_ADDR", "here")
    assert EventBusSettings().backend == "choosing"  # the right declaration still holds
    # `eventbus plugins` shows the plugin's problems (it was listed as ok, trial 188).
    problems = [p for info in plugins_module.get_registry().plugins.values() for p in info.problems]
    assert sum("default_backend_when_set of" in p for p in problems) == 4, problems
    assert any("WrongDeclarations is ignored: it is a list" in p for p in problems), problems


def test_an_address_of_a_backend_not_installed_is_named_with_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Without eventbus-redis, REDIS_ADDR (the Go proxy's environment) gave the in-memory bus
    # with nothing said anywhere: a proxy so deployed published nowhere (trial 186).
    import eventbus_memory.plugin
    from eventbus_core import _log

    registry = PluginRegistry(load_entry_points=False, plugins=[eventbus_memory.plugin])
    monkeypatch.setattr(plugins_module, "_registry", registry)
    monkeypatch.setattr(_log, "_warned", set())
    monkeypatch.setenv("REDIS_ADDR", "127.0.0.1:6379")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    with caplog.at_level("WARNING", logger="eventbus"):
        create_bus().stop()
        create_bus().stop()  # once per process
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1, said
    assert said[0].startswith(
        "REDIS_ADDR, REDIS_URL are set, but eventbus-redis, whose backends read them, is not "
        "installed: LLM_PROXY_EVENT_BUS is not set, so the default backend 'memory' is used and "
        "events stay in this process; install it (pip install "
    ), said
    assert said[0].endswith("or set LLM_PROXY_EVENT_BUS=memory to end this warning")
    caplog.clear()
    monkeypatch.setattr(_log, "_warned", set())
    monkeypatch.setenv("LLM_PROXY_EVENT_BUS", "memory")  # chosen: nothing to say
    with caplog.at_level("WARNING", logger="eventbus"):
        create_bus().stop()
    assert caplog.records == []
