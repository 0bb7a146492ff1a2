"""Every message and page that says how to install an extra gives the same command.

flowpipe is installed from its checkout (the name ``flowpipe`` on the package
index belongs to another project), so the one command is
``pip install -e '.[extra]'``, run at the checkout's root, and the extra must
exist in pyproject.toml.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SEARCHED = sorted(
    [
        *(ROOT / "flowpipe").rglob("*.py"),
        *(ROOT / "docs").glob("*.md"),
        ROOT / "README.md",
        *(ROOT / "examples").glob("*.py"),
        *(ROOT / "examples").glob("*.ipynb"),
        *(ROOT / "benchmarks").glob("*.md"),
    ]
)
# ``pip install`` with anything up to an argument that names extras in brackets:
# ``pip install 'flowpipe[progress]'``, ``pip install -q -e ".[dev]"``, ...
ANY_EXTRA = re.compile(r"pip install(?:[ \t]+[^\s`\[]+)*?[ \t]+[^\s`\[]*\[[^\]\s]*\][^\s`,;)]*")
THE_COMMAND = re.compile(r"pip install -e '\.\[(?P<extras>[\w,-]+)\]'")
# Other projects' packages, installed by their own names (the ParallelPipe guide).
OTHER_PROJECTS = re.compile(r"pip install (PyParallelPipe|ray\[)")


def _extras_in_pyproject() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([\w-]+)\s*=", section, flags=re.MULTILINE))


def _hints() -> list[tuple[str, str, str]]:
    """(file, the command, the text after it on its line) for each hint found."""
    found = []
    for path in SEARCHED:
        text = path.read_text(encoding="utf-8")
        for match in ANY_EXTRA.finditer(text):
            if not OTHER_PROJECTS.match(match.group(0)):
                after = text[match.end() :].split("\n", 1)[0]
                found.append((str(path.relative_to(ROOT)), match.group(0), after))
    return found


HINTS = _hints()


def test_the_search_finds_the_known_hints() -> None:
    in_messages = {command for path, command, _ in HINTS if path.startswith("flowpipe/")}
    assert "pip install -e '.[progress]'" in in_messages  # progress=True without tqdm
    assert "pip install -e '.[ray]'" in in_messages  # backend="ray" without Ray
    assert any(path == "docs/index.md" for path, _, _ in HINTS)


@pytest.mark.parametrize(
    ("path", "hint", "after"), HINTS, ids=[f"{path}:{hint}" for path, hint, _ in HINTS]
)
def test_every_install_hint_is_the_one_command(path: str, hint: str, after: str) -> None:
    command = THE_COMMAND.fullmatch(hint)
    assert command, f"{path}: {hint!r} is not pip install -e '.[extra]'"
    for extra in command.group("extras").split(","):
        assert extra in _extras_in_pyproject(), f"{path}: no extra {extra!r} in pyproject.toml"
    if path.startswith("flowpipe/"):  # an error message: it says where to run it
        assert after.startswith(" in the flowpipe checkout"), f"{path}: {hint}{after}"
