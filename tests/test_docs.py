"""The README and docs/: every relative link resolves, every command they show parses."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHIMS = {"search", "retrain", "prune", "analyze", "reproduce", "bench", "payoff"}  # scripts/X.py
BLOCK = re.compile(r"```(bash|console)\n(.*?)```", re.S)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def commands(page: Path) -> list[str]:
    """The evoprune and scripts/*.py command lines of a page's bash and console blocks."""
    out = []
    for kind, body in BLOCK.findall(page.read_text()):
        text = body.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.strip()
            if kind == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            line = line.split("  #")[0].split(" # ")[0]
            line = re.split(r" (?:\||>|>>|&&|;) ", line)[0].strip()  # the command, not the shell
            if line.startswith(("evoprune ", "python scripts/", "python -m evoprune ")):
                out.append(line)
    return out


def argv_of(line: str) -> list[str] | None:
    """The `evoprune` argv a command line means (None: a script with its own parser)."""
    words = [w for w in shlex.split(line) if not w.startswith(("$(", "`"))]
    if words[0] == "evoprune":
        return words[1:]
    if words[:3] == ["python", "-m", "evoprune"]:
        return words[3:]
    name = Path(words[1]).stem
    return [name, *words[2:]] if name in SHIMS else None


def test_the_readme_is_one_screen_and_links_every_page():
    """README: at most 250 lines, the main job inside its first 60, every docs page linked."""
    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= 250
    assert any("scripts/search.py --c-flops 0.25 --c-mcb 1.0" in x for x in lines[:60])
    for page in (ROOT / "docs").glob("*.md"):
        assert f"](docs/{page.name})" in text, page.name


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_resolves(page):
    """A link to a file of the repository points at one that exists."""
    missing = []
    for target in LINK.findall(page.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        if not (page.parent / target).exists():
            missing.append(target)
    assert not missing, missing


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_command_shown_parses(page):
    """Each evoprune command (and each scripts/ shim) parses with the CLI's own parser;
    each other script it names exists."""
    from evoprune.cli.commands import build_parser

    parser = build_parser()
    for line in commands(page):
        argv = argv_of(line)
        if argv is None:
            assert (ROOT / shlex.split(line)[1]).is_file(), line
            continue
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"{page.name}: `{line}` does not parse (exit {exc.code})")


def test_the_readme_shows_the_main_commands():
    """The README's blocks hold the search, baselines and the set-up's test command."""
    lines = commands(ROOT / "README.md")
    assert any(x.startswith("python scripts/search.py") for x in lines)
    assert any(x.startswith("evoprune baselines") for x in lines)
    assert "python -m pytest -q" in (ROOT / "README.md").read_text()
