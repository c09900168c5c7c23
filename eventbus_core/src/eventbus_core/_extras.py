"""Optional dependencies of the metrics and sinks: import checks with the pip command to run."""

from __future__ import annotations

import importlib
from typing import Final

from eventbus_core._errors import MissingDependencyError
from eventbus_core._install import CORE, SIBLINGS

__all__ = ["EXTRAS", "install_hint", "require"]

# The eventbus family's distributions and their folders in the repository.
_FAMILY_FOLDERS: Final = {
    CORE: "eventbus_core",
    **{s.distribution: s.folder for s in SIBLINGS.values()},
}

EXTRAS: Final[dict[str, tuple[str, str]]] = {
    # extra: (module that proves it is installed, what it brings)
    "prometheus": ("prometheus_client", "prometheus-client"),
    "otel": ("opentelemetry.metrics", "opentelemetry-api"),
    "otlp": ("opentelemetry.proto.collector.trace.v1.trace_service_pb2", "opentelemetry-proto"),
}


def install_hint(extra: str, distribution: str = CORE) -> str:
    """The commands that install `extra` of `distribution`: from a package index, and for the
    eventbus family's own distributions, from a checkout too (`eventbus plugins` and the
    error of what needs the extra say the same)."""
    command = f'pip install "{distribution}[{extra}]"'
    folder = _FAMILY_FOLDERS.get(distribution)
    if folder is None:
        return command
    return (
        f"{command} (or, in a checkout of the eventbus repository, "
        f'pip install "./{folder}[{extra}]")'
    )


def _installed(module: str) -> bool:
    try:
        importlib.import_module(module)  # what needs the extra imports it next anyway
    except ImportError:
        return False
    return True


def require(extra: str, *, what: str | None = None) -> None:
    """Raise `MissingDependencyError` (an `ImportError`) with the pip command, unless the
    extra's package is importable.

    Args:
        extra: A key of `EXTRAS`.
        what: What needs it, for the message (default: the extra's name).
    """
    module, package = EXTRAS[extra]
    if not _installed(module):
        raise MissingDependencyError(
            f"{what or extra} needs {package}, which is not installed: {install_hint(extra)}"
        )
