"""Ray backend only: resources, actors that die, frames through the object store, reuse."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flowpipe import StageError, StageOptionError, WorkerCrashed, stage

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray
R = "ray"


def assigned(x: int) -> dict[str, float]:
    return dict(ray.get_runtime_context().get_assigned_resources())


def test_resources_are_reserved_per_worker() -> None:
    out = stage(assigned, resources={"num_cpus": 1}).run([1, 2], backend=R)
    assert all(r.get("CPU") == 1.0 for r in out)
    custom = stage(assigned, resources={"flowpipe_test": 1}).run([1], backend=R)
    assert custom[0].get("flowpipe_test") == 1.0


def test_without_resources_a_worker_reserves_nothing() -> None:
    # Reserving a CPU per actor would leave a 2-CPU cluster unable to place 4 workers.
    out = stage(assigned, workers=4).run(range(8), backend=R)
    assert all(r.get("CPU", 0.0) == 0.0 for r in out)


def test_resources_the_cluster_does_not_have_are_refused_naming_the_stage() -> None:
    with pytest.raises(StageOptionError, match=r"'gpu_stage'.*resources.*GPU"):
        stage(lambda x: x, name="gpu_stage", resources={"num_gpus": 1}).run([1], backend=R)


def die_on(bad: int) -> Any:
    def maybe_die(x: int) -> int:
        if x == bad:
            os._exit(1)  # the actor's process is gone
        return x

    return maybe_die


def test_an_actor_that_dies_raises_worker_crashed() -> None:
    with pytest.raises(WorkerCrashed) as info:
        stage(die_on(4), name="fragile").run(range(10), backend=R)
    assert info.value.stage == "fragile"
    assert "Ray actor died" in str(info.value)


def test_with_retries_the_work_of_a_dead_actor_runs_on_a_fresh_one(tmp_path: Path) -> None:
    marker = tmp_path / "died"

    def once(x: int) -> int:
        if x == 6 and not marker.exists():
            marker.write_text("x")
            os._exit(1)
        return x * 10

    with stage(once, name="flaky", retries=1, workers=2).iter(range(30), backend=R) as run:
        out = list(run)
    assert out == [x * 10 for x in range(30)]  # nothing lost, nothing twice, in order
    assert run.stats["flaky"].retries >= 1


def test_an_exception_in_an_actor_keeps_its_type_and_remote_traceback() -> None:
    def bad(x: int) -> int:
        if x == 2:
            raise KeyError("missing")
        return x

    with pytest.raises(StageError) as info:
        stage(bad, name="remote").run(range(5), backend=R)
    assert (info.value.stage, info.value.index) == ("remote", 2)
    assert type(info.value.__cause__) is KeyError
    assert info.value.remote_traceback is not None


def test_1080p_frames_cross_the_object_store_intact() -> None:
    frames = [np.full((1080, 1920, 3), i, dtype=np.uint8) for i in range(6)]

    @stage(workers=2)
    def brighten(f: np.ndarray) -> np.ndarray:
        return f + 1

    out = (brighten | stage(lambda f: (int(f[0, 0, 0]), int(f[-1, -1, -1]), f.shape))).run(
        frames, backend=R
    )
    assert out == [(i + 1, i + 1, (1080, 1920, 3)) for i in range(6)]


def test_class_stage_state_is_fresh_in_every_run_even_on_a_reused_actor() -> None:
    class Counter:
        def __init__(self) -> None:
            self.seen = 0

        def __call__(self, x: int) -> int:
            self.seen += 1
            return self.seen

    counting = stage(Counter)()
    assert counting.run([0, 0, 0], backend=R) == [1, 2, 3]
    assert counting.run([0, 0, 0], backend=R) == [1, 2, 3]  # a new instance, not the old one


def test_actors_are_started_once_and_reused_across_runs() -> None:
    pid = stage(lambda x: os.getpid())
    first = set(pid.run([1], backend=R))
    second = set(pid.run([1], backend=R))
    assert first == second  # the emptied actor was kept and reused
    assert os.getpid() not in first


def test_the_readme_pipeline_runs_unchanged_on_ray(tmp_path: Path) -> None:
    # README.md's "In one screen" pipeline, as it is written there.
    paths = []
    for name in ("a.csv", "b.csv"):
        path = tmp_path / name
        path.write_text("1,2,3\n4,5\n")
        paths.append(str(path))

    @stage
    def read(path: str) -> Iterator[str]:  # a generator: 0..n outputs per input
        with open(path) as lines:
            yield from lines

    @stage(workers=4)  # 4 in parallel, output order kept
    def parse(line: str) -> list[str]:
        return line.split(",")

    @stage(batch=32)  # called with lists of up to 32 items
    def embed(rows: list[list[str]]) -> list[int]:
        return [len(r) for r in rows]

    pipe = read | parse | embed
    assert pipe.run(paths, backend=R) == pipe.run(paths) == [3, 2, 3, 2]
