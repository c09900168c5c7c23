"""`eventbus --version`: the version of every installed distribution of the eventbus family."""

from __future__ import annotations

import argparse
import importlib.metadata as md
import sys
from collections.abc import Sequence
from typing import Any

from eventbus_core._plugins import ENTRY_POINT_GROUP
from eventbus_core.cli._stdout import StdoutFailed, write_failed

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
        try:
            if sys.stdout is None:  # closed (`>&-`): print() would say nothing at all
                raise write_failed(None)
            try:
                print("\n".join(lines), flush=True)  # on stdout, as --help is
            except BrokenPipeError:
                parser.exit(0)  # the reader left: it had what it wanted
            except OSError as exc:  # a full disk: a traceback said it (trial 249)
                raise write_failed(exc) from None
        except StdoutFailed as failed:
            parser.exit(1, f"eventbus --version: error: {failed}\n")
        parser.exit(0)
