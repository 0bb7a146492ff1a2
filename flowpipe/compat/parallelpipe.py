"""ParallelPipe's API on flowpipe: change ``from ParallelPipe import ...`` and nothing else.

::

    from flowpipe.compat.parallelpipe import Pipeline, Stage

    class Detect(Stage):
        def stage_run(self, frame):
            return detect(frame)

    P = Pipeline(stages=[Detect(), Track()], end_stage=Show(), buffer_size=2)
    P.start()
    P.put(frame)       # never waits: each stage keeps the newest ``buffer_size`` inputs
    P.setstop()        # finishes what was put, then stops every thread and process

How it maps onto flowpipe (see ``docs/migrating-from-parallelpipe.md``):

- each ``Stage`` is a flowpipe stage of one worker whose input buffer holds
  ``buffer_size`` items with ``overflow="drop_oldest"`` (the newest are kept,
  processed in order, and what is dropped is counted in ``stats``);
- ``set_get_all()`` makes it a sliding window: ``stage_run`` gets a list of the
  last ``buffer_size`` items, once per new item;
- ``multiprocess=True`` is ``backend="process"`` for every stage;
- the last stage (or ``end_stage``) is the sink; what it returns, if not
  ``None``, is what ``get()`` gives (the newest ``buffer_size`` results are kept);
- an exception in a stage stops the pipeline and is raised by the next
  ``put()``, ``get()`` or ``setstop()`` as ``flowpipe.StageError``.
"""

from __future__ import annotations

import threading
import weakref
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

from .._dsl.pipeline import Pipeline as FlowPipeline
from .._dsl.stage import stage
from .._errors import RunClosed
from .._observe.stats import RunStats
from .._runtime.core.live import LiveRun

__all__ = ["Pipeline", "Stage"]


class Stage(ABC):
    """One step of a ParallelPipe pipeline: subclass it and write ``stage_run(x)``."""

    is_get_all = False  # a subclass whose __init__ skips super().__init__() still works
    is_end_stage = False

    def __init__(self) -> None:
        self.is_get_all = False
        self.is_end_stage = False

    @abstractmethod
    def stage_run(self, x: Any) -> Any:
        """Turn one input (a list of the last ``buffer_size`` with ``set_get_all``) into one output."""

    def set_get_all(self) -> None:
        """Call ``stage_run`` with a list of the last ``buffer_size`` inputs (a sliding window)."""
        self.is_get_all = True

    def set_get_single(self) -> None:
        """Call ``stage_run`` with one input at a time (the default)."""
        self.is_get_all = False

    def set_end_stage(self) -> None:
        """Mark this stage as the pipeline's sink (``Pipeline`` does it for its last stage)."""
        self.is_end_stage = True


class _CallStage:
    """What a flowpipe stage calls: one ParallelPipe stage's ``stage_run`` (picklable)."""

    def __init__(self, step: Any, window: bool) -> None:
        self.step = step
        self.window = window

    def __call__(self, x: Any) -> Any:
        return self.step.stage_run(list(x) if self.window else x)


class _Results:
    """What the last stage returned (not ``None``): the newest ``size``, for ``get()``."""

    def __init__(self, size: int) -> None:
        self.items: deque[Any] = deque(maxlen=size)
        self.cond = threading.Condition(threading.Lock())
        self.error: BaseException | None = None
        self.ended = False

    def collect(self, live: LiveRun[Any, Any]) -> None:
        """The collector thread: read every output so no stage ever waits on ``get()``."""
        try:
            for y in live:
                if y is not None:
                    with self.cond:
                        self.items.append(y)
                        self.cond.notify_all()
        except BaseException as exc:
            with self.cond:
                self.error = exc
        finally:
            with self.cond:
                self.ended = True
                self.cond.notify_all()

    def get(self, timeout: float | None) -> Any:
        with self.cond:
            if not self.cond.wait_for(lambda: self.items or self.ended, timeout):
                raise TimeoutError(f"no result within {timeout}s")
            if self.items:
                return self.items.popleft()
            if self.error is not None:
                raise self.error
            raise RunClosed("the pipeline was stopped: every result was read")


def _buffer_sizes(buffer_size: int | Sequence[int], n: int) -> list[int]:
    if isinstance(buffer_size, bool) or not isinstance(buffer_size, (int, list, tuple)):
        raise TypeError(f"buffer_size must be an int or a list of ints, got {buffer_size!r}")
    # what the caller gave, checked one by one below
    sizes: list[object] = [buffer_size] * n if isinstance(buffer_size, int) else list(buffer_size)
    if len(sizes) != n:
        raise ValueError(
            f"buffer_size has {len(sizes)} sizes for {n} stages: give one per stage "
            "(the end stage included)"
        )
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"each buffer_size must be an int >= 1, got {size!r}")
    return cast("list[int]", sizes)  # each checked above


class Pipeline:
    """ParallelPipe's ``Pipeline(stages, end_stage=None, buffer_size=1, multiprocess=False)``."""

    def __init__(
        self,
        stages: Sequence[Stage],
        end_stage: Stage | None = None,
        buffer_size: int | Sequence[int] = 1,
        multiprocess: bool = False,
    ) -> None:
        self.stages: list[Stage] = list(stages) + ([end_stage] if end_stage is not None else [])
        if not self.stages:
            raise ValueError("a Pipeline needs at least one stage")
        for step in self.stages:
            if not callable(getattr(step, "stage_run", None)):
                raise TypeError(f"{step!r} is not a Stage: it has no stage_run(x) method")
        self.buffer_sizes = _buffer_sizes(buffer_size, len(self.stages))
        self.multiprocess = bool(multiprocess)
        self.stages[-1].set_end_stage()
        self._pending: deque[Any] = deque(maxlen=self.buffer_sizes[0])  # put before start()
        self._results = _Results(self.buffer_sizes[-1])
        self._live: LiveRun[Any, Any] | None = None
        self._collector: threading.Thread | None = None
        self._stopped = False
        self._reported = False  # the run's error already reached the caller once

    def __len__(self) -> int:
        return len(self.stages)

    def flowpipe(self) -> FlowPipeline[Any, Any]:
        """The equivalent flowpipe pipeline (``set_get_all`` is read now)."""
        steps = [
            stage(
                _CallStage(step, step.is_get_all),
                name=type(step).__name__,
                buffer=size,
                overflow="drop_oldest",
                window=size if step.is_get_all else None,
            )
            for step, size in zip(self.stages, self.buffer_sizes)
        ]
        # _as_pipeline: flowpipe's internal hook (a single stage as a pipeline)
        pipe: FlowPipeline[Any, Any] = steps[0]._as_pipeline()  # pyright: ignore[reportPrivateUsage]
        for step in steps[1:]:
            pipe = pipe | step
        return pipe

    def start(self) -> None:
        """Start every stage's worker (threads, or processes with ``multiprocess=True``)."""
        if self._live is not None or self._stopped:
            raise RuntimeError("a Pipeline can be started only once")
        live = self.flowpipe().start(backend="process" if self.multiprocess else "thread")
        self._live = live
        # A pipeline dropped (or left at exit) without setstop() still stops its workers.
        weakref.finalize(self, live.stop)
        self._collector = threading.Thread(
            target=self._results.collect, args=(live,), name="flowpipe-parallelpipe", daemon=True
        )
        self._collector.start()
        while self._pending:
            self.put(self._pending.popleft())

    def put(self, x: Any) -> None:
        """Give the first stage an input; never waits (its oldest waiting input makes room)."""
        if self._stopped:
            raise RunClosed("the pipeline was stopped: it takes no more input")
        if self._live is None:
            self._pending.append(x)
            return
        try:
            self._live.put(x)
        except BaseException:
            self._reported = True
            raise

    def get(self, timeout: float | None = None) -> Any:
        """The next result of the last stage (one that is not ``None``), oldest kept first."""
        try:
            return self._results.get(timeout)
        except TimeoutError:
            raise
        except BaseException:
            self._reported = True
            raise

    def setstop(self) -> None:
        """Finish what was put, then stop every thread and process; raises a stage's error."""
        if self._stopped:
            return
        self._stopped = True
        live, collector = self._live, self._collector
        if live is None or collector is None:
            return
        try:
            live.close()
        except Exception:
            if not self._reported:
                self._reported = True
                raise
        finally:
            collector.join()
            live.stop()

    @property
    def stats(self) -> RunStats:
        """flowpipe's per-stage statistics (items in and out, dropped, busy time)."""
        if self._live is None:
            raise RuntimeError("the pipeline has not been started")
        return self._live.stats

    def __enter__(self) -> Pipeline:
        if self._live is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.setstop()
