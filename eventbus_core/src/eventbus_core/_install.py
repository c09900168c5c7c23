"""The pip command that brings a missing part of eventbus, as it works where this one came from.

Until the distributions are on a package index, `pip install "eventbus-core[redis]"` fails: the
extras name sibling distributions only an index can supply. An eventbus-core installed from a
source checkout (pip records `direct_url.json` with a `file://` URL for it) therefore gets the
checkout form, which names the sibling folder (`pip install ./eventbus_redis`); any other
install gets the index form, with a note for an install from built wheels (pip records nothing
for `--find-links`, so the folder cannot be named for the user).
"""

from __future__ import annotations

import importlib.metadata as md
import json
from pathlib import Path
from typing import Final, NamedTuple
from urllib.parse import unquote, urlparse

__all__ = [
    "SIBLINGS",
    "WHEELS_NOTE",
    "Sibling",
    "checkout_root",
    "install_command",
    "is_installed",
    "root_from_direct_url",
    "wanted_siblings",
]

CORE: Final = "eventbus-core"
WHEELS_NOTE: Final = (
    " (add --find-links DIR, the folder of the wheels, if you installed from built wheels)"
)


class Sibling(NamedTuple):
    """A distribution of the eventbus family that lives beside eventbus-core in the repository."""

    distribution: str
    folder: str
    extra: str
    variables: tuple[str, ...] = ()
    """Variables that say its backends are wanted (an address): set while it is missing, the
    in-memory default gets a warning naming them, not silence (trial 186)."""


_REDIS: Final = Sibling("eventbus-redis", "eventbus_redis", "redis", ("REDIS_ADDR", "REDIS_URL"))

SIBLINGS: Final = {
    "memory": Sibling("eventbus-memory", "eventbus_memory", "memory"),
    "redis": _REDIS,
    "redis-streams": _REDIS,
    "nats": Sibling("eventbus-nats", "eventbus_nats", "nats", ("NATS_URL",)),
}
"""Built-in backend name to the distribution that provides it."""


def checkout_root() -> Path | None:
    """The source checkout eventbus-core was installed from, or None (an index, or unknown).

    pip (and uv) write `direct_url.json` (PEP 610) for an install from a local folder or file.
    """
    try:
        raw = md.distribution(CORE).read_text("direct_url.json")
    except md.PackageNotFoundError:
        return None
    return root_from_direct_url(raw)


def root_from_direct_url(raw: str | None) -> Path | None:
    """The checkout a `direct_url.json` points into: the folder that holds `eventbus_core/`
    (installed from that folder, or from a wheel built into the checkout's `dist/`), recognised
    by its sibling folders; None for anything else."""
    if not raw:
        return None
    try:
        url = str(json.loads(raw).get("url", ""))
    except (ValueError, AttributeError):
        return None
    parsed = urlparse(url)
    if parsed.scheme != "file":
        return None
    source = Path(unquote(parsed.path))
    for candidate in (source.parent, source.parent.parent):
        if all((candidate / s.folder / "pyproject.toml").is_file() for s in SIBLINGS.values()):
            return candidate
    return None


def _folder(root: Path, folder: str) -> str:
    """`./folder` when run from the checkout root, else the folder's absolute path."""
    try:
        here = Path.cwd().resolve() == root.resolve()
    except OSError:
        here = False
    return f"./{folder}" if here else str(root / folder)


def install_command(sibling: Sibling, *, reinstall: bool = False) -> str:
    """The pip command that installs `sibling`, for a checkout install or an index one."""
    root = checkout_root()
    flags = "--force-reinstall --no-deps " if reinstall else ""
    if root is not None:
        where = _folder(root, sibling.folder)
        note = "" if where.startswith("./") else f" (from the checkout at {root})"
        return f"pip install {flags}{where}{note}"
    spec = sibling.distribution if reinstall else f"{CORE}[{sibling.extra}]"
    return f'pip install {flags}"{spec}"{WHEELS_NOTE}'


def is_installed(distribution: str) -> bool:
    """True if `distribution`'s metadata is found (it is installed)."""
    try:
        md.distribution(distribution)
    except md.PackageNotFoundError:
        return False
    return True


def wanted_siblings() -> list[tuple[Sibling, list[str]]]:
    """Each sibling whose variables (`Sibling.variables`) are set, not blank, in the
    environment, with those variables: its backends are wanted, whether or not it is installed
    (the missing-plugin warning and the shared-backend hint each ask that themselves)."""
    import os

    from eventbus_core._backend_choice import is_set  # pydantic: not when plugins load

    found = []
    for sibling in dict.fromkeys(SIBLINGS.values()):
        given = [name for name in sibling.variables if is_set(os.environ.get(name))]
        if given:
            found.append((sibling, given))
    return found
