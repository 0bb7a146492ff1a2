"""``flowpipe.compat.parallelpipe``: ParallelPipe programs run by changing their import.

Every API test runs threaded and with ``multiprocess=True`` (the ``multiprocess`` fixture).
Stages that must hold still wait on a ``FileGate``; nothing waits on a guess.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import FileGate

from flowpipe import RunClosed, StageError
from flowpipe.compat.parallelpipe import Pipeline, Stage

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
GATE_TIMEOUT = 10.0
# The README's example sleeps 0.5 s per stage and 0.3 s between puts; its clock is
# sped up this much (in every process) so that the test stays fast.
TIME_SCALE = 0.1


# -- the README's example -------------------------------------------------------------------


def readme_text() -> str:
    """ParallelPipe's README, as its package publishes it (the long description).

    Read from the installed PyParallelPipe 1.0.2 (the tests extra installs it),
    so that the test runs the original text without a copy of it in this repository.
    """
    try:
        meta = importlib.metadata.metadata("PyParallelPipe")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("needs PyParallelPipe==1.0.2 installed (the tests extra) for its README")
    text = str(meta["Description"] or "")
    assert "```python" in text, "PyParallelPipe's README has no python example"
    return text


def readme_example() -> str:
    """The README's complete program: its first python block with a main guard."""
    blocks: list[str] = re.findall(r"```python\n(.*?)```", readme_text(), re.S)
    return next(b for b in blocks if "__main__" in b)


def run_example(code: str, tmp_path: Path) -> list[list[str]]:
    """Run ``code`` as a script with ParallelPipe's import swapped for flowpipe's."""
    old_import = "from ParallelPipe import Pipeline, Stage"
    assert code.count(old_import) == 1
    script = tmp_path / "example.py"
    script.write_text(
        code.replace(old_import, "from flowpipe.compat.parallelpipe import Pipeline, Stage")
    )
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import time\n"
        "_sleep = time.sleep\n"
        f"time.sleep = lambda seconds: _sleep(seconds * {TIME_SCALE})\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return [ast.literal_eval(line) for line in done.stdout.splitlines()]


def check_example_output(lines: list[list[str]]) -> None:
    """What the README shows: frames in order, some dropped, each through every stage."""
    assert lines, "the end stage printed nothing"
    numbers = [int(line[0].removeprefix("Pipeline: ")) for line in lines]
    assert numbers == sorted(set(numbers))  # in order, none twice
    assert numbers[-1] == 10  # setstop() finishes what was put; the newest is never dropped
    for line in lines:
        assert line[1:] == ["stage one", "stage two", "stage three"]


def test_the_readme_example_runs_with_multiprocess(tmp_path: Path) -> None:
    code = readme_example()
    assert "multiprocess=True" in code
    check_example_output(run_example(code, tmp_path))


def test_the_readme_example_runs_threaded(tmp_path: Path) -> None:
    """The same program with the README's own threaded ``Pipeline(..., end_stage=end, ...)`` line."""
    code = readme_example()
    text = readme_text()
    threaded = re.search(r"^P = Pipeline\(.*multiprocess=False\)$", text, re.M)
    assert threaded is not None
    given = re.search(r"^ +P = Pipeline\(.*\)$", code, re.M)
    assert given is not None
    code = code.replace(given[0].strip(), threaded[0])
    check_example_output(run_example(code, tmp_path))


# -- the API ------------------------------------------------------------------------------------


@pytest.fixture(params=[False, True], ids=["threads", "multiprocess"])
def multiprocess(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


class AddName(Stage):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def stage_run(self, x: list[str]) -> list[str]:
        return [*x, self.name]


class Double(Stage):
    def stage_run(self, x: int) -> int:
        return 2 * x


class Window(Stage):
    def stage_run(self, xs: list[int]) -> list[int]:
        return xs


class NoSuperInit(Stage):
    def __init__(self) -> None:  # ParallelPipe users often skip super().__init__()
        self.offset = 1

    def stage_run(self, x: int) -> int:
        return x + self.offset


class HeldFirst(Stage):
    """Says it has begun its first item, then waits for ``release``."""

    def __init__(self, begun: FileGate, release: FileGate) -> None:
        super().__init__()
        self.begun, self.release, self.first = begun, release, True

    def stage_run(self, x: int) -> int:
        if self.first:
            self.first = False
            self.begun.open()
            self.release.wait()
        return x


class Fails(Stage):
    def stage_run(self, x: int) -> int:
        if x == 2:
            raise ValueError("two")
        return x


def test_put_and_get_through_every_stage(multiprocess: bool) -> None:
    P = Pipeline(
        [AddName("one"), AddName("two")],
        end_stage=AddName("end"),
        buffer_size=2,
        multiprocess=multiprocess,
    )
    P.start()
    try:
        for i in range(5):
            P.put([str(i)])
            assert P.get(timeout=GATE_TIMEOUT) == [str(i), "one", "two", "end"]
    finally:
        P.setstop()
    assert len(P) == 3


def test_a_list_buffer_size_with_either_mode(multiprocess: bool) -> None:
    P = Pipeline([Double(), NoSuperInit()], buffer_size=[1, 3], multiprocess=multiprocess)
    with P:
        for i in range(4):
            P.put(i)
            assert P.get(timeout=GATE_TIMEOUT) == 2 * i + 1


def test_set_get_all_gives_the_last_buffer_size_items(multiprocess: bool) -> None:
    window = Window()
    window.set_get_all()
    P = Pipeline([window], buffer_size=3, multiprocess=multiprocess)
    with P:
        for i in range(3):
            P.put(i)
        assert P.get(timeout=GATE_TIMEOUT) == [0, 1, 2]
        P.put(3)
        assert P.get(timeout=GATE_TIMEOUT) == [1, 2, 3]
    window.set_get_single()
    assert not window.is_get_all


def test_a_full_buffer_keeps_the_newest_items(multiprocess: bool, tmp_path: Path) -> None:
    begun, release = FileGate(tmp_path / "begun"), FileGate(tmp_path / "release")
    P = Pipeline(
        [HeldFirst(begun, release)],
        end_stage=Double(),
        buffer_size=[2, 50],
        multiprocess=multiprocess,
    )
    P.start()
    try:
        P.put(0)
        assert begun.wait()
        for i in range(1, 50):
            P.put(i)  # never waits: the oldest waiting item makes room
        release.open()
    finally:
        P.setstop()  # finishes what was kept
    got = []
    while True:
        try:
            got.append(P.get(timeout=GATE_TIMEOUT))
        except RunClosed:
            break
    assert got[0] == 0
    assert got[-1] == 98  # the newest item (49), doubled
    assert got == sorted(got)
    dropped = P.stats["HeldFirst"].dropped
    assert len(got) + dropped == 50


def test_put_before_start_keeps_the_newest(multiprocess: bool) -> None:
    P = Pipeline([Double()], buffer_size=2, multiprocess=multiprocess)
    for i in range(5):
        P.put(i)
    with P:
        assert [P.get(timeout=GATE_TIMEOUT) for _ in range(2)] == [6, 8]


def test_setstop_stops_every_worker_while_nothing_is_read(multiprocess: bool) -> None:
    P = Pipeline([Double(), Double()], buffer_size=1, multiprocess=multiprocess)
    P.start()
    for i in range(20):
        P.put(i)
    P.setstop()  # the suite's fixture checks that no thread or process is left
    P.setstop()  # a second call does nothing
    with pytest.raises(RunClosed):
        P.put(1)


def test_an_error_in_a_stage_is_raised_not_swallowed(multiprocess: bool) -> None:
    P = Pipeline([Double(), Fails()], buffer_size=5, multiprocess=multiprocess)
    P.start()
    try:
        P.put(0)
        assert P.get(timeout=GATE_TIMEOUT) == 0
        P.put(1)  # Fails gets 2
        with pytest.raises(StageError, match="Fails") as err:
            P.get(timeout=GATE_TIMEOUT)
        assert isinstance(err.value.__cause__, ValueError)
        with pytest.raises(StageError):
            P.put(3)
    finally:
        P.setstop()  # already reported: stops quietly


def test_setstop_raises_an_error_nobody_saw(multiprocess: bool) -> None:
    P = Pipeline([Fails()], buffer_size=5, multiprocess=multiprocess)
    P.start()
    P.put(2)
    with pytest.raises(StageError, match="Fails"):
        P.setstop()


def test_end_stage_is_the_sink_and_the_list_is_not_changed() -> None:
    stages: list[Stage] = [Double()]
    P = Pipeline(stages, end_stage=NoSuperInit())
    assert len(stages) == 1
    assert len(P) == 2
    assert P.stages[-1].is_end_stage


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ({"stages": [Double()], "buffer_size": [1, 2]}, ValueError),
        ({"stages": [Double()], "buffer_size": 0}, ValueError),
        ({"stages": [Double()], "buffer_size": "2"}, TypeError),
        ({"stages": [lambda x: x]}, TypeError),
        ({"stages": []}, ValueError),
    ],
)
def test_bad_arguments_are_refused(args: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Pipeline(**args)


def test_start_twice_is_refused() -> None:
    P = Pipeline([Double()])
    P.start()
    try:
        with pytest.raises(RuntimeError):
            P.start()
    finally:
        P.setstop()


def test_a_pipeline_dropped_without_setstop_stops_its_workers(multiprocess: bool) -> None:
    P = Pipeline([Double()], buffer_size=2, multiprocess=multiprocess)
    P.start()
    P.put(1)
    assert P.get(timeout=GATE_TIMEOUT) == 2
    del P  # the suite's fixture checks that no thread or process is left
