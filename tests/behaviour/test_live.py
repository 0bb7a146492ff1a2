"""Push mode (``pipe.start()``): put, get, iterate, close, stats, on every backend.

Stages that must hold still wait on a ``FileGate`` the test opens; a stage that
must tell the test it has begun opens one the test waits on. Only paths travel,
so the same gates work in threads and in worker processes.
"""

from __future__ import annotations

import _thread
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import FileGate

import flowpipe
from flowpipe import GraphError, LiveRun, RunClosed, RunOptionError, Stage, StageError, stage

GATE_TIMEOUT = 10.0


class HeldFirst:
    """A stage that, on its first item, says it has begun, then waits for ``release``."""

    def __init__(self, begun: FileGate, release: FileGate) -> None:
        self.begun = begun
        self.release = release
        self.first = True

    def __call__(self, x: int) -> int:
        if self.first:
            self.first = False
            self.begun.open()
            self.release.wait()
        return x


def held(
    tmp_path: Path, buffer: int | None = None, overflow: str = "block"
) -> tuple[Stage[int, int], FileGate, FileGate]:
    """A stage named "held" (``HeldFirst``), and its two gates."""
    begun, release = FileGate(tmp_path / "begun"), FileGate(tmp_path / "release")
    first = stage(HeldFirst, name="held", buffer=buffer, overflow=overflow)(begun, release)
    return first, begun, release


# -- put, get, iterate -------------------------------------------------------------------


def test_outputs_come_out_in_the_order_items_were_put(backend: str) -> None:
    pipe = stage(lambda x: x * 2, workers=3) | stage(lambda x: x + 1, workers=2)
    with pipe.start(backend=backend) as live:
        for i in range(300):
            live.put(i)
        assert [live.get(timeout=GATE_TIMEOUT) for _ in range(300)] == [
            x * 2 + 1 for x in range(300)
        ]


def test_put_and_get_take_turns(backend: str) -> None:
    with stage(lambda x: -x).start(backend=backend) as live:
        for i in range(20):
            live.put(i)
            assert live.get(timeout=GATE_TIMEOUT) == -i


def test_iterating_while_another_thread_puts_then_closes(backend: str) -> None:
    pipe = stage(lambda x: x + 1, workers=2) | stage(lambda x: x * 10)
    with pipe.start(backend=backend) as live:

        def feed() -> None:
            for i in range(500):
                live.put(i)
            live.close()  # the end of input: iteration ends once everything is out

        feeder = threading.Thread(target=feed)
        feeder.start()
        try:
            assert list(live) == [(x + 1) * 10 for x in range(500)]
        finally:
            feeder.join()


def test_a_live_run_whose_pipeline_fans_out(backend: str) -> None:
    pipe = stage(lambda x: x + 1) | (stage(lambda x: x * 2), stage(lambda x: -x))
    with pipe.start(backend=backend) as live:
        for i in range(5):
            live.put(i)
        live.close()
        assert list(live) == [((x + 1) * 2, -(x + 1)) for x in range(5)]


def test_a_pipeline_that_starts_with_a_fan_out(backend: str) -> None:
    pipe = (stage(lambda x: x * 2), stage(lambda x: x * 3)) | stage(sum)
    with pipe.start(backend=backend) as live:
        for i in range(5):
            live.put(i)
        live.close()
        assert list(live) == [5 * x for x in range(5)]


def test_a_sliding_window_with_workers_fed_by_put(backend: str) -> None:
    @stage(window=3, workers=2)
    def shown(last3: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(last3)

    with shown.start(backend=backend) as live:
        for i in range(6):
            live.put(i)
        live.close()
        assert list(live) == [(0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5)]


# -- timeouts ------------------------------------------------------------------------------


def test_get_with_a_timeout_raises_timeout_error_and_the_run_goes_on(backend: str) -> None:
    with stage(lambda x: x + 1).start(backend=backend) as live:
        with pytest.raises(TimeoutError):
            live.get(timeout=0.05)  # nothing was put
        live.put(1)
        assert live.get(timeout=GATE_TIMEOUT) == 2


def test_put_with_a_timeout_on_a_full_blocking_buffer(backend: str, tmp_path: Path) -> None:
    first, begun, release = held(tmp_path, buffer=1)
    with first.start(backend=backend) as live:
        live.put(0)
        assert begun.wait()  # the stage holds item 0: its buffer of one is empty
        accepted = [0]
        timed_out = False
        for i in range(1, 10):  # one fits (more if a backend reads ahead), then no room
            try:
                live.put(i, timeout=0.05)
            except TimeoutError:
                timed_out = True
                break
            accepted.append(i)
        assert timed_out
        release.open()
        live.close()
        assert list(live) == accepted  # the item that timed out was not put
        assert live.stats["held"].dropped == 0


def _live_run_methods(thread_id: int) -> tuple[list[str], bool]:
    """The ``LiveRun`` methods a thread is inside (innermost first), and whether
    its innermost frame is outside flowpipe (it waits in a lock)."""
    frame = sys._current_frames().get(thread_id)
    package = os.path.dirname(os.path.abspath(flowpipe.__file__))
    waiting = frame is not None and not os.path.abspath(frame.f_code.co_filename).startswith(
        package
    )
    names = []
    while frame is not None:
        if isinstance(frame.f_locals.get("self"), LiveRun):
            names.append(frame.f_code.co_name)
        frame = frame.f_back
    return names, waiting


def live_put_all(live: LiveRun[int, int], items: range) -> None:
    for i in items:
        # Each put waits at most this long: an interrupt that never comes fails the
        # test (TimeoutError, not KeyboardInterrupt) instead of hanging it.
        live.put(i, timeout=3 * GATE_TIMEOUT)


def test_a_ctrl_c_that_does_not_wake_a_blocked_put_is_still_raised(
    backend: str, tmp_path: Path
) -> None:
    """As for ``next()`` (see test_stopping): a Ctrl-C scheduled while ``put``
    waits for room, without an OS signal to wake it, is raised by the put, which
    stops the run; the stage holding the buffer full is released only after."""
    first, begun, release = held(tmp_path, buffer=1)
    main = threading.main_thread().ident
    assert main is not None
    raised_before_release = threading.Event()
    sent = threading.Event()

    def interrupt_when_blocked() -> None:
        deadline = time.monotonic() + GATE_TIMEOUT
        while time.monotonic() < deadline:  # polls a condition; no timing is assumed
            methods, waiting = _live_run_methods(main)
            if "put" in methods and waiting:
                _thread.interrupt_main()
                sent.set()
                break
            time.sleep(0.001)
        # The interrupt was raised once the put is stopping the run, or has left.
        while time.monotonic() < deadline:
            methods, _ = _live_run_methods(main)
            if "stop" in methods or "put" not in methods:
                raised_before_release.set()
                break
            time.sleep(0.001)
        release.open()

    live = first.start(backend=backend)
    live.put(0)
    assert begun.wait()  # the stage holds item 0; a put or two later there is no room
    interrupter = threading.Thread(target=interrupt_when_blocked, name="test-interrupter")
    interrupter.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            live_put_all(live, range(1, 10_000))
    finally:
        release.open()
        interrupter.join()
    assert sent.is_set()
    assert raised_before_release.is_set(), "the interrupt waited for room in the buffer"
    with pytest.raises(RunClosed):
        live.put(0)  # the interrupt stopped the run


# -- overflow policies ---------------------------------------------------------------------


def test_put_with_drop_oldest_never_waits_and_keeps_the_newest(
    backend: str, tmp_path: Path
) -> None:
    first, begun, release = held(tmp_path, buffer=2, overflow="drop_oldest")
    with first.start(backend=backend) as live:
        live.put(0)
        assert begun.wait()
        for i in range(1, 100):
            live.put(i)  # the stage holds item 0: without dropping, this would block
        release.open()
        live.close()
        out = list(live)
        dropped = live.stats["held"].dropped
    assert len(out) + dropped == 100  # every item is an output or counted as dropped
    assert out == sorted(out)
    assert out[0] == 0
    assert out[-1] == 99  # the newest item is never the one dropped
    assert dropped >= 100 - 1 - 2 - 2  # the item in hand, the buffer, a read-ahead


def test_put_with_drop_newest_keeps_the_oldest(backend: str, tmp_path: Path) -> None:
    first, begun, release = held(tmp_path, buffer=2, overflow="drop_newest")
    with first.start(backend=backend) as live:
        live.put(0)
        assert begun.wait()
        for i in range(1, 100):
            live.put(i)
        release.open()
        live.close()
        out = list(live)
        dropped = live.stats["held"].dropped
    assert len(out) + dropped == 100
    assert out == list(range(len(out)))  # the first items found room, the rest were dropped


# -- close: drain ---------------------------------------------------------------------------


def test_close_finishes_what_was_put_even_if_nothing_is_read(backend: str) -> None:
    pipe = stage(lambda x: x + 1, buffer=2, name="inc") | stage(lambda x: x * 2, buffer=2)
    live = pipe.start(backend=backend)
    for i in range(6):  # fits in the buffers and workers without anyone reading
        live.put(i)
    live.close()  # returns once every worker has finished
    assert live.stats["inc"].items_out == 6
    assert [live.get(timeout=GATE_TIMEOUT) for _ in range(6)] == [(x + 1) * 2 for x in range(6)]
    with pytest.raises(RunClosed):
        live.get(timeout=GATE_TIMEOUT)  # every output was read
    with pytest.raises(RunClosed):
        live.put(7)
    live.stop()


def test_close_waits_for_a_busy_stage(backend: str, tmp_path: Path) -> None:
    first, begun, release = held(tmp_path)
    with first.start(backend=backend) as live:
        live.put(0)
        live.put(1)
        assert begun.wait()
        closer = threading.Thread(target=live.close)
        closer.start()
        release.open()
        closer.join(GATE_TIMEOUT)
        assert not closer.is_alive()
        assert list(live) == [0, 1]


def test_close_lets_a_put_blocked_on_unread_outputs_finish(backend: str) -> None:
    """Nobody reads, so a producer thread ends up waiting in put(); close() still drains."""
    pipe = stage(lambda x: x, buffer=1) | stage(lambda x: x, buffer=1)
    accepted: list[int] = []
    three_put = threading.Event()
    with pipe.start(backend=backend) as live:

        def feed() -> None:
            for i in range(100):  # far more than the buffers hold
                try:
                    live.put(i)
                except RunClosed:
                    return
                accepted.append(i)
                if i == 2:
                    three_put.set()

        feeder = threading.Thread(target=feed)
        feeder.start()
        try:
            assert three_put.wait(GATE_TIMEOUT)
            live.close()  # a put under way finishes; later ones raise RunClosed
        finally:
            feeder.join(GATE_TIMEOUT)
        assert not feeder.is_alive()
        assert list(live) == accepted


def test_close_twice_and_stop_after_close(backend: str) -> None:
    with stage(lambda x: x).start(backend=backend) as live:
        live.put(1)
        live.close()
        live.close()
        assert list(live) == [1]
        live.stop()


# -- errors -----------------------------------------------------------------------------------


def test_a_stage_error_surfaces_from_get_put_and_close(backend: str) -> None:
    def boom(x: int) -> int:
        if x == 3:
            raise ValueError("three")
        return x

    live = (stage(lambda x: x) | stage(boom, name="boom")).start(backend=backend)
    try:
        for i in range(5):
            live.put(i)
        got: list[int] = []
        error: StageError | None = None
        for _ in range(5):
            try:
                got.append(live.get(timeout=GATE_TIMEOUT))
            except StageError as err:
                error = err
                break
        assert error is not None
        assert error.stage == "boom"
        assert isinstance(error.__cause__, ValueError)
        assert got == list(range(len(got)))  # what came before the error, in order
        with pytest.raises(StageError):
            live.put(5)
        with pytest.raises(StageError):
            live.close()
    finally:
        live.stop()


def test_a_stage_error_ends_iteration_with_the_error(backend: str) -> None:
    def boom(x: int) -> int:
        raise KeyError(x)

    with stage(boom, name="boom").start(backend=backend) as live:
        live.put(1)
        with pytest.raises(StageError, match="boom"):
            for _ in live:
                pass


# -- leaving ----------------------------------------------------------------------------------


def test_leaving_the_with_block_stops_work_in_flight(backend: str) -> None:
    """Outputs nobody reads fill the buffers; leaving discards them and stops every worker."""
    before = set(threading.enumerate())
    pipe = stage(lambda x: x, buffer=2) | stage(lambda x: x, buffer=2)
    with pipe.start(backend=backend) as live:
        for i in range(6):
            live.put(i)
        assert live.get(timeout=GATE_TIMEOUT) == 0
    with pytest.raises(RunClosed):
        live.put(7)
    for t in set(threading.enumerate()) - before:
        t.join(GATE_TIMEOUT)
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]


def test_a_dropped_live_run_is_stopped(backend: str) -> None:
    live = stage(lambda x: x).start(backend=backend)
    live.put(1)
    assert live.get(timeout=GATE_TIMEOUT) == 1
    del live  # the suite's fixture checks that nothing is left running


def test_stats_of_a_live_run(backend: str) -> None:
    with (stage(lambda x: x, name="a") | stage(lambda x: x, name="b", workers=2)).start(
        backend=backend
    ) as live:
        for i in range(10):
            live.put(i)
        live.close()
        assert len(list(live)) == 10
        stats = live.stats
    assert [s.name for s in stats.stages] == ["a", "b"]
    assert stats["b"].workers == 2
    assert (stats["a"].items_in, stats["b"].items_out) == (10, 10)
    assert stats["a"].dropped == 0


def test_start_refuses_a_pipeline_with_its_own_source(backend: str) -> None:
    @stage
    def numbers() -> Iterator[int]:
        yield from range(3)

    with pytest.raises(GraphError, match="source"):
        (numbers | stage(lambda x: x)).start(backend=backend)
    with pytest.raises(GraphError, match="source"):
        ([1, 2] | stage(lambda x: x)).start(backend=backend)
    with pytest.raises(RunOptionError, match="progres"):
        stage(lambda x: x).start(backend=backend, progres=True)
