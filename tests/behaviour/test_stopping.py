"""Leaving a run early, infinite sources and backpressure, on every backend.

"Stopped" means every thread and child process the run started is gone within
``STOP_WITHIN`` seconds; the suite-wide leak fixture checks the same after each test.
"""

from __future__ import annotations

import _thread
import gc
import itertools
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import pytest
from helpers import FileGate, dropping_run

import flowpipe
from flowpipe import stage

STOP_WITHIN = 2.0  # "within about a second", with slack for a loaded machine
GATE_TIMEOUT = 10.0


def still_running(threads_before: set[threading.Thread]) -> list[str]:
    """Join what the run started (threads, child processes); name whatever outlives the deadline."""
    deadline = time.monotonic() + STOP_WITHIN
    for t in set(threading.enumerate()) - threads_before:
        if t.name != "flowpipe-forkserver":
            t.join(max(0.0, deadline - time.monotonic()))
    for p in multiprocessing.active_children():
        p.join(max(0.0, deadline - time.monotonic()))
    left = [
        t.name
        for t in set(threading.enumerate()) - threads_before
        if t.is_alive() and t.name != "flowpipe-forkserver"  # once per program, not per run
    ]
    return left + [f"process {p.pid}" for p in multiprocessing.active_children()]


class Source:
    """An infinite source that counts what was pulled and notices being closed."""

    def __init__(self) -> None:
        self.pulled = 0
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[int]:
        try:
            for i in itertools.count():
                self.pulled += 1
                yield i
        finally:
            self.closed.set()


def test_break_stops_every_worker_and_closes_the_source(backend: str) -> None:
    source = Source()
    before = set(threading.enumerate())
    pipe = stage(lambda x: x * 2, workers=3) | stage(lambda x: x + 1)
    seen = []
    for y in pipe.iter(source, backend=backend):
        seen.append(y)
        if len(seen) == 20:
            break
    assert seen == [x * 2 + 1 for x in range(20)]
    assert still_running(before) == []
    assert source.closed.wait(GATE_TIMEOUT)


def test_break_out_of_a_bound_pipeline_stops_everything(backend: str) -> None:
    source = Source()
    before = set(threading.enumerate())
    for y in (source | stage(lambda x: x, workers=2)).iter(backend=backend):
        if y == 10:
            break
    assert still_running(before) == []
    assert source.closed.wait(GATE_TIMEOUT)


def test_close_stops_everything_and_ends_iteration(backend: str) -> None:
    source = Source()
    before = set(threading.enumerate())
    run = (stage(lambda x: x) | stage(lambda x: x, workers=2)).iter(source, backend=backend)
    assert [next(run) for _ in range(3)] == [0, 1, 2]
    run.close()
    assert still_running(before) == []
    assert source.closed.wait(GATE_TIMEOUT)
    run.close()  # closing twice is harmless


def test_a_closed_run_yields_nothing_more(backend: str) -> None:
    run = stage(lambda x: x).iter(itertools.count(), backend=backend)
    assert next(run) == 0
    run.close()
    assert list(run) == []  # outputs not yet read are discarded


def test_leaving_the_with_block_stops_everything(backend: str) -> None:
    source = Source()
    before = set(threading.enumerate())
    with stage(lambda x: x, workers=4).iter(source, backend=backend) as run:
        assert next(run) == 0
    assert still_running(before) == []
    assert source.closed.wait(GATE_TIMEOUT)


def test_a_garbage_collected_run_stops_everything(backend: str) -> None:
    source = Source()
    before = set(threading.enumerate())
    run = (stage(lambda x: x + 1, workers=2) | stage(lambda x: x)).iter(source, backend=backend)
    assert next(run) == 1
    del run
    gc.collect()
    assert still_running(before) == []
    assert source.closed.wait(GATE_TIMEOUT)


def test_keyboard_interrupt_in_the_consuming_loop_stops_everything(backend: str) -> None:
    source = Source()
    before = set(threading.enumerate())

    def consume() -> None:
        for y in stage(lambda x: x, workers=2).iter(source, backend=backend):
            if y == 5:
                raise KeyboardInterrupt  # as Ctrl-C would, in the loop's body

    with pytest.raises(KeyboardInterrupt):
        consume()
    assert still_running(before) == []
    assert source.closed.wait(GATE_TIMEOUT)


def _run_methods_on_stack(frame: FrameType | None) -> list[str]:
    """Names of the ``flowpipe.Run`` methods a thread is inside, innermost first."""
    names = []
    while frame is not None:
        if isinstance(frame.f_locals.get("self"), flowpipe.Run):
            names.append(frame.f_code.co_name)
        frame = frame.f_back
    return names


def _outside_flowpipe(frame: FrameType | None) -> bool:
    """True when a thread's innermost frame is not flowpipe's code (it waits in a lock, a pipe)."""
    package = os.path.dirname(os.path.abspath(flowpipe.__file__))
    return frame is not None and not os.path.abspath(frame.f_code.co_filename).startswith(package)


def _send_sigint(main: int) -> None:
    """A real SIGINT to the main thread: it wakes a thread blocked in a lock."""
    signal.pthread_kill(main, signal.SIGINT)


def _schedule_sigint(main: int) -> None:
    """The handler scheduled with no OS signal, as when a SIGINT lands just before
    the thread goes to sleep: CPython notes it and runs the handler at the next
    bytecode, and nothing wakes the thread."""
    _thread.interrupt_main()


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs POSIX signals")
@pytest.mark.parametrize("interrupt", [_send_sigint, _schedule_sigint], ids=["signal", "scheduled"])
def test_ctrl_c_while_waiting_for_an_output_stops_everything(
    backend: str, tmp_path: Path, interrupt: Callable[[int], None]
) -> None:
    """Ctrl-C while the caller is blocked in ``next()`` and a stage is busy.

    The only output the caller waits for is held until the interrupt was raised
    (or for ``GATE_TIMEOUT``): the caller's wait must come back to Python by
    itself, not only when the next output arrives."""
    assert threading.current_thread() is threading.main_thread()
    main = threading.main_thread().ident
    assert main is not None
    sent = threading.Event()
    raised_before_the_gate = threading.Event()
    gate = FileGate(tmp_path / "gate")

    def interrupt_when_blocked() -> None:
        deadline = time.monotonic() + GATE_TIMEOUT
        while time.monotonic() < deadline:  # polls a condition; no timing is assumed
            frame = sys._current_frames().get(main)
            if "__next__" in _run_methods_on_stack(frame) and _outside_flowpipe(frame):
                interrupt(main)  # blocked below Run.__next__
                sent.set()
                break
            time.sleep(0.001)
        # Let the busy stage finish once the interrupt is being handled (the run is
        # closing, or has left next()): user code in a thread cannot be killed.
        while time.monotonic() < deadline:
            methods = _run_methods_on_stack(sys._current_frames().get(main))
            if "close" in methods or "__next__" not in methods:
                raised_before_the_gate.set()
                break
            time.sleep(0.001)
        gate.open()

    @stage
    def busy(x: int) -> int:
        if x == 1:
            gate.wait()  # the caller waits for this output
        return x

    before = set(threading.enumerate())
    # Endless in effect, but bounded: an interrupt that never comes fails the test (no
    # KeyboardInterrupt) within seconds once the gate opens, instead of hanging it.
    run = busy.iter(range(2_000_000), backend=backend)
    interrupter = threading.Thread(target=interrupt_when_blocked, name="test-interrupter")
    interrupter.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            for _ in run:
                pass
    finally:
        gate.open()
        interrupter.join()
    assert sent.is_set()
    assert raised_before_the_gate.is_set(), "the interrupt waited for the next output"
    # ``run`` is still referenced: the interrupt itself must have stopped the run
    assert still_running(before | {interrupter}) == []
    del run


# -- infinite sources and backpressure ------------------------------------------------


def test_an_infinite_source_with_iter(backend: str) -> None:
    pipe = stage(lambda x: x * x, workers=2) | stage(lambda x: x + 1)
    with pipe.iter(itertools.count(), backend=backend) as run:
        assert list(itertools.islice(run, 1000)) == [x * x + 1 for x in range(1000)]


def test_a_slow_consumer_bounds_what_is_read_from_the_source(backend: str) -> None:
    """Backpressure: the source is never read far ahead of what the caller consumed."""
    source = Source()
    pipe = stage(lambda x: x + 1, buffer=4) | stage(lambda x: x, buffer=4, workers=2)
    consumed = 0
    ahead = []
    with pipe.iter(source, backend=backend) as run:
        for y in run:
            assert y == consumed + 1
            consumed += 1
            ahead.append(source.pulled - consumed)
            time.sleep(0.0005)  # a slow consumer: gives the source time to run ahead
            if consumed == 300:
                break
    assert max(ahead) < 1000, max(ahead)


def test_a_slow_stage_bounds_what_is_read_from_the_source(backend: str, tmp_path: Path) -> None:
    """Backpressure through a stage that waits for the test: the source stops, then resumes."""
    source = Source()
    gate = FileGate(tmp_path / "gate")

    @stage(buffer=4)
    def gated(x: int) -> int:
        if x == 0:
            gate.wait()
        return x

    pipe = stage(lambda x: x, buffer=4) | gated
    with pipe.iter(source, backend=backend) as run:
        pulled_while_blocked = []
        # While ``gated`` is held, the source can only fill the bounded buffers.
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:  # the bound must hold however long we look
            pulled_while_blocked.append(source.pulled)
            time.sleep(0.01)
        gate.open()
        assert list(itertools.islice(run, 100)) == list(range(100))
    assert max(pulled_while_blocked) < 1000, max(pulled_while_blocked)


def test_reading_ten_outputs_of_an_infinite_source_reads_a_bounded_prefix(backend: str) -> None:
    source = Source()
    pipe = stage(lambda x: x, buffer=2) | stage(lambda x: x, buffer=2)
    with pipe.iter(source, backend=backend) as run:
        assert list(itertools.islice(run, 10)) == list(range(10))
        time.sleep(0.1)  # the consumer pauses: an unbounded pipeline would read far ahead now
        pulled = source.pulled
    assert pulled < 1000, pulled


def test_a_slow_item_holds_back_a_bounded_number_of_later_ones(
    backend: str, tmp_path: Path
) -> None:
    """ordered=True with workers: while item 0 is held, later work piles up only to a bound."""
    source = Source()
    gate = FileGate(tmp_path / "gate")

    @stage(workers=4, buffer=4)
    def first_is_slow(x: int) -> int:
        if x == 0:
            gate.wait()
        return x

    with first_is_slow.iter(source, backend=backend) as run:
        pulled_while_held = []
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:  # the bound must hold however long we look
            pulled_while_held.append(source.pulled)
            time.sleep(0.01)
        gate.open()
        assert list(itertools.islice(run, 200)) == list(range(200))
    assert max(pulled_while_held) < 200, max(pulled_while_held)


# -- dropping overflow: nothing lost silently --------------------------------------------


def test_drop_oldest_keeps_the_newest_and_counts_the_dropped(backend: str, tmp_path: Path) -> None:
    out, dropped = dropping_run(backend, "drop_oldest", FileGate(tmp_path / "gate"), 200)
    assert len(out) + dropped == 200  # every input is an output or counted as dropped
    assert dropped >= 200 - 2 - 1 - 1  # the buffer, the item in hand, one in the feeder
    assert out == sorted(out)
    assert out[-1] == 199  # the newest item is never the one dropped


def test_drop_newest_keeps_the_oldest_and_counts_the_dropped(backend: str, tmp_path: Path) -> None:
    out, dropped = dropping_run(backend, "drop_newest", FileGate(tmp_path / "gate"), 200)
    assert len(out) + dropped == 200
    assert dropped >= 200 - 2 - 1 - 1
    assert out == sorted(out)
    assert out[0] == 0  # the first item always finds room
