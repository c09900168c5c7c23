"""`eventbus --version`: the version of every installed distribution of the eventbus family."""

from __future__ import annotations

import argparse
import importlib.metadata as md
import sys
from collections.abc import Sequence
from typing import Any

from eventbus_core._plugins import ENTRY_POINT_GROUP

__all__ = ["VersionAction", "family_versions"]

_CORE = "eventbus-core"


def family_versions() -> list[tuple[str, str]]:
    """`(distribution, version)` of eventbus-core, then of each installed distribution that
    provides an `eventbus` entry point (plugins, built-in or third-party), by name."""
    found: dict[str, str] = {}
    try:
        found[_CORE] = md.version(_CORE)
    except md.PackageNotFoundError:
        found[_CORE] = "not installed (running from source)"
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        if dist is None:
            continue
        name = dist.metadata["Name"]
        if name and name not in found:
            found[name] = dist.version
    core = [(_CORE, found.pop(_CORE))]
    return core + sorted(found.items(), key=lambda item: item[0].lower())


class VersionAction(argparse.Action):
    """Print `family_versions()`, one `name version` line each, and exit 0."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("nargs", 0)
        kwargs.setdefault("default", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        versions = family_versions()
        width = max(len(name) for name, _ in versions)
        lines = [f"{name:<{width}}  {version}" for name, version in versions]
        # On stdout as --help is, through the parser: the command line says a stdout that
        # fails or is closed (exit 1: a traceback said it, trial 249) and ends quietly for a
        # reader that left.
        parser._print_message("\n".join(lines) + "\n", sys.stdout)
        parser.exit(0)
