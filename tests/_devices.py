"""Character devices for tests of what eventbus does with a path that is not a regular file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

NULL_MINOR = 3
"""The minor number of /dev/null: writes vanish."""
FULL_MINOR = 7
"""The minor number of /dev/full: every write fails with ENOSPC."""


def make_device(path: Path, minor: int) -> Path:
    """A character device at `path` acting as /dev/null or /dev/full (`minor`), so that no test
    ever writes to, or risks removing, the machine's own. Skips where only root may make one."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
    except PermissionError:
        pytest.skip("making a device node needs root")
    return path
