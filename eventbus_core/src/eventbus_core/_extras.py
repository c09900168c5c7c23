"""Optional dependencies of the metrics and sinks: import checks with the pip command to run."""

from __future__ import annotations

import importlib
from typing import Final

from eventbus_core._errors import MissingDependencyError

__all__ = ["EXTRAS", "install_hint", "require"]

EXTRAS: Final[dict[str, tuple[str, str]]] = {
    # extra: (module that proves it is installed, what it brings)
    "prometheus": ("prometheus_client", "prometheus-client"),
    "otel": ("opentelemetry.metrics", "opentelemetry-api"),
    "otlp": ("opentelemetry.proto.collector.trace.v1.trace_service_pb2", "opentelemetry-proto"),
}


def install_hint(extra: str) -> str:
    """The commands that install `extra`, from a package index and from a checkout."""
    return (
        f'pip install "eventbus-core[{extra}]" (or, in a checkout of the eventbus repository, '
        f'pip install "./eventbus_core[{extra}]")'
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
