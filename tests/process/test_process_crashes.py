"""Process backend only: worker processes that die, errors that cross, things that cannot be pickled."""

from __future__ import annotations

import itertools
import os
import pickle
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import crash_once

from flowpipe import StageError, WorkerCrashed, stage
from flowpipe._runtime.core.outflow import MAX_HELD
from flowpipe._transport.wire import SHM_DIR

P = "process"
LONG = 2 * MAX_HELD + 500  # a generator's outputs for one input: they leave in parts
PREFIX = f"fp{os.getpid()}_"  # this process's runs' shared-memory segments


def die_on(bad: int, how: str = "exit") -> Any:
    def maybe_die(x: int) -> int:
        if x == bad:
            if how == "exit":
                os._exit(3)
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if how == "segfault":
                import ctypes

                ctypes.string_at(0)  # reads address 0: SIGSEGV
        return x

    return maybe_die


@pytest.mark.parametrize(
    ("how", "said"), [("exit", "exit code 3"), ("kill", "SIGKILL"), ("segfault", "SIGSEGV")]
)
def test_a_dying_worker_raises_worker_crashed_naming_the_stage(how: str, said: str) -> None:
    with pytest.raises(WorkerCrashed) as info:
        stage(die_on(7, how), name="fragile").run(range(20), backend=P)
    err = info.value
    assert isinstance(err, StageError)
    assert err.stage == "fragile"
    assert said in str(err)
    assert err.index is not None
    assert err.index <= 7


@pytest.mark.parametrize("workers", [1, 2])
def test_with_retries_a_crashed_item_is_retried_on_a_fresh_worker(
    tmp_path: Path, workers: int
) -> None:
    fn = crash_once(tmp_path / "crashed", 13)
    with stage(fn, name="flaky", retries=1, workers=workers).iter(range(40), backend=P) as run:
        out = list(run)
    assert out == [x * 10 for x in range(40)]  # nothing lost, nothing twice, in order
    assert (tmp_path / "crashed").exists()
    assert run.stats["flaky"].retries >= 1


def test_an_item_that_always_kills_its_worker_fails_after_the_retries() -> None:
    with pytest.raises(WorkerCrashed) as info:
        stage(die_on(5), name="deadly", retries=2).run(range(10), backend=P)
    assert info.value.index == 5
    assert info.value.item == 5


def test_on_error_skip_skips_an_item_that_kills_its_worker() -> None:
    with stage(die_on(5), name="deadly", on_error="skip").iter(range(10), backend=P) as run:
        out = list(run)
    assert out == [x for x in range(10) if x != 5]
    assert run.stats["deadly"].skipped == 1


class Unusual(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"code {code}")
        self.code = code


def raise_unusual(x: int) -> int:
    if x == 3:
        raise Unusual(x)
    return x


def test_an_exception_in_a_worker_keeps_its_type_and_remote_traceback() -> None:
    with pytest.raises(StageError) as info:
        stage(raise_unusual, name="remote").run(range(10), backend=P)
    err = info.value
    assert (err.stage, err.index, err.item) == ("remote", 3, 3)
    assert type(err.__cause__) is Unusual
    assert err.__cause__.code == 3
    assert err.remote_traceback is not None
    assert "raise_unusual" in err.remote_traceback
    assert "Remote traceback" in str(err)


class NeedsKeyword(Exception):
    """An exception pickle cannot rebuild (its constructor takes a keyword only)."""

    def __init__(self, *, why: str) -> None:
        super().__init__(why)


def raise_needs_keyword(x: int) -> int:
    raise NeedsKeyword(why="odd")


def test_an_exception_that_cannot_be_rebuilt_arrives_as_its_text() -> None:
    with pytest.raises(StageError, match="NeedsKeyword: odd") as info:
        stage(raise_needs_keyword, name="odd").run([1], backend=P)
    assert info.value.__cause__ is not None


def test_a_stage_cloudpickle_cannot_ship_fails_at_start_naming_it() -> None:
    lock = threading.Lock()

    def holds_a_lock(x: int) -> int:
        with lock:
            return x

    started = threading.active_count()
    with pytest.raises(StageError, match="holder") as info:
        stage(holds_a_lock, name="holder").run([1, 2], backend=P)
    assert "lock" in repr(info.value.__cause__).lower()
    assert threading.active_count() == started


def test_an_output_that_cannot_be_sent_names_the_stage() -> None:
    with pytest.raises(StageError, match="cannot be sent back") as info:
        stage(lambda x: threading.Lock(), name="locker").run([1, 2], backend=P)
    assert info.value.stage == "locker"


def test_an_output_that_cannot_be_sent_blames_no_other_input() -> None:
    # The slice is pickled as a whole: which of its outputs failed is not known,
    # so no input is named (it used to name the slice's first input, a good one).
    def lock_at_700(x: int) -> Any:
        return threading.Lock() if x == 700 else x

    with pytest.raises(StageError, match=r"slice from input #\d+ on") as info:
        stage(lock_at_700, name="locker").run(range(1000), backend=P)
    assert (info.value.stage, info.value.index, info.value.item) == ("locker", None, None)


def test_a_stage_that_exits_names_no_input() -> None:
    def leave(x: int) -> int:
        if x == 700:
            sys.exit(3)
        return x

    with pytest.raises(StageError, match="SystemExit") as info:
        stage(leave, name="leaver").run(range(1000), backend=P)
    assert (info.value.stage, info.value.index) == ("leaver", None)


def test_an_input_that_cannot_be_sent_names_the_stage_and_position() -> None:
    items: list[Any] = [1, 2, threading.Lock(), 4]
    with pytest.raises(StageError, match="input cannot be sent") as info:
        stage(lambda x: x, name="receiver").run(items, backend=P)
    assert (info.value.stage, info.value.index) == ("receiver", 2)
    assert info.value.__cause__ is not None  # pickle's refusal, as documented
    assert "lock" in str(info.value.__cause__.__cause__).lower()


def _refuse_here(pid: int) -> object:
    if os.getpid() == pid:
        raise RuntimeError("cannot be rebuilt in this process")
    return "rebuilt"


class BreaksIn:
    """Pickles fine; unpickling fails in the process whose pid it names."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse_here, (self.pid,))


def test_an_input_that_cannot_be_unpickled_in_the_worker_names_the_stage() -> None:
    # The worker's pid is only known inside it: the item refuses every process but ours.
    me = os.getpid()

    class NotInWorkers:
        def __reduce__(self) -> tuple[Any, ...]:
            return (_refuse_unless, (me,))

    with pytest.raises(StageError, match="could not be rebuilt") as info:
        stage(lambda x: x, name="picky").run([1, NotInWorkers()], backend=P)
    assert info.value.stage == "picky"


def _refuse_unless(pid: int) -> object:
    if os.getpid() != pid:
        raise RuntimeError("not in this process")
    return "here"


def test_an_output_that_cannot_be_unpickled_here_names_the_stage() -> None:
    me = os.getpid()
    with pytest.raises(StageError, match="cannot be rebuilt here") as info:
        stage(lambda x: BreaksIn(me), name="maker").run([1], backend=P)
    assert info.value.stage == "maker"


def test_stage_errors_from_workers_cross_pickling() -> None:
    with pytest.raises(StageError) as info:
        stage(raise_unusual, name="remote").run(range(5), backend=P)
    back = pickle.loads(pickle.dumps(info.value))
    assert (back.stage, back.index) == ("remote", 3)
    assert back.remote_traceback == info.value.remote_traceback


def streams_then_dies_once(marker: Path) -> Any:
    """A generator stage whose worker dies once, after input 1 has handed outputs on."""

    def frames(x: int) -> Any:
        for k in range(LONG):
            if x == 1 and k == 2 * MAX_HELD + 100 and not marker.exists():
                marker.touch()
                os._exit(3)
            yield (x, k)

    return frames


@pytest.mark.parametrize("next_stage", ["none", "process"])
def test_a_generator_whose_worker_dies_mid_stream_repeats_nothing(
    tmp_path: Path, next_stage: str
) -> None:
    # Two parts (MAX_HELD outputs each) left before the crash; the fresh worker
    # runs input 1 again and drops as many. With a next stage in processes, the
    # outputs travel as bundles, and the count is the same.
    pipe: Any = stage(streams_then_dies_once(tmp_path / "died"), name="frames", retries=1)
    if next_stage == "process":
        pipe = pipe | stage(lambda o: o, name="after")
    with pipe.iter(range(3), backend=P) as run:
        out = list(run)
    assert (tmp_path / "died").exists()
    assert out == [(x, k) for x in range(3) for k in range(LONG)]
    assert run.stats["frames"].items_out == 3 * LONG


def test_a_generator_output_that_cannot_be_sent_names_the_stage() -> None:
    def locks(x: int) -> Any:
        for k in range(LONG):
            yield threading.Lock() if k == MAX_HELD + 10 else k

    with pytest.raises(StageError, match="cannot be sent back") as info:
        stage(locks, name="locker").run([1], backend=P)
    assert (info.value.stage, info.value.index) == ("locker", None)


def test_a_crash_after_the_retries_keeps_how_the_worker_died_as_cause() -> None:
    with pytest.raises(WorkerCrashed) as info:
        stage(die_on(5), name="deadly", retries=1).run(range(10), backend=P)
    assert "exit code 3" in str(info.value.__cause__)


def test_a_stage_whose_init_exits_says_how_the_worker_ended() -> None:
    class Leaves:
        def __init__(self) -> None:
            os._exit(4)

        def __call__(self, x: int) -> int:
            return x

    with pytest.raises(WorkerCrashed) as info:
        stage(Leaves, name="leaves")().run(range(3), backend=P)
    assert "exit code 4" in str(info.value)
    assert "still running" not in str(info.value)


class PicklingExits(Exception):
    """An exception whose pickling raises a BaseException that is not an Exception."""

    def __reduce__(self) -> Any:
        raise SystemExit("no pickling for me")


def test_an_exception_whose_pickling_raises_a_base_exception_arrives_as_text() -> None:
    def fails(x: int) -> int:
        raise PicklingExits("the real problem")

    with pytest.raises(StageError) as info:
        stage(fails, name="odd").run([1], backend=P)
    assert not isinstance(info.value, WorkerCrashed)
    assert "the real problem" in str(info.value)


def dies_at(marker_dir: Path, at: list[int]) -> Any:
    """A generator whose worker dies once at each output number in ``at`` (input 1 only)."""

    def frames(x: int) -> Any:
        for k in range(LONG):
            deaths = len(os.listdir(marker_dir))
            if x == 1 and deaths < len(at) and k == at[deaths]:
                (marker_dir / str(deaths)).touch()
                os._exit(3)
            yield (x, k)

    return frames


def test_a_generator_whose_worker_dies_twice_at_different_points_repeats_nothing(
    tmp_path: Path,
) -> None:
    # The second death comes later than the first, during the run again: what the
    # dying second attempt handed on is not sent by the third.
    at = [MAX_HELD + 100, 2 * MAX_HELD + 100]
    with stage(dies_at(tmp_path, at), name="frames", retries=3).iter(range(3), backend=P) as run:
        out = list(run)
    assert len(os.listdir(tmp_path)) == 2
    assert out == [(x, k) for x in range(3) for k in range(LONG)]


def test_an_endless_generator_goes_on_streaming_after_its_worker_died(tmp_path: Path) -> None:
    def endless(x: int) -> Any:
        k = 0
        while True:
            if k == 100 and not (tmp_path / "died").exists():
                (tmp_path / "died").touch()
                os._exit(3)
            yield k
            k += 1

    with stage(endless, retries=1).iter([0], backend=P) as run:
        first = list(itertools.islice(run, 3 * MAX_HELD))
    assert (tmp_path / "died").exists()
    assert first == list(range(3 * MAX_HELD))


def test_an_endless_generator_of_frames_keeps_shared_memory_bounded() -> None:
    # Segments come back to the worker with each part it is answered for, not only
    # with its next slice, which an endless generator never asks for.
    @stage
    def camera(x: int) -> Any:
        k = 0
        while True:
            yield np.full((1080, 1920, 3), k % 251, np.uint8)
            k += 1

    with camera.iter([0], backend=P) as run:
        peak = 0
        for k, frame in enumerate(run):
            assert int(frame[0, 0, 0]) == k % 251
            del frame
            if k % 20 == 0:
                peak = max(peak, len([n for n in os.listdir(SHM_DIR) if n.startswith(PREFIX)]))
            if k == 300:
                break
    assert peak < 100, f"{peak} segments for 300 frames"
