"""Command-line options that belong to a plugin: its declared flags and `--backend-option`.

A plugin's settings model may give a field a flag (`json_schema_extra={"cli_flag":
"--redis-url"}`): the commands that open a bus then accept it, so the flag exists exactly when
the plugin is installed. Any other field of an installed plugin's model is set for one run with
`--backend-option KEY=VALUE`, where KEY is the field or its environment variable.
"""

from __future__ import annotations

import argparse
import difflib
import warnings
from typing import Any, Final

from eventbus_core._plugin_settings import cli_flag, declared_flag, env_vars_of, keyword_lookup
from eventbus_core._plugins import PluginInfo, PluginLoadWarning, PluginRegistry, get_registry
from eventbus_core._settings import all_env_vars

__all__ = [
    "OPTION",
    "add_plugin_options",
    "flag_problems",
    "flag_value",
    "installed_backends",
    "plugin_flags",
    "plugin_override_env",
    "plugin_overrides",
]

OPTION: Final = "--backend-option"
"""The flag that sets any backend plugin's setting for one run (`KEY=VALUE`)."""


def _registry() -> PluginRegistry:
    # The parser is built before any command runs, also for `eventbus plugins`, which shows
    # load errors in its table: a broken plugin is not warned about while flags are collected.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)
        return get_registry()


def installed_backends() -> list[str]:
    """The names of the installed backends, for help texts."""
    return sorted(_registry().backends)


def flag_value(value: Any, flag: str, variable: str, *, empty_is_a_value: bool = False) -> Any:
    """`value` as a flag gave it; an empty one (blank) is refused, naming `flag` and the
    `variable` it overrides, unless `empty_is_a_value` (then it is ""). Ignoring it fell back
    to the environment or a default without a word (`--consumer-name ''` gave a name of host
    and pid, not the last run's; `--redis-url ''` the environment's URL).

    Raises:
        UsageError: it is empty.
    """
    if not isinstance(value, str) or value.strip():
        return value
    if empty_is_a_value:
        # "" is that value; a blank one (" ") is refused by the setting itself, as its
        # variable's is (it had meant "none" here and a file named " " there, trial 169).
        return value
    from eventbus_core.cli._ops import UsageError

    raise UsageError(f"{flag} is empty: give a value, or leave the flag out to use {variable}")


def plugin_flags() -> dict[str, str]:
    """Settings field to the flag an installed plugin declared for it (e.g. `--redis-url`)."""
    flags: dict[str, str] = {}
    for model in _registry().settings_models():
        for name, info in model.model_fields.items():
            flag = cli_flag(info)
            if flag is not None and flag not in flags.values():
                flags.setdefault(name, flag)
    return flags


def add_plugin_options(group: Any) -> None:
    """Add the installed plugins' flags and `--backend-option KEY=VALUE` to `group`."""
    registry = _registry()
    declared = plugin_flags()
    added: set[str] = set()
    for model, plugin in registry.settings_models().items():
        variables = env_vars_of(model)
        for name, info in model.model_fields.items():
            flag = cli_flag(info)
            if flag is None:
                malformed = declared_flag(info)
                if malformed is not None:  # was ignored without a word (trial 176)
                    _flag_not_offered(
                        registry,
                        plugin,
                        repr(malformed),
                        variables[name],
                        "a flag is -- then letters, digits, - or _ (such as --my-setting)",
                    )
                continue
            if declared.get(name) != flag or flag in added:
                why = "another setting has it"
                _flag_not_offered(registry, plugin, flag, variables[name], why)
                continue
            try:
                group.add_argument(
                    flag,
                    dest=name,
                    metavar=name.rsplit("_", 1)[-1].upper(),
                    help=f"{(info.description or name).rstrip('.')}, overriding "
                    f"{variables[name]} (from plugin {plugin})",
                )
            except argparse.ArgumentError:  # an option of the command's own (`--backend`)
                why = "an option of eventbus has it"
                _flag_not_offered(registry, plugin, flag, variables[name], why)
                continue
            added.add(flag)
    group.add_argument(
        OPTION,
        action="append",
        dest="backend_options",
        metavar="KEY=VALUE",
        help="set a backend plugin's setting for this run, KEY being the setting's name or "
        "its environment variable; repeatable; 'eventbus plugins' lists each plugin's settings",
    )


_NOT_OFFERED = "not offered: "


def flag_problems(info: PluginInfo) -> list[str]:
    """The problems `_flag_not_offered` recorded for a plugin."""
    return [p for p in info.problems if p.startswith("flag ") and _NOT_OFFERED in p]


def _flag_not_offered(
    registry: PluginRegistry, plugin: str, flag: str, variable: str, why: str
) -> None:
    """A plugin's flag that another setting or eventbus itself has, or that is no flag: not
    offered (two plugins declaring `--queue-url` broke every command with argparse's
    traceback, trial 119), and said once, as a problem `eventbus plugins` shows."""
    info = registry.plugins.get(plugin)
    problem = (
        f"flag {flag} (of {variable}) {_NOT_OFFERED}{why}; set {variable}, or pass "
        f"{OPTION} {variable}=VALUE"
    )
    if info is not None and problem not in info.problems:
        info.problems.append(problem)


def plugin_overrides(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """The plugin settings given on the command line, as `EventBusSettings` keywords, and
    each one's flag as the user typed it (for error messages).

    Raises:
        UsageError: a `--backend-option` is not KEY=VALUE, or no installed plugin has
            setting KEY.
    """
    from eventbus_core.cli._ops import UsageError

    values: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for field, flag in plugin_flags().items():
        value = getattr(args, field, None)
        if value is not None:
            blank = isinstance(value, str) and not value.strip()
            variable = all_env_vars().get(field, "the setting") if blank else ""
            values[field], given_as[field] = flag_value(value, flag, variable), flag
    options = getattr(args, "backend_options", None) or []
    if not options:
        return values, given_as
    declared: dict[str, str] = {}  # field: variable, of every installed plugin's settings
    for model in _registry().settings_models():
        for field, variable in env_vars_of(model).items():
            declared.setdefault(field, variable)
    # As EventBusSettings reads a keyword: as spelt, then in any case with field names first
    # (REDIS_STREAM_MAX_LEN, the Go proxy's variable, set eventbus's own field: review 210).
    field_of = keyword_lookup(declared)
    variable_names = set(declared.values())
    variables = all_env_vars()
    for option in options:
        key, eq, value = option.partition("=")
        key = key.strip()
        if not eq or not key:
            raise UsageError(
                f"{OPTION} {option!r}: give KEY=VALUE, KEY being a backend plugin's setting "
                "or its environment variable"
            )
        found = field_of(key)
        if found is None:
            core = _core_variable(key)
            if core is not None:
                # One of eventbus's own: the list of plugin settings alone did not say so.
                raise UsageError(
                    f"{OPTION} names {key!r}, a setting of eventbus itself, not of a backend "
                    f"plugin: set the environment variable {core} (or the command's own flag, "
                    "where it has one; see --help)"
                )
            # In the form typed: a variable's name gets the variables (and a near one), a
            # field's the fields (trial 208 typed EVENTBUS_PG_POL and got pg_poll, pg_table).
            typed_variable = key.upper() == key
            names = sorted(variable_names if typed_variable else set(declared))
            near = _near(key, names)
            # Not "KEY: ...": after a credential's name (`password`), the log scrubbing takes
            # the rest of the line for its value, and the list of settings was masked.
            raise UsageError(
                f"{OPTION} names {key!r}, which no installed backend plugin has as a setting"
                f"{f'; did you mean {near!r}?' if near else ''} (settings of the installed "
                f"plugins: {', '.join(names) or 'none'}; see 'eventbus plugins')"
            )
        if found in given_as and given_as[found].startswith(OPTION):
            # The last would win without a word (trial 121).
            before = given_as[found].removeprefix(OPTION + " ")
            spellings = f", as {before} and as {key}" if before != key else ""
            raise UsageError(f"{OPTION} gives {found} twice{spellings}: give it once")
        if found in given_as:
            # Its flag too (`--redis-url`): the option won without a word, and errors about
            # the address named the flag.
            raise UsageError(
                f"{given_as[found]} and {OPTION} {key} both set {variables[found]}: give it once"
            )
        if not value.strip():
            # Taken as unset, it fell back to nothing at all (not to the environment's value),
            # and the error said "set REDIS_URL" to someone who had.
            raise UsageError(
                f"{OPTION} {key}= is empty: give a value, or leave the option out to use "
                f"{variables[found]} from the environment"
            )
        values[found], given_as[found] = value, f"{OPTION} {key}"
    return values, given_as


def _core_variable(key: str) -> str | None:
    """The environment variable of eventbus's own setting `key` (its field or its variable,
    in any case), or None."""
    from eventbus_core._settings import ENV_VARS

    lowered = key.lower()
    for field, variable in ENV_VARS.items():
        if lowered in (field.lower(), variable.lower()):
            return variable
    return None


def plugin_override_env(args: argparse.Namespace) -> dict[str, str]:
    """The plugin settings given on the command line as environment variables, for the
    processes a command starts (the demo's publishers and dispatcher), so that they use the
    same backend as the command itself.

    Raises:
        UsageError: as `plugin_overrides`.
    """
    values, _ = plugin_overrides(args)
    variables = all_env_vars()
    return {variables[field]: str(value) for field, value in values.items() if field in variables}


def _near(typed: str, names: list[str]) -> str | None:
    """The one of `names` most like `typed`, if any is close; a variable is also compared
    without eventbus's own prefix, as users type it (trial 211: a plugin's EVENTBUS_X_KEY
    typed as X_KY was taken for the X_DB of another plugin)."""
    by_spelling = {name: name for name in names}
    for name in names:
        by_spelling.setdefault(name.removeprefix("EVENTBUS_"), name)
    near = difflib.get_close_matches(typed, sorted(by_spelling), n=1, cutoff=0.75)
    return by_spelling[near[0]] if near else None
