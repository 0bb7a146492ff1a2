"""``keep_alive=``: a stage's workers outlive a run and serve the next run of an equal stage.

Constructions and ``close()`` calls are journalled (``Journal``), so the same
test counts them wherever the backend runs the instance: a thread, a worker
process, a Ray actor. ``flowpipe.shutdown()`` ends what is kept; the suite's
leak check then sees no thread, process or segment left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from helpers import GATE_TIMEOUT, Journal

import flowpipe
from flowpipe import StageError, StageOptionError, stage


class Model:
    """A class stage that journals each construction (with its process) and close()."""

    def __init__(self, journal: Journal, factor: int = 2) -> None:
        self.journal = journal
        self.factor = factor
        self.id = uuid.uuid4().hex
        self.calls = 0
        journal.write(f"init {self.id} {os.getpid()}")

    def __call__(self, x: int) -> tuple[int, str, int]:
        if x < 0:
            raise ValueError(f"negative input {x}")
        self.calls += 1  # state carries over between runs
        return (x * self.factor, self.id, self.calls)

    def close(self) -> None:
        self.journal.write(f"close {self.id}")


def kept_model(journal: Journal, factor: int = 2, **options: Any) -> Any:
    options.setdefault("keep_alive", True)
    return stage(Model, **options)(journal, factor=factor)


def test_a_kept_class_stage_is_built_once_across_runs_and_closed_by_shutdown(
    backend: str, journal: Journal
) -> None:
    model = kept_model(journal)
    first = model.run(range(5), backend=backend)
    second = kept_model(journal).run(range(5, 8), backend=backend)  # an equal stage, made anew
    assert [y for y, _, _ in first + second] == [x * 2 for x in range(8)]
    assert len(journal.lines("init ")) == 1
    assert {who for _, who, _ in first + second} == {journal.lines("init ")[0].split()[0]}
    assert [n for _, _, n in second] == [6, 7, 8]  # the instance's state carried over
    assert journal.lines("close ") == []  # kept, not closed, between runs
    flowpipe.shutdown()
    assert journal.lines("close ") == [journal.lines("init ")[0].split()[0]]
    third = model.run(range(2), backend=backend)  # after shutdown: built again
    assert [y for y, _, _ in third] == [0, 2]
    assert len(journal.lines("init ")) == 2
    flowpipe.shutdown()
    assert len(journal.lines("close ")) == 2


def test_a_keyed_kept_stage_serves_each_key_with_the_same_instance_in_the_next_run(
    backend: str, journal: Journal
) -> None:
    """Worker *k* of the next run gets worker *k*'s kept instance back, so per-key state
    stays with its key: here the worker of the first key ends first, and the other
    worker would otherwise take its instance."""

    def low(x: int) -> bool:
        return x < 4

    def run() -> dict[bool, set[str]]:
        model = kept_model(journal, workers=2, key=low)  # equal stages: the same key
        got = model.run(range(8), backend=backend)
        by_key: dict[bool, set[str]] = {True: set(), False: set()}
        for x, (_, who, _) in enumerate(got):
            by_key[x < 4].add(who)
        return by_key

    first, second = run(), run()
    assert [len(first[k]) for k in (True, False)] == [1, 1]  # one instance per key
    assert first[True] != first[False]
    assert second == first  # each key met its own instance again
    assert len(journal.lines("init ")) == 2
    flowpipe.shutdown()


class Repeat:
    """A generator class stage (its outputs leave in parts while it runs)."""

    def __init__(self, journal: Journal) -> None:
        self.id = uuid.uuid4().hex
        journal.write(f"init {self.id} {os.getpid()}")

    def __call__(self, x: int) -> Iterator[tuple[int, str]]:
        for _ in range(x % 3):
            yield (x, self.id)


def test_a_kept_generator_stage_streams_in_every_run(backend: str, journal: Journal) -> None:
    repeat = stage(Repeat, keep_alive=True, workers=2)(journal)
    expected = [x for x in range(30) for _ in range(x % 3)]
    runs = [repeat.run(range(30), backend=backend) for _ in range(3)]
    assert [[x for x, _ in out] for out in runs] == [expected] * 3
    assert len(journal.lines("init ")) == 2  # one per worker, for all three runs
    flowpipe.shutdown()


def test_a_different_constructor_argument_gets_a_different_worker(
    backend: str, journal: Journal
) -> None:
    assert [y for y, _, _ in kept_model(journal, 2).run([1], backend=backend)] == [2]
    assert [y for y, _, _ in kept_model(journal, 3).run([1], backend=backend)] == [3]
    assert len(journal.lines("init ")) == 2
    assert [y for y, _, _ in kept_model(journal, 2).run([1], backend=backend)] == [2]
    assert [y for y, _, _ in kept_model(journal, 2, workers=2).run([1], backend=backend)] == [2]
    assert len(journal.lines("init ")) == 4  # other options: other workers (two of them)
    flowpipe.shutdown()
    assert len(journal.lines("close ")) == 4


def test_two_runs_at_the_same_time_never_share_a_worker(backend: str, journal: Journal) -> None:
    release = threading.Event()

    def held() -> Iterator[int]:
        yield 0
        release.wait(GATE_TIMEOUT)  # the first run's input is still open ...
        yield 1

    first = kept_model(journal).iter(held(), backend=backend)
    try:
        y0, id_first, _ = next(first)  # ... so its worker is busy with it
        ((y1, id_second, _),) = kept_model(journal).run([5], backend=backend)
    finally:
        release.set()
    rest = list(first)
    assert (y0, y1, [y for y, _, _ in rest]) == (0, 10, [2])
    assert id_first != id_second
    assert len(journal.lines("init ")) == 2
    # Both are kept now: the next run takes one of them.
    ((_, id_third, _),) = kept_model(journal).run([1], backend=backend)
    assert id_third in {id_first, id_second}
    assert len(journal.lines("init ")) == 2
    flowpipe.shutdown()
    assert sorted(journal.lines("close ")) == sorted({id_first, id_second})


def test_a_kept_worker_process_that_died_is_replaced(journal: Journal) -> None:
    kept_model(journal).run([1], backend="process")
    ((who, pid),) = (line.split() for line in journal.lines("init "))
    os.kill(int(pid), signal.SIGKILL)  # dies while kept
    out = kept_model(journal).run(range(3), backend="process")
    assert [y for y, _, _ in out] == [0, 2, 4]
    inits = journal.lines("init ")
    assert len(inits) == 2
    assert inits[1].split()[0] != who
    flowpipe.shutdown()
    assert journal.lines("close ") == [inits[1].split()[0]]  # the dead one never closed


def test_an_error_in_a_kept_worker_fails_the_run_and_it_is_not_kept(
    backend: str, journal: Journal
) -> None:
    kept_model(journal).run([1], backend=backend)
    with pytest.raises(StageError) as info:
        kept_model(journal).run([2, -1, 3], backend=backend)
    assert info.value.stage == "Model"
    assert "negative input -1" in str(info.value)
    assert len(journal.lines("init ")) == 1  # the kept one served the failing run
    assert [y for y, _, _ in kept_model(journal).run([4], backend=backend)] == [8]
    assert len(journal.lines("init ")) == 2  # the failed run's worker was not kept
    flowpipe.shutdown()


def test_a_kept_worker_idle_past_its_time_is_closed(backend: str, journal: Journal) -> None:
    kept_model(journal, keep_alive=0.05).run([1], backend=backend)
    deadline = time.monotonic() + GATE_TIMEOUT
    while not journal.lines("close ") and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the journal: the close happens in another process
    assert len(journal.lines("close ")) == 1
    kept_model(journal, keep_alive=0.05).run([1], backend=backend)
    assert len(journal.lines("init ")) == 2
    flowpipe.shutdown()


AT_EXIT = """
import os, sys
from flowpipe import stage

class Model:
    def __call__(self, x):
        return os.getpid()

    def close(self):
        with open(sys.argv[1], "a") as f:
            f.write(f"close {os.getpid()}\\n")

out = stage(Model, keep_alive=True, workers=2)().run(range(4), backend=sys.argv[2])
print(" ".join(str(p) for p in sorted(set(out))))
"""


@pytest.mark.parametrize("where", ["thread", "process"])
def test_kept_workers_are_closed_at_exit(where: str, tmp_path: Path) -> None:
    closes = tmp_path / "closes.txt"
    with subprocess.Popen(
        [sys.executable, "-c", AT_EXIT, str(closes), where],
        stdout=subprocess.PIPE,
        text=True,
    ) as program:
        served, _ = program.communicate(timeout=GATE_TIMEOUT * 3)
    assert program.returncode == 0
    closed = [line.split()[1] for line in closes.read_text().splitlines()]
    assert len(closed) == 2  # each kept worker's close() ran as the program ended
    assert set(served.split()) <= set(closed)  # the workers that served are among them
    left = [n for n in os.listdir("/dev/shm") if n.startswith(f"fp{program.pid}_")]
    assert left == []


def test_shutdown_raises_what_a_kept_close_raised() -> None:
    class Fails:
        def __call__(self, x: int) -> int:
            return x

        def close(self) -> None:
            raise RuntimeError("close failed")

    assert stage(Fails, keep_alive=True)().run([1, 2]) == [1, 2]
    with pytest.raises(RuntimeError, match="close failed"):
        flowpipe.shutdown()
    flowpipe.shutdown()  # nothing kept any more


@pytest.mark.parametrize("bad", ["yes", 0, -1.0, float("nan")])
def test_a_bad_keep_alive_is_refused_when_the_stage_is_made(bad: object) -> None:
    with pytest.raises(StageOptionError) as info:
        stage(Model, keep_alive=cast("Any", bad))
    assert (info.value.stage, info.value.option) == ("Model", "keep_alive")
    assert "positive number of seconds" in str(info.value)
