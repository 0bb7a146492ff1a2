"""Fusing adjacent cheap stages into one worker (``fuse=True``, issue 21), on every backend.

A fused group gives the same outputs as the stages run apart, keeps one row of
stats per stage, and an error still names the stage that raised and the input
it was called with. Nothing is fused unless every stage of the chain asks.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import Journal

from flowpipe import StageError, StageOptionError, stage
from flowpipe._plan.compile import compile_plan
from flowpipe._plan.plan import StageNode


def inc(x: int) -> int:
    return x + 1


def double(x: int) -> int:
    return 2 * x


def minus3(x: int) -> int:
    return x - 3


def expected(n: int) -> list[int]:
    return [2 * (x + 1) - 3 for x in range(n)]


def test_a_fused_chain_gives_the_same_outputs_with_a_row_per_stage(backend: str) -> None:
    fused = stage(inc, fuse=True) | stage(double, fuse=True) | stage(minus3, fuse=True)
    apart = stage(inc) | stage(double) | stage(minus3)
    assert (
        fused.explain(backend=backend) == f"inc + double + minus3 on {backend}: fused, one worker"
    )
    assert apart.run(range(3000), backend=backend) == expected(3000)
    with fused.iter(range(3000), backend=backend) as run:
        assert list(run) == expected(3000)
    stats = run.stats
    assert [s.name for s in stats.stages] == ["inc", "double", "minus3"]
    for s in stats.stages:
        assert (s.items_in, s.items_out, s.errors, s.skipped) == (3000, 3000, 0, 0)
    assert [s.fused_into for s in stats.stages] == [None, "inc", "inc"]
    assert "double (fused into inc)" in str(stats)
    assert stats["inc"].busy_s > 0  # the group's time is its worker's: the first stage's
    assert stats["double"].busy_s == 0


def test_an_error_names_the_fused_stage_that_raised_and_its_input(backend: str) -> None:
    def picky(x: int) -> int:
        if x == 2 * (7 + 1):
            raise ValueError("no 16")
        return x

    def errors(fuse: bool) -> list[tuple[str, int]]:
        pipe = stage(inc, fuse=fuse) | stage(double, fuse=fuse) | stage(picky, fuse=fuse)
        run = pipe.iter(range(50), backend=backend)
        with pytest.raises(StageError) as info:
            list(run)
        err = info.value
        assert (err.stage, err.index, err.item) == ("picky", 7, 16)
        assert isinstance(err.__cause__, ValueError)
        return [(s.name, s.errors) for s in run.stats.stages]

    assert errors(fuse=True) == errors(fuse=False)  # each stage's count, as when apart


def test_a_group_between_other_stages_and_in_branches(backend: str) -> None:
    inner = stage(double, fuse=True) | stage(minus3, fuse=True)
    pipe = stage(inc) | (inner, stage(double)) | stage(lambda t: t[0] + t[1], name="add")
    explained = pipe.explain(backend=backend)
    assert "double + minus3 on" in explained
    assert "    double#2 on" in explained  # the other branch runs apart
    want = [(2 * (x + 1) - 3) + 2 * (x + 1) for x in range(500)]
    assert pipe.run(range(500), backend=backend) == want


def test_class_stages_in_a_group_are_built_and_closed_once_per_worker(
    backend: str, journal: Journal
) -> None:
    class Add:
        def __init__(self, log: Journal, n: int) -> None:
            self.log, self.n = log, n
            log.write(f"init {n}")

        def __call__(self, x: int) -> int:
            return x + self.n

        def close(self) -> None:
            self.log.write(f"close {self.n}")

    first = stage(Add, fuse=True, name="add1")(journal, 1)
    second = stage(Add, fuse=True, name="add10")(journal, 10)
    assert (first | second).run(range(100), backend=backend) == [x + 11 for x in range(100)]
    assert sorted(journal.lines()) == ["close 1", "close 10", "init 1", "init 10"]


def test_stages_are_not_fused_unless_each_asks(backend: str) -> None:
    """Fusing takes the pipelining over cores away: costly stages stay apart by default,
    and a ``fuse=True`` stage next to one that did not ask runs apart too."""
    plain = compile_plan(stage(inc) | stage(double) | stage(minus3), backend)
    assert all(isinstance(n, StageNode) and not n.fused for n in plain.steps)
    one = compile_plan(stage(inc, fuse=True) | stage(double) | stage(minus3, fuse=True), backend)
    assert all(isinstance(n, StageNode) and not n.fused for n in one.steps)
    assert "fused" not in one.explain()
    other = "thread" if backend != "thread" else "process"
    mixed = stage(inc, fuse=True) | stage(double, fuse=True, backend=other)
    assert "fused" not in mixed.explain(backend=backend)
    assert mixed.run(range(10), backend=backend) == [2 * (x + 1) for x in range(10)]


def test_a_stage_that_cannot_be_fused_is_refused_by_name() -> None:
    with pytest.raises(
        StageOptionError, match=r"stage 'inc': option fuse=True cannot .* workers=2"
    ):
        stage(inc, fuse=True, workers=2)
    with pytest.raises(
        StageOptionError, match=r"fuse=True cannot be combined with on_error='skip'"
    ):
        stage(inc, fuse=True, on_error="skip")
    with pytest.raises(StageOptionError, match=r"option fuse='yes': expected True or False"):
        stage(inc, fuse="yes")  # type: ignore[call-overload]

    def spread(x: int) -> Iterator[int]:
        yield x

    with pytest.raises(StageOptionError, match=r"stage 'spread': .* a generator stage cannot"):
        (stage(inc, fuse=True) | stage(spread, fuse=True)).run(range(3))
