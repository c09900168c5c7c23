"""What a plugin's entry point says it needs beyond its distribution: the extras named in the
entry point (`otlp = "eventbus_core.sinks.otlp [otlp]"`), checked against what is installed,
so that `eventbus plugins` can say a sink will not build before a dispatcher finds out (trial
189: `otlp` was listed as ok without opentelemetry-proto)."""

from __future__ import annotations

import importlib.metadata as md
import re
from collections.abc import Iterable

from eventbus_core._extras import install_hint
from eventbus_core._install import is_installed

__all__ = ["extra_bringing", "lacking_extras", "missing_extras"]

_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA_MARKER = re.compile(r"""^\s*extra\s*==\s*["']([^"']+)["']\s*$""")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _required_for(distribution: str, extra: str) -> list[str]:
    """The packages `distribution` requires for `extra` alone. A requirement with other
    conditions too (a Python version) is left out: it may not apply here, and a false alarm
    is worse than none."""
    try:
        requires = md.distribution(distribution).requires or []
    except md.PackageNotFoundError:
        return []
    wanted = _normal(extra)
    found = []
    for requirement in requires:
        spec, _, marker = requirement.partition(";")
        only = _EXTRA_MARKER.match(marker)
        name = _NAME.match(spec)
        if only and name and _normal(only.group(1)) == wanted:
            found.append(name.group(1))
    return found


def lacking_extras(distribution: str | None, extras: Iterable[str]) -> list[tuple[str, list[str]]]:
    """Each extra of `distribution` whose packages are not all installed, with those packages.
    Empty if nothing is missing or nothing can be told."""
    if distribution is None:
        return []
    lacking = []
    for extra in extras:
        missing = [p for p in _required_for(distribution, extra) if not is_installed(p)]
        if missing:
            lacking.append((extra, missing))
    return lacking


def missing_extras(distribution: str | None, extras: Iterable[str]) -> list[str]:
    """One line for each extra of `distribution` whose packages are not all installed: what is
    missing and the pip command. Empty if nothing is missing or nothing can be told."""
    return [
        f"needs {', '.join(missing)} to build: {install_hint(extra, distribution or '')}"
        for extra, missing in lacking_extras(distribution, extras)
    ]


def extra_bringing(distribution: str | None, extras: Iterable[str], module: str) -> str | None:
    """The extra of `distribution` (among `extras`) whose packages include one, not
    installed, named as the top-level `module` is (`sqlalchemy` for `SQLAlchemy`); None where
    none does: a package named otherwise than its module is not guessed at."""
    if distribution is None:
        return None
    wanted = _normal(module.split(".", 1)[0])
    for extra in extras:
        for package in _required_for(distribution, extra):
            if _normal(package) == wanted and not is_installed(package):
                return extra
    return None
