"""Tracebacks of a stage's error show the user's code, not flowpipe's plumbing (issue 20)."""

from __future__ import annotations

import linecache
import os
import re
import traceback
from typing import Any

import pytest

import flowpipe
from flowpipe import StageError, stage

FLOWPIPE = os.path.dirname(flowpipe.__file__) + os.sep
HERE = os.path.abspath(__file__)


def frames(text: str) -> list[str]:
    """The files of the frames a traceback's text shows, in order."""
    return re.findall(r'^\s*File "([^"]+)", line \d+', text, flags=re.MULTILINE)


def shown(err: BaseException) -> str:
    """All a user sees of an error: its chain, then the remote traceback in its message."""
    return "".join(traceback.format_exception(type(err), err, err.__traceback__))


def grade_mark(x: int) -> int:
    return 10 // (x - 3)  # fails on 3


def test_a_stage_error_shows_the_users_frames_and_few_of_flowpipes(backend: str) -> None:
    @stage
    def grade(x: int) -> int:
        return grade_mark(x)

    with pytest.raises(StageError) as info:
        grade.run(range(5), backend=backend)
    text = shown(info.value)
    files = frames(text)
    ours = [f for f in files if f.startswith(FLOWPIPE)]
    assert len(ours) <= 4, text  # the caller's way in: run, collect, take
    assert files.count(HERE) >= 3, text  # the call here, grade and grade_mark
    assert "return 10 // (x - 3)  # fails on 3" in text
    remote = info.value.remote_traceback
    if remote is not None:  # from a worker elsewhere: the user's frames only
        assert not any(f.startswith(FLOWPIPE) for f in frames(remote)), remote
        assert "return grade_mark(x)" in remote


CELL = """\
def grade(x):
    if x == 3:
        raise ValueError("bad mark")
    return x
"""


def notebook_cell(source: str, name: str) -> dict[str, Any]:
    """Run ``source`` as a notebook does a cell: its lines in ``linecache`` under the
    cell's name, its functions in ``__main__`` (shipped by value to worker processes)."""
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(source, name, "exec"), namespace)
    return namespace


def test_a_traceback_names_a_notebook_cells_line(backend: str) -> None:
    cell = "<ipython-input-7-5e1d2c>"
    grade = notebook_cell(CELL, cell)["grade"]
    try:
        with pytest.raises(StageError) as info:
            stage(grade).run(range(5), backend=backend)
        text = shown(info.value)
    finally:
        del linecache.cache[cell]
    assert f'File "{cell}", line 3, in grade' in text, text
    assert 'raise ValueError("bad mark")' in text, text
    assert "<dynamic-code>" not in text
