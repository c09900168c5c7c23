"""The plugin registry: loads entry points of group `eventbus` and collects what they register.

Hooks run once, when a registry is built; afterwards it is a plain mapping of names to
factories, so nothing of pluggy runs per event.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.metadata as md
import importlib.util
import re
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import pluggy

from eventbus_core import hookspecs
from eventbus_core._errors import (
    BackendLoadError,
    EventBusError,
    PluginDependencyError,
    PluginError,
    UnknownBackendError,
    UnknownSinkError,
)
from eventbus_core._install import CORE, SIBLINGS, install_command
from eventbus_core._log import get_logger, scrub

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginInfo",
    "PluginLoadWarning",
    "PluginRegistry",
    "Registration",
    "get_registry",
    "plugin_at_fault",
    "reset_registry",
]

ENTRY_POINT_GROUP: Final = "eventbus"

log = get_logger("eventbus.plugins")


class PluginLoadWarning(UserWarning):
    """An installed plugin failed to load and was skipped."""


@dataclass(frozen=True)
class Registration:
    """One registered backend or sink: its name, factory and the plugin that registered it."""

    name: str
    factory: Callable[..., Any]
    plugin: str
    settings: type[BaseSettings] | None = None
    """The plugin's own settings model, registered with the factory (None: it has none)."""


@dataclass
class PluginInfo:
    """What `eventbus plugins` shows about one plugin."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    backends: list[str] = field(default_factory=list)
    sinks: list[str] = field(default_factory=list)
    settings: list[type[BaseSettings]] = field(default_factory=list)
    error: str | None = None
    extras: tuple[str, ...] = ()
    """The extras its entry point names (`module [extra]`): what it needs to build."""
    problems: list[str] = field(default_factory=list)
    """What the plugin asked for and did not get (a name another plugin had registered), or
    did wrong without failing to load (a hook eventbus does not know)."""

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        # pydantic only when settings are shown: loading plugins does not need it.
        from eventbus_core._plugin_settings import describe_settings

        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "backends": list(self.backends),
            "sinks": list(self.sinks),
            "settings": [s.as_dict() for m in self.settings for s in describe_settings(m)],
            "error": self.error,
            "problems": list(self.problems),
            "extras": list(self.extras),
        }


class PluginRegistry:
    """Backends and sinks registered by plugins.

    Args:
        load_entry_points: Load installed plugins (entry points of group `eventbus`).
        plugins: Extra plugin objects or modules to register, e.g. in tests.
    """

    def __init__(self, *, load_entry_points: bool = True, plugins: Iterable[object] = ()) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.backends: dict[str, Registration] = {}
        self.sinks: dict[str, Registration] = {}
        self._load_errors: dict[str, BaseException] = {}
        # A backend or sink (kind, name) a skipped plugin registered, or tried to, to that
        # plugin's name: selecting it says what went wrong with the plugin.
        self._failed_names: dict[tuple[str, str], str] = {}
        self._info_of: dict[int, PluginInfo] = {}
        if load_entry_points:
            self._load_entry_points()
        for plugin in plugins:
            self.register_plugin(plugin)

    # ----------------------------------------------------------------------------- loading

    def _load_entry_points(self) -> None:
        seen: set[tuple[str, str | None]] = set()
        # The eventbus family's own plugins first, then the others by name: which plugin keeps
        # a name registered twice (see `_make_register`) must not depend on the order of
        # sys.path, and a third-party plugin must not displace a built-in backend or sink.
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=_load_order):
            dist = ep.dist
            dist_name = dist.metadata["Name"] if dist is not None else None
            if (ep.name, dist_name) in seen:
                continue  # the same distribution seen twice on sys.path
            seen.add((ep.name, dist_name))
            # Two distributions may use the same entry point name (a sink and a backend both
            # called `sqlite`): both load, the second shown under a name that tells them apart.
            name = ep.name
            if name in self.plugins:
                name = f"{ep.name} ({dist_name or ep.value})"
            info = PluginInfo(
                name=name,
                module=ep.value.partition("[")[0].strip(),
                distribution=dist_name,
                version=dist.version if dist is not None else None,
                extras=_extras_named(ep.value),
            )
            self.plugins[name] = info
            try:
                plugin = ep.load()
            except (Exception, SystemExit) as exc:  # a plugin ends no application (169)
                self._record_failure(info, exc)
                continue
            self._register(plugin, info)

    def _record_failure(self, info: PluginInfo, exc: BaseException) -> None:
        # Masked: a plugin's message may quote a URL with its password, or a key, and this
        # text reaches `eventbus plugins`, warnings, logs and error messages.
        info.error = scrub(_raised(exc))
        self._load_errors[info.name] = _scrub_args(exc)  # raised again, chained, on selection
        message = f"eventbus plugin {info.name!r} ({info.module}) failed to load and was skipped"
        warnings.warn(f"{message}: {info.error}", PluginLoadWarning, stacklevel=3)
        log.warning("%s: %s", message, info.error)

    def register_plugin(self, plugin: object, name: str | None = None) -> PluginInfo:
        """Register a plugin object or module directly (without an entry point)."""
        plugin_name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        info = PluginInfo(name=plugin_name, module=getattr(plugin, "__name__", repr(plugin)))
        self.plugins[plugin_name] = info
        self._register(plugin, info)
        return info

    def _register(self, plugin: object, info: PluginInfo) -> None:
        if self.pm.is_registered(plugin):
            # One module behind several entry points (e.g. `redis` and `redis-streams`): its
            # hooks already ran; show what it registered under each entry name.
            first = self._info_of.get(id(plugin))
            if first is not None:
                info.backends, info.sinks = first.backends, first.sinks
                info.settings, info.problems = first.settings, first.problems
                info.error = first.error  # skipped under every name (review 170)
            return
        self._info_of[id(plugin)] = info
        tried: list[tuple[str, str]] = []  # every (kind, name) its hooks passed to register()
        try:
            self.pm.register(plugin, name=info.name)
        except Exception as exc:
            self._record_failure(info, exc)
            return
        for hook_name, table, names in (
            ("eventbus_register_backends", self.backends, info.backends),
            ("eventbus_register_sinks", self.sinks, info.sinks),
        ):
            caller = getattr(self.pm.hook, hook_name)
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                register = self._make_register(table, names, info, hook_name, tried)
                try:
                    impl.function(register)
                except (Exception, SystemExit) as exc:
                    self._record_failure(info, exc)
        if info.error is not None:
            self._skip(info, tried)
            return
        info.problems.extend(_hook_mistakes(plugin))
        info.problems.extend(self._declaration_problems(info))
        if not (info.backends or info.sinks or info.error or info.problems):
            info.problems.append(
                "registers no backend and no sink: a plugin registers them by calling "
                "register() from an eventbus_register_backends or eventbus_register_sinks "
                "function marked with @eventbus_core.hookimpl (docs/plugins/hooks.md)"
            )

    def _declaration_problems(self, info: PluginInfo) -> list[str]:
        """What is wrong with the `default_backend_when_set` of the plugin's settings models
        (ignored where settings are read; shown here, so the plugin is not listed as ok)."""
        if not info.settings:
            return []
        from eventbus_core._backend_choice import declaration_problems
        from eventbus_core._settings import BACKEND_ALIASES

        registered = self.backend_models()
        return [
            f"default_backend_when_set of {model.__module__}.{model.__qualname__} is ignored: "
            f"{problem}"
            for model in info.settings
            for problem in declaration_problems(model, registered, BACKEND_ALIASES)
        ]

    def _skip(self, info: PluginInfo, tried: list[tuple[str, str]]) -> None:
        """A hook of plugin `info` raised: skip the whole plugin, as one that fails to import,
        so none of its backends or sinks half works (a plugin whose third register() call
        raised kept the first two, and selecting the third was "unknown", trial 166)."""
        for table, names in ((self.backends, info.backends), (self.sinks, info.sinks)):
            for key in names:
                table.pop(key, None)
            names.clear()
        info.settings.clear()
        for kind, key in tried:
            if key not in (self.backends if kind == "backend" else self.sinks):
                self._failed_names.setdefault((kind, key), info.name)

    def _failure_of(self, kind: str, key: str) -> tuple[str, BaseException] | None:
        """(plugin name, its load error) for a backend or sink (`kind`) `key` that a plugin
        which failed to load provides (its entry point's name, or a name its hooks passed)."""
        plugin = key if key in self._load_errors else self._failed_names.get((kind, key))
        if plugin is None or plugin not in self._load_errors:
            return None
        return plugin, self._load_errors[plugin]

    def _make_register(
        self,
        table: dict[str, Registration],
        names: list[str],
        info: PluginInfo,
        hook_name: str,
        tried: list[tuple[str, str]],
    ) -> hookspecs.RegisterFn:
        plugin_name = info.name
        kind = "backend" if hook_name == "eventbus_register_backends" else "sink"

        def register(
            name: str,
            factory: Callable[..., Any],
            /,
            *,
            settings: type[BaseSettings] | None = None,
        ) -> None:
            if isinstance(name, str) and name:
                tried.append((kind, name.lower()))
            if not isinstance(name, str) or not name:
                raise TypeError(f"{hook_name}: register() needs a non-empty str name, got {name!r}")
            if not callable(factory):
                raise TypeError(f"{hook_name}: the factory for {name!r} is not callable")
            if settings is not None and not _is_settings_model(settings):
                raise TypeError(
                    f"{hook_name}: the settings of {name!r} must be a pydantic-settings model "
                    f"class (a BaseSettings subclass), not {settings!r}"
                )
            key = name.lower()
            if key in table:
                # Its distribution too: two plugins of one entry point name read as "'x' had
                # registered that name first" to plugin 'x' (trial 152).
                problem = (
                    f"{kind} {key!r} not registered: {self.owner(table[key])} had registered "
                    f"that name first, and keeps it"
                )
                info.problems.append(problem)
                warnings.warn(
                    f"eventbus plugin {plugin_name!r}: {problem}", PluginLoadWarning, stacklevel=2
                )
                log.warning("eventbus plugin %r: %s", plugin_name, problem)
                return
            table[key] = Registration(key, factory, plugin_name, settings)
            names.append(key)
            if settings is not None and settings not in info.settings:
                info.settings.append(settings)

        return register

    def backend_models(self) -> dict[str, type[BaseSettings] | None]:
        """Each registered backend's name and the settings model it registered (None: none)."""
        return {name: registration.settings for name, registration in self.backends.items()}

    def settings_models(self) -> dict[type[BaseSettings], str]:
        """Every plugin's settings model (each once, in registration order), to the name of
        the plugin that registered it."""
        found: dict[type[BaseSettings], str] = {}
        for registration in (*self.backends.values(), *self.sinks.values()):
            if registration.settings is not None:
                found.setdefault(registration.settings, registration.plugin)
        return found

    # ---------------------------------------------------------------------------- building

    def read_only_by_others(
        self, registration: Registration, fields: Iterable[str]
    ) -> dict[str, list[str]]:
        """Of the settings `fields`, those only other backends read than `registration`: each
        with those backends, sorted. A field `registration`'s model declares, or any sink's
        (a sink may read it whatever the backend), or no backend's, is left out. The command
        line refuses such a setting; `create_bus()` warns of one on the default backend."""
        own = (
            set(registration.settings.model_fields) if registration.settings is not None else set()
        )
        for sink in self.sinks.values():
            if sink.settings is not None:
                own.update(sink.settings.model_fields)
        found: dict[str, list[str]] = {}
        for name in fields:
            if name in own:
                continue
            readers = sorted(
                backend
                for backend, other in self.backends.items()
                if other.settings is not None and name in other.settings.model_fields
            )
            if readers:
                found[name] = readers
        return found

    def owner(self, registration: Registration) -> str:
        """`plugin 'name' (distribution x.y)`: who registered `registration`, for messages."""
        return _who(registration.plugin, self.plugins.get(registration.plugin))

    def build(self, registration: Registration, kind: str, *args: Any) -> Any:
        """Call `registration`'s factory with `args` (`kind`: "backend" or "sink", for messages).

        eventbus's own errors (a `SettingsError` naming a variable, say) pass through as they
        are; anything else a factory raises is a fault of the plugin, said so.

        Raises:
            EventBusError: what the factory raised, if it is one.
            PluginError: the factory raised anything else (`PluginDependencyError`, a
                `MissingDependencyError` too, where it misses a module the plugin needs).
        """
        try:
            return registration.factory(*args)
        except EventBusError:
            raise
        except (Exception, SystemExit) as exc:  # a plugin ends no application (trial 172)
            advice = self.dependency_advice(registration, exc)
            _scrub_args(exc)  # chained below: its traceback prints its message too
            raise (PluginDependencyError if advice else PluginError)(
                f"{kind} {registration.name!r} of {self.owner(registration)} failed to start: "
                f"{scrub(_raised(exc))}. "
                + (
                    advice
                    or "This is a fault of that plugin or of what it needs; its documentation or "
                    "its authors can tell more (rerun with -v for the traceback)"
                )
            ) from exc

    def dependency_advice(self, registration: Registration, exc: BaseException) -> str:
        """How to install the module `exc` says `registration`'s plugin could not import, when
        it is a dependency of the plugin, else "". A factory that imports its driver when it
        is called (as the backend guide says) meets a missing one there (trial 155)."""
        info = self.plugins.get(registration.plugin)
        if info is None or _missing_dependency(exc, info.module) is None:
            return ""
        return _load_failure_advice(registration.plugin, info, exc)

    # --------------------------------------------------------------------------- selection

    def backend(self, name: str, *, given_as: str = "LLM_PROXY_EVENT_BUS") -> Registration:
        """Return the registration of backend `name`.

        `given_as` is where the name came from (the variable, or a flag such as `--backend`),
        which the error messages name.

        Raises:
            BackendLoadError: the plugin that provides `name` failed to load.
            UnknownBackendError: no installed plugin registers `name`.
        """
        key = name.strip().lower()
        if key in self.backends:
            return self.backends[key]
        found = self._failure_of("backend", key)
        if found is not None:
            plugin, failed = found
            info = self.plugins[plugin]
            how = _load_failure_advice(plugin, info, failed)
            raise BackendLoadError(
                f"event bus backend {key!r} ({given_as}) is installed "
                f"({info.distribution or info.module}) but failed to load: {info.error}. {how}"
            ) from failed
        raise UnknownBackendError(self._unknown_message("backend", key, self.backends, given_as))

    def sink(self, name: str, *, given_as: str = "EVENTBUS_SINKS / --sink") -> Registration:
        """Return the registration of sink `name` (`given_as`: where the name came from).

        Raises:
            UnknownSinkError: no installed plugin registers `name`.
        """
        key = name.strip().lower()
        if key in self.sinks:
            return self.sinks[key]
        found = self._failure_of("sink", key)
        if found is not None:
            plugin, failed = found
            info = self.plugins[plugin]
            raise UnknownSinkError(
                f"no installed plugin registers sink {key!r} ({given_as}); the plugin "
                f"{plugin!r} ({info.distribution or info.module}) is installed but failed to "
                f"load: {info.error}. {_load_failure_advice(plugin, info, failed)}"
            ) from failed
        raise UnknownSinkError(self._unknown_message("sink", key, self.sinks, given_as))

    def _unknown_message(
        self, kind: str, key: str, table: dict[str, Registration], given_as: str
    ) -> str:
        installed = ", ".join(sorted(table)) or "none"
        if not key:
            return f"an empty {kind} name ({given_as}); installed {kind}s: {installed}"
        troubled = self.plugins.get(key)
        if troubled is not None and troubled.problems:
            # Installed, so "pip install" is no advice: what went wrong is.
            return (
                f"no installed plugin registers {kind} {key!r} ({given_as}); the plugin {key!r} "
                f"({troubled.distribution or troubled.module}) is installed but registered no "
                f"such {kind}: {'; '.join(troubled.problems)}"
            )
        if troubled is not None and troubled.error is None:
            # The plugin's entry name typed, where it registers other names: installed, so
            # "pip install eventbus-<name>" was no advice (trial 176).
            offers = [
                f"{what} {', '.join(repr(n) for n in names)}"
                for what, names in (("backend(s)", troubled.backends), ("sink(s)", troubled.sinks))
                if names
            ]
            return (
                f"unknown eventbus {kind} {key!r} ({given_as}): the plugin {key!r} "
                f"({troubled.distribution or troubled.module}) is installed, but registers "
                f"{' and '.join(offers) or 'nothing'}, not a {kind} of that name; "
                f"installed {kind}s: {installed}"
            )
        # Installed names, and the family's backends not installed (`nast` was told to
        # `pip install eventbus-nast`, a name anyone could register, trial 169).
        known = [*table, *(SIBLINGS if kind == "backend" else ())]
        # Not the name itself: a family backend typed right needs no guess (trial 172).
        close = [c for c in difflib.get_close_matches(key, known, n=2) if c != key][:1]
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        if close and close[0] not in table:
            missing = SIBLINGS[close[0]]
            guess = (
                f" (did you mean {close[0]!r}? it comes with {missing.distribution}: "
                f"{install_command(missing)})"
            )
        sibling = SIBLINGS.get(key) if kind == "backend" else None
        if sibling is not None:
            how = f"it comes with {sibling.distribution}; install it with: " + install_command(
                sibling
            )
        else:
            how = f"if {key!r} comes from a third-party plugin, install its distribution"
            # No `pip install eventbus-jsonl,` (trial 134), nor a typo's name when one installed
            # is close: `pip install eventbus-memroy` could fetch a squatter's package (166).
            if _DISTRIBUTION_NAME.fullmatch(key) and not close:
                how += f" (for example: pip install eventbus-{key})"
        broken = [f"{n} ({i.error})" for n, i in self.plugins.items() if i.error]
        extra = f". Plugins that failed to load: {'; '.join(broken)}" if broken else ""
        return (
            f"unknown eventbus {kind} {key!r} ({given_as}){guess}. "
            f"Installed {kind}s: {installed}; {how}{extra}"
        )


_DISTRIBUTION_NAME: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
"""What a distribution's name may be (PEP 508), for the `pip install eventbus-NAME` example."""


def _load_failure_advice(key: str, info: PluginInfo, failed: BaseException) -> str:
    """What to do about plugin `key` that failed to load with `failed`."""
    sibling = SIBLINGS.get(key)
    missing = _missing_dependency(failed, info.module)
    package = "" if missing is None else missing.split(".", 1)[0]
    if package in sys.stdlib_module_names:
        # Python's own (`json.newthing`): no pip command brings it; the plugin needs another
        # Python (trial 159 was told to upgrade "the package that provides 'json'").
        return (
            f"It needs the module {missing!r}, which this Python's standard library lacks: the "
            "plugin needs another version of Python; see its documentation"
        )
    if missing is not None and package != missing and importlib.util.find_spec(package):
        # A part of an installed package: an older version of it, not a missing one (review
        # 158: `redis.asyncio` on an old redis-py).
        return (
            f"It needs the module {missing!r}, which the installed {package!r} lacks: upgrade "
            f"the package that provides {package!r} (pip install --upgrade ...), or install "
            "the plugin again with its dependencies"
        )
    if missing is not None and info.distribution is not None:
        from eventbus_core._extras import install_hint
        from eventbus_core._plugin_extras import extra_bringing, lacking_extras

        # A package of an extra its entry point names (`module [fancy]`): a reinstall of the
        # distribution alone does not bring it (trial 255); the extra's command does, as
        # `eventbus plugins` says. Only where the missing module is that package's (trial 257).
        extra = extra_bringing(info.distribution, info.extras, missing)
        if extra is not None:
            return (
                f"It needs the module {missing!r}, which is not installed: the plugin's extra "
                f"{extra!r} brings it ({install_hint(extra, info.distribution)})"
            )
        # A package named otherwise than its module (PyYAML, `yaml`) is not matched: the
        # extra's own lack is said beside, as `eventbus plugins` says it (trial 260).
        lacking = lacking_extras(info.distribution, info.extras)
        if lacking:
            # Every one: the first alone named python-dateutil for a missing `yaml` (trial 263).
            extras = "; ".join(
                f"{extra!r} lacks {', '.join(packages)}: {install_hint(extra, info.distribution)}"
                for extra, packages in lacking
            )
            several = len(lacking) > 1
            return (
                f"It needs the module {missing!r}, which is not installed. Its entry point's "
                f"{'extras lack' if several else 'extra lacks'} packages too ({extras}): "
                f"install {'those' if several else 'it'}, or the package that provides "
                f"{missing!r}"
            )
    if missing is not None:
        # Not `--no-deps`, the one reinstall that cannot bring a dependency back (trial 152).
        again = (
            install_command(sibling)
            if sibling is not None
            else f"pip install --force-reinstall {info.distribution or key}"
        )
        return (
            f"It needs the module {missing!r}, which is not installed: install the plugin again "
            f"with its dependencies ({again}), or the package that provides {missing!r}"
        )
    if sibling is not None:
        return f"Reinstall it: {install_command(sibling, reinstall=True)}"
    return _reinstall_advice(info.distribution or key)


def _missing_dependency(failed: BaseException, module: str) -> str | None:
    """The module a plugin's import did not find, when it is not the plugin's own (then it is
    a dependency that is not installed); None otherwise."""
    if not isinstance(failed, ModuleNotFoundError) or not failed.name:
        return None
    own = module.split(":", 1)[0].split(".", 1)[0]
    return None if failed.name.split(".", 1)[0] == own else failed.name


def _reinstall_advice(distribution: str) -> str:
    """What to do about a third-party plugin that failed to load."""
    return (
        f"If it is a broken install, reinstall it (pip install --force-reinstall --no-deps "
        f"{distribution}); if the error is in the plugin's own code, its authors must fix it"
    )


_HOOKS: Final = ("eventbus_register_backends", "eventbus_register_sinks")


def _hook_mistakes(plugin: object) -> list[str]:
    """What a plugin spelt as a hook and pluggy will not call: a name no hook has (a typo such
    as `eventbus_register_sink`), or a hook's function without the `@hookimpl` marker."""
    found = []
    for attr in dir(plugin):
        if not attr.startswith("eventbus_") or not callable(getattr(plugin, attr, None)):
            continue
        marked = hasattr(getattr(plugin, attr), f"{hookspecs.PROJECT_NAME}_impl")
        if attr not in _HOOKS:
            close = difflib.get_close_matches(attr, _HOOKS, n=1, cutoff=0.85)
            if not (marked or close):
                continue  # a function of the plugin's own that happens to start so
            hint = f" (did you mean {close[0]}?)" if close else ""
            found.append(f"{attr} is not an eventbus hook{hint}; the hooks are {', '.join(_HOOKS)}")
        elif not marked:
            found.append(
                f"{attr} is not marked with @eventbus_core.hookimpl, so it is never called"
            )
    return found


_FAMILY: Final = frozenset({CORE, *(s.distribution for s in SIBLINGS.values())})


def _extras_named(value: str) -> tuple[str, ...]:
    """The extras an entry point's value names: `module:attr [one, two]` -> ("one", "two")."""
    _, bracket, rest = value.partition("[")
    if not bracket:
        return ()
    return tuple(e.strip() for e in rest.rstrip().rstrip("]").split(",") if e.strip())


def _load_order(ep: md.EntryPoint) -> tuple[bool, str, str]:
    """Sort key of entry points: the eventbus family's distributions first, then by name."""
    dist = ep.dist.metadata["Name"] if ep.dist is not None else ""
    return (dist not in _FAMILY, ep.name, dist or "")


def _is_settings_model(model: object) -> bool:
    from pydantic_settings import BaseSettings

    return isinstance(model, type) and issubclass(model, BaseSettings)


_registry: PluginRegistry | None = None


def get_registry() -> PluginRegistry:
    """Return the process-wide registry of installed plugins, building it on first use."""
    global _registry
    if _registry is None:
        _registry = PluginRegistry()
    return _registry


def plugin_at_fault(exc: BaseException) -> str:
    """`plugin 'x' (distribution y)` whose code raised `exc`: the innermost frame of its
    traceback in a module of an installed plugin other than core's; "" if there is none. For
    the messages of errors that are nobody's mistake but a plugin's code (trial 152)."""
    if _registry is None:  # not built: nothing of a plugin ran (and loading them now would
        return ""  # print their warnings in the middle of this error)
    packages = {}
    for info in _registry.plugins.values():
        top = info.module.split(":")[0].split(".")[0]
        if top and top != "eventbus_core":
            packages[top] = info
    found = None
    frame = exc.__traceback__
    while frame is not None:
        top = str(frame.tb_frame.f_globals.get("__name__", "")).split(".", maxsplit=1)[0]
        if top == "eventbus_core":
            found = None  # raised in core's code, even if a plugin called it: not the plugin's
        found = packages.get(top, found)
        frame = frame.tb_next
    return "" if found is None else _who(found.name, found)


def _raised(exc: BaseException) -> str:
    """What `exc` says, for a message: its type, then its text if it has any (`sys.exit()` in a
    plugin read "SystemExit: ." before, trial 172)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _scrub_args(exc: BaseException) -> BaseException:
    """`exc` with credentials masked in its arguments and notes, and in those of the
    exceptions chained to it, in place: it is chained under an error of eventbus's, whose
    traceback prints them all; a plugin's message quoting a URL with its password reached the
    output that way (trials 157 and 159). An argument that is no string is shown masked."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        with contextlib.suppress(Exception):  # an exception class that refuses new args
            current.args = tuple(_masked_arg(a) for a in current.args)
        if isinstance(current, OSError):  # printed from these, not from its args (trial 161)
            for name in ("errno", "strerror", "filename", "filename2"):
                value = getattr(current, name, None)
                if value is not None and not isinstance(value, int):  # an errno is one
                    with contextlib.suppress(Exception):
                        setattr(current, name, scrub(str(value)))
        for member in getattr(current, "exceptions", None) or ():  # an exception group's
            if isinstance(member, BaseException):
                _scrub_args(member)
        notes = getattr(current, "__notes__", None)
        if isinstance(notes, list):
            notes[:] = [scrub(str(note)) for note in notes]
        current = current.__cause__ or current.__context__
    return exc


def _masked_arg(arg: object) -> object:
    if isinstance(arg, str):
        return scrub(arg)
    if arg is None or isinstance(arg, int | float):
        return arg  # an errno, a status: no credential
    return scrub(repr(arg))


def _who(name: str, info: PluginInfo | None) -> str:
    """`plugin 'name' (distribution x.y)`, for messages."""
    dist = info.distribution if info is not None else None
    version = f" {info.version}" if info is not None and info.version else ""
    return f"plugin {name!r}" + (f" ({dist}{version})" if dist else "")


def reset_registry() -> None:
    """Forget the process-wide registry, so the next use reloads the installed plugins."""
    global _registry
    _registry = None
