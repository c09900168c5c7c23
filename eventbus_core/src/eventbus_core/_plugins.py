"""The plugin registry: loads entry points of group `eventbus` and collects what they register.

Hooks run once, when a registry is built; afterwards it is a plain mapping of names to
factories, so nothing of pluggy runs per event.
"""

from __future__ import annotations

import importlib.metadata as md
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import pluggy

from eventbus_core import hookspecs
from eventbus_core._errors import BackendLoadError, UnknownBackendError, UnknownSinkError
from eventbus_core._install import SIBLINGS, install_command
from eventbus_core._log import get_logger

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginInfo",
    "PluginLoadWarning",
    "PluginRegistry",
    "Registration",
    "get_registry",
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
        self._info_of: dict[int, PluginInfo] = {}
        if load_entry_points:
            self._load_entry_points()
        for plugin in plugins:
            self.register_plugin(plugin)

    # ----------------------------------------------------------------------------- loading

    def _load_entry_points(self) -> None:
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in self.plugins:
                continue  # the same distribution seen twice on sys.path
            dist = ep.dist
            info = PluginInfo(
                name=ep.name,
                module=ep.value,
                distribution=dist.metadata["Name"] if dist is not None else None,
                version=dist.version if dist is not None else None,
            )
            self.plugins[ep.name] = info
            try:
                plugin = ep.load()
            except Exception as exc:
                self._record_failure(info, exc)
                continue
            self._register(plugin, info)

    def _record_failure(self, info: PluginInfo, exc: BaseException) -> None:
        info.error = f"{type(exc).__name__}: {exc}"
        self._load_errors[info.name] = exc
        warnings.warn(
            f"eventbus plugin {info.name!r} ({info.module}) failed to load and was skipped: "
            f"{info.error}",
            PluginLoadWarning,
            stacklevel=3,
        )

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
                info.settings = first.settings
            return
        self._info_of[id(plugin)] = info
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
                register = self._make_register(table, names, info, hook_name)
                try:
                    impl.function(register)
                except Exception as exc:
                    self._record_failure(info, exc)

    @staticmethod
    def _make_register(
        table: dict[str, Registration], names: list[str], info: PluginInfo, hook_name: str
    ) -> hookspecs.RegisterFn:
        plugin_name = info.name

        def register(
            name: str,
            factory: Callable[..., Any],
            /,
            *,
            settings: type[BaseSettings] | None = None,
        ) -> None:
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
                warnings.warn(
                    f"eventbus: {key!r} is registered by both {table[key].plugin!r} and "
                    f"{plugin_name!r}; keeping {table[key].plugin!r}",
                    PluginLoadWarning,
                    stacklevel=2,
                )
                return
            table[key] = Registration(key, factory, plugin_name, settings)
            names.append(key)
            if settings is not None and settings not in info.settings:
                info.settings.append(settings)

        return register

    def settings_models(self) -> dict[type[BaseSettings], str]:
        """Every plugin's settings model (each once, in registration order), to the name of
        the plugin that registered it."""
        found: dict[type[BaseSettings], str] = {}
        for registration in (*self.backends.values(), *self.sinks.values()):
            if registration.settings is not None:
                found.setdefault(registration.settings, registration.plugin)
        return found

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
        failed = self._load_errors.get(key)
        if failed is not None:
            info = self.plugins[key]
            sibling = SIBLINGS.get(key)
            how = (
                install_command(sibling, reinstall=True)
                if sibling is not None
                else f"pip install --force-reinstall --no-deps {info.distribution or key}"
            )
            raise BackendLoadError(
                f"event bus backend {key!r} ({given_as}) is installed "
                f"({info.distribution or info.module}) but failed to load: {info.error}. "
                f"Reinstall it: {how}"
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
        raise UnknownSinkError(self._unknown_message("sink", key, self.sinks, given_as))

    def _unknown_message(
        self, kind: str, key: str, table: dict[str, Registration], given_as: str
    ) -> str:
        installed = ", ".join(sorted(table)) or "none"
        sibling = SIBLINGS.get(key) if kind == "backend" else None
        if sibling is not None:
            how = f"it comes with {sibling.distribution}; install it with: " + install_command(
                sibling
            )
        else:
            how = (
                f"if {key!r} comes from a third-party plugin, install its distribution "
                f"(for example: pip install eventbus-{key})"
            )
        broken = [f"{n} ({i.error})" for n, i in self.plugins.items() if i.error]
        extra = f". Plugins that failed to load: {'; '.join(broken)}" if broken else ""
        return (
            f"unknown eventbus {kind} {key!r} ({given_as}). "
            f"Installed {kind}s: {installed}; {how}{extra}"
        )


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


def reset_registry() -> None:
    """Forget the process-wide registry, so the next use reloads the installed plugins."""
    global _registry
    _registry = None
