"""The documentation tells the truth: settings, hooks and the README's commands and code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from eventbus_core import all_env_vars, hookspecs

ROOT = Path(__file__).resolve().parent.parent.parent
DOCS = ROOT / "docs"


def test_every_setting_is_in_the_configuration_reference() -> None:
    text = (DOCS / "configuration.md").read_text()
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `([A-Z0-9_]+)` \| `(\w+)` \|", text, re.MULTILINE)
    }
    # Core's settings and every installed plugin's (redis, nats, ...).
    assert {"REDIS_URL", "NATS_URL"} <= set(all_env_vars().values())
    missing = {field: var for field, var in all_env_vars().items() if rows.get(var) != field}
    assert not missing, f"add these to docs/configuration.md (variable: field): {missing}"


def test_every_hook_has_a_section() -> None:
    text = (DOCS / "plugins" / "hooks.md").read_text()
    hooks = [name for name in dir(hookspecs) if name.startswith("eventbus_")]
    assert hooks
    for name in hooks:
        assert f"## {name}" in text, f"docs/plugins/hooks.md has no section for {name}"


def test_readme_names_the_two_quick_start_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert "python3 dev.py demo" in text
    assert "python3 dev.py test" in text
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 dev.py test" in ci


def test_readme_links_resolve() -> None:
    text = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links to missing {target}"


@pytest.mark.parametrize("page", ["README.md", "docs/quickstart.md"])
def test_python_examples_run(page: str, tmp_path: Path) -> None:
    text = (ROOT / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert blocks
    for block in blocks:
        if "for event in sub:" in block:
            continue  # blocks forever by design (a consumer loop)
        script = tmp_path / "example.py"
        script.write_text(block)
        done = subprocess.run(
            [sys.executable, str(script)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode == 0, f"{page} example failed:\n{block}\n{done.stderr}"
