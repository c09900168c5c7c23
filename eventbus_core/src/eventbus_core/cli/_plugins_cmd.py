"""`eventbus plugins`: the installed plugins, what they register, and load errors."""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from collections.abc import Sequence
from typing import Any

from eventbus_core._errors import SettingsError
from eventbus_core._log import scrub
from eventbus_core._plugin_extras import missing_extras
from eventbus_core._plugin_settings import build_model, describe_settings, model_failure
from eventbus_core._plugins import PluginInfo, PluginLoadWarning, PluginRegistry, get_registry
from eventbus_core.cli._backend_flags import flag_problems

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Register the `plugins` command."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "plugins",
        help="list installed backends and sinks",
        description="List the installed eventbus plugins (entry points of group 'eventbus'): "
        "distribution, version, what each registers, any load error, and each plugin's "
        "settings (environment variable, default, description).",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the plugin table; exit 1 if any plugin failed to load or has a problem (a name
    another plugin had taken, a hook eventbus does not know, nothing registered)."""
    plugins_log = logging.getLogger("eventbus.plugins")
    level = plugins_log.level
    with warnings.catch_warnings():
        # Load failures and problems are shown in the table itself, not also as warnings.
        warnings.simplefilter("ignore", PluginLoadWarning)
        plugins_log.setLevel(logging.ERROR)
        try:
            registry = PluginRegistry()
        finally:
            plugins_log.setLevel(level)
    infos = sorted(registry.plugins.values(), key=lambda i: i.name)
    # What building the command line found (a flag another setting or eventbus has), on the
    # process's registry, which the parser was built from.
    found = {name: flag_problems(info) for name, info in get_registry().plugins.items()}
    for info in infos:
        info.problems.extend(_settings_problems(info))
        info.problems.extend(p for p in found.get(info.name, []) if p not in info.problems)
    if args.json:
        print(
            json.dumps(
                {
                    "plugins": [_as_dict(i) for i in infos],
                    "backends": sorted(registry.backends),
                    "sinks": sorted(registry.sinks),
                },
                indent=2,
            )
        )
    else:
        rows = [("NAME", "DISTRIBUTION", "VERSION", "BACKENDS", "SINKS", "STATUS")]
        for info in infos:
            rows.append(
                (
                    info.name,
                    info.distribution or "-",
                    info.version or "-",
                    ",".join(info.backends) or "-",
                    ",".join(info.sinks) or "-",
                    _status(info),
                )
            )
        _print_table(rows)
        _print_settings(infos)
    return 1 if any(i.error or i.problems for i in infos) else 0


def _settings_problems(info: PluginInfo) -> list[str]:
    """Why a plugin's settings cannot be read from this environment: a value its model refuses
    (which fails every backend's settings, whichever is selected), or a model that raises."""
    found = []
    for model in info.settings:
        try:
            build_model(model, {})
        except SettingsError as exc:
            found.append(f"settings: {exc}")
        except Exception as exc:
            found.append(f"its settings model raised {model_failure(exc)}")
    # Masked as the log line of the same failure is: a model's own error may quote a secret
    # (the table showed `secret=hunter2hunter2` where the log said [REDACTED], helper-112).
    return [scrub(problem) for problem in found]


def _status(info: PluginInfo) -> str:
    """The STATUS cell: the load error, or each problem (`PluginInfo.problems`), or what it
    needs to build (`missing_extras`), or "ok"."""
    if info.error:
        return f"ERROR {info.error}"
    if info.problems:
        return "PROBLEM " + "; ".join(info.problems)
    # Not a problem (the exit status stays 0): a plain install leaves optional sinks unbuilt.
    # Nor "ok" either: a script reading the column took such a sink for usable (trial 199).
    return "; ".join(missing_extras(info.distribution, info.extras)) or "ok"


def _print_table(rows: Sequence[tuple[str, ...]], indent: str = "") -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)]
        print(indent + "  ".join([*cells, row[-1]]))


def _not_offered(problems: list[str], flag: str | None, variable: str) -> bool:
    """True if `flag`, declared for `variable`, was refused (one of `flag_problems`)."""
    return flag is not None and any(p.startswith(f"flag {flag} (of {variable})") for p in problems)


def _as_dict(info: PluginInfo) -> dict[str, Any]:
    """`info.as_dict()`, a refused flag given as `flag_not_offered` rather than as `flag`: a
    tool building a command line from it passed `--json` or `--help` (trial 180)."""
    out = info.as_dict()
    out["needs"] = missing_extras(info.distribution, info.extras)
    refused = flag_problems(info)
    for setting in out.get("settings", []):
        if _not_offered(refused, setting.get("flag"), setting.get("env_var", "")):
            setting["flag_not_offered"], setting["flag"] = setting["flag"], None
    return out


def _print_settings(infos: list[PluginInfo]) -> None:
    """Each plugin's settings, once per model (one module may stand behind several entries)."""
    seen: dict[type, list[str]] = {}
    for info in infos:
        for model in info.settings:
            seen.setdefault(model, []).append(info.name)
    for model, names in seen.items():
        print()
        print(f"settings of {', '.join(names)} ({model.__module__}.{model.__qualname__}):")
        rows: list[tuple[str, ...]] = [("VARIABLE", "FIELD", "DEFAULT", "DESCRIPTION")]
        refused = [p for info in infos for p in flag_problems(info)]
        for setting in describe_settings(model):
            flag = f" (flag {setting.flag})" if setting.flag else ""
            if _not_offered(refused, setting.flag, setting.env_var):
                flag = f" (flag {setting.flag} not offered: see its PROBLEM)"  # trial 176
            rows.append(
                (
                    setting.env_var,
                    setting.field,
                    setting.default or "-",
                    setting.description + flag,
                )
            )
        _print_table(rows, indent="  ")
