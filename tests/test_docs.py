"""The documentation's code runs: every ```python block of README.md and docs/*.md.

One test per page (ids are the file names). A page's blocks run in order in one
fresh namespace, so a later block can use what an earlier one defined; each page
runs in its own empty temporary directory.

Markup the pages can use:

- A ```text (or ```mermaid) block right after a python block (only blank lines
  between) is that block's expected stdout. It is compared line by line,
  exactly but for trailing spaces; ``...`` inside an expected line matches any
  text (timings, throughputs).
- ``<!-- skip -->`` (or ``<!-- skip: why -->``) on the line before a python
  fence: the block is shown but not run. Use it sparingly, and say why.
- A hidden setup block, for preparation readers need not see (writing the files
  an example reads)::

      <!-- setup
      ```python
      ...
      ```
      -->

  It runs where it stands, like a visible block; its output is not checked.

A second test checks that every relative link in those pages points to a file
that exists.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
PYTHON_LANGS = ("python", "py")
OUTPUT_LANGS = ("text", "mermaid")

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
_SKIP = re.compile(r"^\s*<!--\s*skip\b.*-->\s*$")
_SETUP_OPEN = re.compile(r"^\s*<!--\s*setup\b(?!.*-->)")


@dataclasses.dataclass
class Block:
    """One python block of a page, with what the page says about it."""

    path: Path
    line: int  # 1-based line number of the first line of code
    code: str
    skip: bool = False
    hidden: bool = False
    expected: str | None = None  # the following ```text block, if any


@dataclasses.dataclass
class _Fenced:
    line: int
    lang: str
    body: str
    before: str  # the line right above the fence
    hidden: bool
    blank_gap_only: bool  # only blank lines since the previous fence closed


def _fenced_blocks(text: str) -> Iterator[_Fenced]:
    lines = text.splitlines()
    i, in_setup, last_close = 0, False, -2
    while i < len(lines):
        line = lines[i]
        if _SETUP_OPEN.match(line):
            in_setup = True
        elif in_setup and line.strip() == "-->":
            in_setup = False
        m = _FENCE.match(line)
        if not m:
            i += 1
            continue
        fence = m["fence"]
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].lstrip().startswith(fence):
            body.append(lines[j])
            j += 1
        gap = lines[last_close + 1 : i]
        yield _Fenced(
            line=i + 2,
            lang=m["info"].lower(),
            body="\n".join(body) + "\n",
            before=lines[i - 1] if i else "",
            hidden=in_setup,
            blank_gap_only=last_close >= 0 and not any(ln.strip() for ln in gap),
        )
        last_close = j
        i = j + 1


def parse_page(path: Path) -> list[Block]:
    """The python blocks of a markdown page, each with its skip flag and expected output."""
    blocks: list[Block] = []
    previous_lang = ""
    for fenced in _fenced_blocks(path.read_text(encoding="utf-8")):
        after_python, previous_lang = previous_lang in PYTHON_LANGS, fenced.lang
        if fenced.lang in PYTHON_LANGS:
            blocks.append(
                Block(
                    path,
                    fenced.line,
                    fenced.body,
                    skip=bool(_SKIP.match(fenced.before)),
                    hidden=fenced.hidden,
                )
            )
        elif (
            fenced.lang in OUTPUT_LANGS
            and after_python
            and fenced.blank_gap_only
            and not blocks[-1].hidden
        ):
            blocks[-1].expected = fenced.body
    return blocks


def _line_pattern(expected: str) -> re.Pattern[str]:
    return re.compile(".*?".join(re.escape(part) for part in expected.split("...")))


def output_mismatch(expected: str, actual: str) -> str | None:
    """Why ``actual`` does not match ``expected`` (``...`` is a wildcard in a line), or None."""
    want = [ln.rstrip() for ln in expected.rstrip("\n").split("\n")]
    got = [ln.rstrip() for ln in actual.rstrip("\n").split("\n")]
    for n, (w, g) in enumerate(zip(want, got), start=1):
        if not _line_pattern(w).fullmatch(g):
            return f"line {n}: expected {w!r}, got {g!r}"
    if len(want) != len(got):
        return f"expected {len(want)} lines, got {len(got)}"
    return None


def _run_block(block: Block, namespace: dict[str, object]) -> None:
    # Pad with blank lines so that tracebacks show the markdown file's line numbers.
    source = "\n" * (block.line - 1) + block.code
    # dont_inherit: the page runs without this file's `from __future__ import annotations`
    exec(compile(source, str(block.path), "exec", dont_inherit=True), namespace)


def _page_id(path: Path) -> str:
    return path.name


def _doc_param(page: Path) -> Any:
    """A page; one whose examples use Ray needs the session's local Ray (or is skipped)."""
    if 'backend="ray"' not in page.read_text():
        return pytest.param(page, id=page.name)
    no_ray = importlib.util.find_spec("ray") is None
    marks = [pytest.mark.ray, pytest.mark.skipif(no_ray, reason="needs the extra flowpipe[ray]")]
    return pytest.param(page, id=page.name, marks=marks)


DOC_PAGES = [_doc_param(p) for p in PAGES if any(not b.skip for b in parse_page(p))]


@pytest.mark.parametrize("page", DOC_PAGES)
def test_page_examples_run(
    page: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    try:
        for block in parse_page(page):
            if block.skip:
                continue
            capsys.readouterr()
            try:
                _run_block(block, namespace)
            finally:
                printed = capsys.readouterr().out
            if block.expected is not None:
                problem = output_mismatch(block.expected, printed)
                if problem:
                    pytest.fail(
                        f"{page.name}:{block.line}: printed output differs ({problem})\n"
                        f"--- printed ---\n{printed}--- expected ---\n{block.expected}",
                        pytrace=False,
                    )
    finally:
        namespace.clear()  # runs left open by an example are closed when collected
        gc.collect()


_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_links_resolve(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    broken = []
    for m in _LINK.finditer(text):
        target = m["target"].split("#", 1)[0]
        if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target):  # anchors, URLs
            continue
        if not (page.parent / target).exists():
            broken.append(m["target"])
    assert not broken, f"{page.name}: links to missing files: {broken}"


# -- the harness itself ----------------------------------------------------------------


def test_parse_page_reads_skip_setup_and_expected_output(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Intro.\n\n"
        "<!-- setup\n```python\nhidden = 1\n```\n-->\n\n"
        "```python\nprint(hidden)\n```\n\n```text\n1\n```\n\n"
        "<!-- skip: needs a camera -->\n```python\nopen_camera()\n```\n\n"
        "Prose between.\n\n```python\nx = 2\n```\n\nMore prose.\n\n```text\nnot output\n```\n"
        "```python\ny = 3\n```\n```bash\nls\n```\n```text\nnot output either\n```\n",
        encoding="utf-8",
    )
    blocks = parse_page(page)
    assert [(b.code, b.skip, b.hidden, b.expected) for b in blocks] == [
        ("hidden = 1\n", False, True, None),
        ("print(hidden)\n", False, False, "1\n"),
        ("open_camera()\n", True, False, None),
        ("x = 2\n", False, False, None),
        ("y = 3\n", False, False, None),
    ]
    assert [b.line for b in blocks][:4] == [5, 10, 19, 25]


@pytest.mark.parametrize(
    ("expected", "actual", "ok"),
    [
        pytest.param("a\nb\n", "a\nb\n", True, id="same"),
        pytest.param("a\nb\n", "a\nb  \n", True, id="trailing-spaces"),
        pytest.param("a\nb\n", "a\nc\n", False, id="different-line"),
        pytest.param("a\n", "a\nb\n", False, id="extra-line"),
        pytest.param("a\nb\n", "a\n", False, id="missing-line"),
        pytest.param("elapsed ...s\n", "elapsed 0.012s\n", True, id="ellipsis"),
        pytest.param("x ... y ... z\n", "x 1 y 2 z\n", True, id="two-ellipses"),
        pytest.param("x ... y\n", "x 1 z\n", False, id="ellipsis-then-mismatch"),
        pytest.param("...\n", "anything at all\n", True, id="whole-line-ellipsis"),
        pytest.param("a.b\n", "axb\n", False, id="dot-is-literal"),
        pytest.param("a\n...\n", "a\nb\nc\n", False, id="ellipsis-stays-in-its-line"),
    ],
)
def test_output_matching(expected: str, actual: str, ok: bool) -> None:
    assert (output_mismatch(expected, actual) is None) is ok
