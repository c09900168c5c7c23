"""The operator docs tell the truth: every `eventbus` command in them parses, links resolve,
and the middleware's options table lists exactly its arguments."""

from __future__ import annotations

import inspect
import re
import shlex
from pathlib import Path

import pytest

from eventbus_core import EventBusMiddleware
from eventbus_core.cli import build_parser

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = [
    "concepts.md",
    "middleware.md",
    "go-interop.md",
    "operations.md",
    "configuration.md",
    "plugins/writing-a-backend.md",
    "sinks/otlp.md",
    "sinks/helicone.md",
    "sinks/lunary.md",
    "sinks/jsonl.md",
    "sinks/console.md",
    "sinks/webhook.md",
]


def commands(text: str) -> list[str]:
    """`eventbus ...` command lines of a page (in code blocks, after env assignments)."""
    found = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("#", "|", "-", "`")) and not stripped.startswith("`eventbus"):
            continue
        match = re.search(
            r"(?:^|\s|/)(eventbus (?:tail|publish|stats|replay|plugins|dispatch)\b[^|<>`]*)",
            stripped,
        )
        if match and (
            line.startswith("    ")
            or stripped.startswith("eventbus")
            or "=" in stripped.split("eventbus")[0]
        ):
            found.append(match.group(1).strip())
    return found


@pytest.mark.parametrize("page", PAGES)
def test_every_command_parses(page: str) -> None:
    parser = build_parser()
    for line in commands((DOCS / page).read_text()):
        argv = shlex.split(line, comments=True)[1:]
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # argparse's way of refusing
            pytest.fail(f"{page}: `{line}` does not parse ({exc})")
        assert callable(args.func), line


def test_the_pages_have_commands() -> None:
    assert len(commands((DOCS / "operations.md").read_text())) >= 5


@pytest.mark.parametrize("page", [p for p in PAGES if p != "configuration.md"])
def test_links_resolve(page: str) -> None:
    path = DOCS / page
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", path.read_text()):
        if "://" not in target:
            assert (path.parent / target).exists(), f"{page} links to missing {target}"


def test_middleware_options_table_is_complete() -> None:
    text = (DOCS / "middleware.md").read_text()
    options = text.split("## Options", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", options, re.M))
    arguments = set(inspect.signature(EventBusMiddleware).parameters) - {"app"}
    assert documented == arguments
