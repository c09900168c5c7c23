"""Settings that belong to a plugin: `PluginSettings`, and what core needs to know about them.

A backend (or sink) plugin registers its own pydantic-settings model together with its factory,
`register(name, factory, settings=MySettings)`. Core never names those fields: `EventBusSettings`
accepts a keyword any installed plugin's model declares and hands it to that model, and `eventbus
plugins`, the CLI's `--backend-option KEY=VALUE` and error messages read the models through the
helpers here.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Final

from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventbus_core._env_typos import spelling_read
from eventbus_core._errors import SettingsError
from eventbus_core._variable_source import ReadsVariablesOnly
from eventbus_core.redact._secrets import RedactedURL, redact_url

__all__ = [
    "PluginSettings",
    "SettingInfo",
    "build_model",
    "cli_flag",
    "describe_settings",
    "env_vars_of",
    "explain",
    "installed_models",
    "is_public_property",
    "keyword_lookup",
    "model_failure",
    "problems_of",
    "route",
]

Problem = tuple[str, str, str]
"""`(field, shown value, reason)`, as in `SettingsError.problems`."""

CLI_FLAG: Final = "cli_flag"
"""Key of a field's `json_schema_extra` naming the command-line flag that overrides it."""


@dataclass(frozen=True)
class SettingInfo:
    """One setting as `eventbus plugins` and the docs show it."""

    field: str
    env_var: str
    default: str
    description: str
    flag: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {
            "field": self.field,
            "env_var": self.env_var,
            "default": self.default,
            "description": self.description,
            "flag": self.flag,
        }


def env_vars_of(model: type[BaseSettings]) -> dict[str, str]:
    """Field name to the environment variable that sets it, for every field of `model`."""
    found = {}
    for name, info in model.model_fields.items():
        alias = info.validation_alias
        prefix = str(model.model_config.get("env_prefix") or "")
        found[name] = alias if isinstance(alias, str) else (prefix + name).upper()
    return found


def declared_flag(info: FieldInfo) -> object | None:
    """What a plugin declared as a field's `cli_flag`, whatever it is (None if nothing)."""
    extra = info.json_schema_extra
    return extra.get(CLI_FLAG) if isinstance(extra, dict) else None


def cli_flag(info: FieldInfo) -> str | None:
    """The command-line flag a plugin declared for a field (`json_schema_extra={"cli_flag":
    "--redis-url"}`), or None (also for a declared value that is no flag, such as `"url"`)."""
    flag = declared_flag(info)
    # A name argparse reads as one flag: `--x=3` would be flag `--x` given 3 (trial 180).
    return flag if isinstance(flag, str) and _FLAG.fullmatch(flag) else None


_FLAG: Final = re.compile(r"--[A-Za-z0-9][A-Za-z0-9_-]*")


def describe_settings(model: type[BaseSettings]) -> list[SettingInfo]:
    """Each field of `model`: its variable, default, description and flag."""
    variables = env_vars_of(model)
    rows = []
    for name, info in model.model_fields.items():
        default = "" if info.is_required() else info.get_default(call_default_factory=True)
        shown = "" if default is None else str(default)
        if isinstance(default, float) and default.is_integer():
            shown = str(int(default))  # 86400, as the docs' tables write it, not 86400.0
        rows.append(
            SettingInfo(name, variables[name], shown, info.description or "", cli_flag(info))
        )
    return rows


def _is(annotation: Any, kind: type) -> bool:
    if annotation is kind:
        return True
    return any(_is(arg, kind) for arg in typing.get_args(annotation))


def problems_of(exc: ValidationError, model: type[BaseSettings]) -> list[Problem]:
    """Each invalid field of `model` as `(field, shown value, reason)`, never showing a secret:
    a `RedactedURL` has its password masked and a `SecretStr` is not shown at all."""
    variables = env_vars_of(model)
    fields = {variable.lower(): field for field, variable in variables.items()}
    # pydantic names a field by its variable (from the environment) or by its name (a keyword),
    # as spelt there: that spelling first, for a name that is another field's variable in
    # another case (redis_stream_max_len, REDIS_STREAM_MAX_LEN: trial 204).
    exact = {variable: field for field, variable in variables.items()} | {
        field: field for field in model.model_fields
    }
    found = []
    for err in exc.errors():
        if not err["loc"]:  # a check across settings: its message names the variables
            found.append(("", "", str(err["msg"]).removeprefix("Value error, ")))
            continue
        loc = str(err["loc"][0])
        field = exact.get(loc) or fields.get(loc.lower(), loc)
        given = err.get("input")
        info = model.model_fields.get(field)
        annotation = info.annotation if info is not None else None
        if isinstance(given, dict):
            shown = ""
        elif _is(annotation, SecretStr):
            shown = "'***'"
        elif _is(annotation, RedactedURL) and isinstance(given, str):
            shown = repr(RedactedURL(given))
        else:
            shown = repr(given)
        found.append((field, shown, str(err["msg"]).removeprefix("Value error, ")))
    return found


def as_set(variable: str, environ: Mapping[str, str] | None = None) -> str:
    """`variable` as a message names it: as the environment spells it where only another case
    of it is set (`redis_url (read as REDIS_URL)`: names are read whatever their case, and a
    message naming REDIS_URL sent the user to a variable never set, trial 119)."""
    # Set under several cases, the spelling read is the one the error must name (trial 121).
    spelt = spelling_read(variable, os.environ if environ is None else environ)
    if spelt is None or spelt == variable:
        return variable
    return f"{spelt} (read as {variable})"


def explain(problems: list[Problem], variables: dict[str, str], what: str = "eventbus") -> str:
    """The message of a `SettingsError`: each problem under its environment variable."""
    detail = "; ".join(
        f"{as_set(variables.get(field, field))}{'=' + shown if shown else ''}: {reason}"
        if field
        else reason
        for field, shown, reason in problems
    )
    return f"invalid {what} setting: {detail} (fix the environment variable or the argument)"


class PluginSettings(ReadsVariablesOnly, BaseSettings):
    """A base for a plugin's settings model (optional: any pydantic-settings model works).

    Give each field a `validation_alias` (its environment variable) and a `description`; both
    are what `eventbus plugins` and errors show. `json_schema_extra={"cli_flag": "--my-flag"}`
    on a field adds that flag to the commands that open a bus.

    Raises:
        SettingsError: (a `ValueError`) a value is invalid; the message names its variable.
    """

    model_config = SettingsConfigDict(
        populate_by_name=True,
        extra="ignore",
        case_sensitive=False,
        env_nested_delimiter=None,
        allow_inf_nan=False,  # as EventBusSettings: no setting has a use for inf or nan
    )

    settings_label: ClassVar[str] = "eventbus"
    """What the error message calls these settings, e.g. `redis backend`."""

    default_backend_when_set: ClassVar[Mapping[str, str]] = MappingProxyType({})
    """Field name to a backend the plugin registers with this model: with `LLM_PROXY_EVENT_BUS`
    unset and that field's variable set (not blank) in the environment, that backend is the
    default instead of `memory`, with a warning (see `eventbus_core._backend_choice`). For a
    variable that means the backend wherever it is read (the Go llm-proxy's `REDIS_ADDR`: the
    proxy then writes to Redis streams), not for one set for other reasons (a cache's
    `REDIS_URL`)."""

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            problems = problems_of(exc, type(self))
            raise SettingsError(
                explain(problems, env_vars_of(type(self)), self.settings_label), problems=problems
            ) from None

    def env_var(self, field: str) -> str:
        """Return the environment variable that sets `field`."""
        return env_vars_of(type(self))[field]


def installed_models() -> list[type[BaseSettings]]:
    """The settings models of the installed plugins (the process-wide registry)."""
    from eventbus_core._plugins import get_registry

    return list(get_registry().settings_models())


def keyword_lookup(variables: dict[str, str]) -> Callable[[str], str | None]:
    """The field a keyword names (its name or variable), or None: as spelt first, then in any
    case with field names first. A field's name can be another field's variable in another
    case: the keyword redis_stream_max_len went to the Go proxy's REDIS_STREAM_MAX_LEN, a text
    field, and was refused there (trial 204)."""
    exact = {v: n for n, v in variables.items()} | {n: n for n in variables}
    folded = {v.lower(): n for n, v in variables.items()} | {n.lower(): n for n in variables}
    return lambda key: exact.get(key) or folded.get(key.lower())


def route(
    values: dict[str, Any], models: list[type[BaseSettings]], core_vars: dict[str, str]
) -> tuple[dict[str, Any], dict[type[BaseSettings], dict[str, Any]]]:
    """Split keywords into core's and each plugin model's (by field name or variable).

    Raises:
        SettingsError: a keyword that neither core nor any installed plugin declares.
    """
    core: dict[str, Any] = {}
    routed: dict[type[BaseSettings], dict[str, Any]] = {}
    unknown = []
    core_field = keyword_lookup(core_vars)
    for key, value in values.items():
        if (field := core_field(key)) is not None:
            core[field] = value
            continue
        found = False
        for model in models:
            if (field := keyword_lookup(env_vars_of(model))(key)) is not None:
                routed.setdefault(model, {})[field] = value
                found = True
        if not found:
            unknown.append(key)
    if unknown:
        listed = ", ".join(repr(k) for k in unknown)
        raise SettingsError(
            f"unknown eventbus setting {listed}: neither core nor an installed plugin declares "
            "it (see 'eventbus plugins' for each plugin's settings, and docs/configuration.md); "
            "if it belongs to a backend plugin, install that plugin",
            problems=[(k, "", "unknown setting") for k in unknown],
        )
    return core, routed


def build_model(model: type[BaseSettings], values: dict[str, Any]) -> BaseSettings:
    """`model(**values)`, a validation error as a `SettingsError` naming the variables."""
    try:
        return model(**values)
    except ValidationError as exc:
        problems = problems_of(exc, model)
        raise SettingsError(explain(problems, env_vars_of(model)), problems=problems) from None


def model_failure(exc: BaseException) -> str:
    """Why a plugin's settings model failed with something other than a validation error (a
    broken plugin), fit to show: type and message, URL credentials masked."""
    return f"{type(exc).__name__}: {redact_url(str(exc))}"


def is_public_property(instance: BaseSettings, name: str) -> bool:
    """`name` is a property the plugin's model adds (such as `redis_url_source`)."""
    return isinstance(getattr(type(instance), name, None), property) and not hasattr(
        BaseSettings, name
    )
