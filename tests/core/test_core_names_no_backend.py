"""Core's code speaks to backends through capabilities only: issue 10's own check.

`grep -rniE "import redis|eventbus_redis|xadd|..." eventbus_core/src` must find nothing apart
from text that only names a plugin for a pip hint (`_install.py`). A docstring's example
(`EVENTBUS_REDIS_KEYS`) failed it once (trial 135), though no code named a backend.
"""

from __future__ import annotations

import re
from pathlib import Path

CORE_SRC = Path(__file__).resolve().parents[2] / "eventbus_core" / "src"
BACKEND_WORDS = re.compile(
    r"import redis|eventbus_redis|xadd|xreadgroup|lrange|lpos|llm-proxy-dispatchers", re.I
)
PIP_HINTS = {"_install.py"}  # names the sibling distributions for `pip install` only


def test_core_source_names_no_backend() -> None:
    found = [
        f"{path.relative_to(CORE_SRC)}:{number}: {line.strip()}"
        for path in sorted(CORE_SRC.rglob("*"))
        if path.is_file()
        and path.suffix in {".py", ".pyi", ".md", ".txt", ".toml"}
        and path.name not in PIP_HINTS
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if BACKEND_WORDS.search(line)
    ]
    assert not found, "core names a backend:\n" + "\n".join(found)
    assert any(CORE_SRC.rglob("*.py")), CORE_SRC  # the walk saw the source
