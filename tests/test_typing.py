"""The static types: the files in ``tests/typing/`` checked by mypy (--strict) and pyright (strict).

- ``stages.py``, ``pipelines.py``: ``assert_type`` checks; neither checker may report anything.
- ``fail_*.py``: mistakes each checker must report, on the lines marked
  ``# E: <mypy error code> | <pyright rule>``, and nowhere else.
- ``reveal_spec_example.py``: SPEC section 7's example reveals ``list[str]``.

The package itself must be clean too: ``test_pyright_strict_on_the_package``
runs pyright with the ``[tool.pyright]`` configuration of pyproject.toml (the
``flowpipe`` package, strict); mypy --strict covers the package through its own
configuration (``.venv/bin/mypy``).

Each checker runs once over all files (module fixtures). Pyright's PyPI wrapper
fetches the pyright package from the npm registry on its first run; where it
cannot start, the pyright tests are skipped, saying why.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
TYPING = ROOT / "tests" / "typing"
FILES = sorted(TYPING.glob("*.py"))
PASSING = [p for p in FILES if not p.name.startswith(("fail_", "reveal_"))]
FAILING = [p for p in FILES if p.name.startswith("fail_")]
REVEAL = TYPING / "reveal_spec_example.py"
PYTHON_VERSION = "3.10"  # the oldest Python flowpipe supports

_MARK = re.compile(r"#\s*E:\s*(?P<mypy>[\w-]+)\s*\|\s*(?P<pyright>\w+)\s*$")


@dataclasses.dataclass(frozen=True)
class Report:
    """One diagnostic: file name, 1-based line, severity, code (mypy) or rule (pyright)."""

    file: str
    line: int
    severity: str
    code: str
    message: str


def expected_errors(path: Path, checker: str) -> dict[int, str]:
    """Line -> the error code ``checker`` must report there, from the ``# E:`` marks."""
    marks: dict[int, str] = {}
    for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        m = _MARK.search(text)
        if m:
            marks[n] = m[checker]
    return marks


_MYPY_LINE = re.compile(
    r"^(?P<file>[^:]+):(?P<line>\d+): (?P<severity>error|note): (?P<message>.*?)"
    r"(?:  \[(?P<code>[\w-]+)\])?$"
)


def _run_mypy(tmp: Path) -> list[Report]:
    from mypy import api

    out, err, status = api.run(
        [
            "--strict",
            "--python-version",
            PYTHON_VERSION,
            "--cache-dir",
            str(tmp / "mypy_cache"),
            "--show-error-codes",
            "--no-error-summary",
            "--no-pretty",
            *map(str, FILES),
        ]
    )
    if status not in (0, 1):
        pytest.fail(f"mypy did not run (exit {status}):\n{out}\n{err}")
    reports = []
    for text in out.splitlines():
        m = _MYPY_LINE.match(text)
        if m:
            reports.append(
                Report(
                    Path(m["file"]).name,
                    int(m["line"]),
                    m["severity"],
                    m["code"] or "",
                    m["message"],
                )
            )
    return reports


def _pyright_json(*args: str) -> dict[str, Any]:
    """Pyright's ``--outputjson`` result, run from the repository root; skip if it cannot start."""
    try:
        import pyright  # noqa: F401 - only to learn whether the wrapper is installed
    except ImportError:
        pytest.skip("pyright is not installed (pip install -e '.[dev]')")
    command = [sys.executable, "-m", "pyright", "--outputjson", "--pythonpath", sys.executable]
    try:
        done = subprocess.run(
            [*command, *args], cwd=ROOT, capture_output=True, text=True, timeout=240
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"pyright could not start: {exc!r}")
    try:
        result: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        tail = (done.stderr or done.stdout)[-600:]
        pytest.skip(f"pyright could not start (exit {done.returncode}): {tail}")
    return result


def _run_pyright() -> list[Report]:
    result = _pyright_json("--pythonversion", PYTHON_VERSION, *map(str, FILES))
    return [
        Report(
            Path(d["file"]).name,
            d["range"]["start"]["line"] + 1,
            d["severity"],
            d.get("rule", ""),
            d["message"],
        )
        for d in result["generalDiagnostics"]
    ]


@pytest.fixture(scope="module")
def mypy_reports(tmp_path_factory: pytest.TempPathFactory) -> list[Report]:
    return _run_mypy(tmp_path_factory.mktemp("typing"))


@pytest.fixture(scope="module")
def pyright_reports() -> list[Report]:
    return _run_pyright()


def _errors_in(reports: list[Report], path: Path) -> list[Report]:
    return [r for r in reports if r.file == path.name and r.severity == "error"]


def _check_marks(reports: list[Report], path: Path, checker: str) -> None:
    want = expected_errors(path, checker)
    got: dict[int, list[Report]] = {}
    for r in _errors_in(reports, path):
        got.setdefault(r.line, []).append(r)
    unexpected = [f"{r.line}: {r.message} [{r.code}]" for n in got if n not in want for r in got[n]]
    missing = [f"{n}: expected [{code}]" for n, code in want.items() if n not in got]
    wrong = [
        f"{n}: expected [{code}], got {[r.code for r in got[n]]}"
        for n, code in want.items()
        if n in got and code not in {r.code for r in got[n]}
    ]
    problems = {"unexpected": unexpected, "missing": missing, "wrong code": wrong}
    assert not any(problems.values()), f"{checker} on {path.name}: {problems}"


# The first test to ask for a checker's reports pays for its run (a few seconds).
SLOW = pytest.mark.timeout(300)


@SLOW
@pytest.mark.parametrize("path", PASSING, ids=lambda p: p.name)
def test_mypy_accepts(path: Path, mypy_reports: list[Report]) -> None:
    assert _errors_in(mypy_reports, path) == []


@SLOW
@pytest.mark.parametrize("path", FAILING, ids=lambda p: p.name)
def test_mypy_reports_each_mistake_where_marked(path: Path, mypy_reports: list[Report]) -> None:
    assert expected_errors(path, "mypy"), f"{path.name} has no # E: marks"
    _check_marks(mypy_reports, path, "mypy")


@SLOW
def test_mypy_reveals_spec_example(mypy_reports: list[Report]) -> None:
    notes = [r.message for r in mypy_reports if r.file == REVEAL.name]
    assert notes == ['Revealed type is "list[str]"'] or notes == [
        'Revealed type is "builtins.list[builtins.str]"'  # mypy before 1.16 spells it out
    ]


@SLOW
@pytest.mark.parametrize("path", PASSING, ids=lambda p: p.name)
def test_pyright_accepts(path: Path, pyright_reports: list[Report]) -> None:
    assert _errors_in(pyright_reports, path) == []


@SLOW
@pytest.mark.parametrize("path", FAILING, ids=lambda p: p.name)
def test_pyright_reports_each_mistake_where_marked(
    path: Path, pyright_reports: list[Report]
) -> None:
    _check_marks(pyright_reports, path, "pyright")


@SLOW
def test_pyright_reveals_spec_example(pyright_reports: list[Report]) -> None:
    found = [(r.severity, r.message) for r in pyright_reports if r.file == REVEAL.name]
    assert found == [("information", 'Type of "(parse | half | label).run(lines)" is "list[str]"')]


@SLOW
def test_pyright_strict_on_the_package() -> None:
    # No files named: pyright checks what pyproject.toml's [tool.pyright] includes.
    result = _pyright_json()
    errors = [
        f"{d['file']}:{d['range']['start']['line'] + 1}: {d['message']} ({d.get('rule', '')})"
        for d in result["generalDiagnostics"]
        if d["severity"] == "error"
    ]
    assert errors == [], "pyright (strict) on flowpipe/:\n" + "\n".join(errors)
    package = sorted((ROOT / "flowpipe").rglob("*.py"))
    assert result["summary"]["filesAnalyzed"] >= len(package), "pyright missed package files"


def test_marks_are_read() -> None:
    line = "pipe.run([1])  # E: list-item | reportArgumentType"
    m = _MARK.search(line)
    assert m is not None
    assert (m["mypy"], m["pyright"]) == ("list-item", "reportArgumentType")


DOCS_EXAMPLE = TYPING / "fail_docs_example.py"
DOCS_PAGE = ROOT / "docs" / "types.md"


@SLOW
def test_docs_show_what_mypy_reports(mypy_reports: list[Report]) -> None:
    (found,) = _errors_in(mypy_reports, DOCS_EXAMPLE)
    assert f"error: {found.message}  [{found.code}]" in DOCS_PAGE.read_text(encoding="utf-8")


@SLOW
def test_docs_show_what_pyright_reports(pyright_reports: list[Report]) -> None:
    (found,) = _errors_in(pyright_reports, DOCS_EXAMPLE)
    assert f"error: {found.message} ({found.code})" in DOCS_PAGE.read_text(encoding="utf-8")
