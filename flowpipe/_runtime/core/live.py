"""Push mode: ``pipe.start()`` gives a ``LiveRun`` that the caller feeds with ``put``.

A live run is an ordinary run (``run.Run``: the same wiring, workers, output
channel and stats) without a source thread: ``put`` hands each item straight
to the first stage's input channel, so it blocks or drops by that stage's
``overflow`` and the stage's stats count what was dropped::

    put(item) ──► first stage's Channel ──► ... stages ... ──► output Channel ──► get() / iteration

Stopping comes in two strengths:

- ``close()`` drains: no more ``put``; everything already put is finished,
  every worker leaves, and the outputs stay readable (the output channel stops
  bounding, so a caller that reads nothing cannot hold the drain up).
- ``stop()`` (also leaving a ``with`` block, garbage collection, Ctrl-C in
  ``get``) ends every worker now and discards what was not read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Generic

from ..._errors import GraphError, RunClosed, RunOptionError
from ..._plan.plan import Plan
from ..._transport.buffer import Aborted
from ..._typing import TypeVar
from .run import CALLER_POLL, Run, Wired, start_stages
from .stall import stall_options, watch_stalls

if TYPE_CHECKING:
    from ..._observe.stats import RunStats

In = TypeVar("In", contravariant=True)
Out = TypeVar("Out")


class LiveRun(Generic[In, Out]):
    """A running pipeline fed by ``put``: ``get``, iterate, ``close`` (drain), ``stop``.

    Items put from one thread come out in the order they were put (with
    ``ordered=True`` stages, the default). Errors in a stage are raised by the
    next ``put``, ``get``, ``next()`` or ``close()`` as ``StageError``.
    """

    def __init__(self, run: Run[Out], wired: Wired) -> None:
        self._run = run
        self._entry = wired.entry
        self._output = wired.output
        self._state = wired.state
        self._workers = wired.workers
        self._lock = threading.Condition(threading.Lock())
        self._putting = 0  # puts under way; close() lets them finish first
        self._input_closed = False

    # -- feeding --------------------------------------------------------------------
    def put(self, item: In, timeout: float | None = None) -> None:
        """Give the pipeline one item.

        With the first stage's ``overflow="block"`` (the default) this waits
        while its buffer is full, at most ``timeout`` seconds (then
        ``TimeoutError``: the item was not put). With ``"drop_oldest"`` or
        ``"drop_newest"`` it never waits; what is dropped is counted in
        ``stats``. Raises ``RunClosed`` after ``close()``/``stop()``, and the
        run's ``StageError`` once a stage has failed.
        """
        with self._lock:
            self._raise_if_over()
            self._putting += 1
        try:
            first, *others = self._entry.targets
            first.put_many((item,), timeout, poll=CALLER_POLL)
            for channel in others:  # the pipeline starts with a fan-out
                channel.put_many((item,), poll=CALLER_POLL)
        except Aborted:
            self._raise_if_over()
            raise RunClosed("the live run was stopped") from None
        except TimeoutError:
            raise
        except BaseException:  # Ctrl-C while waiting for room: stop everything, as get() does
            self.stop()
            raise
        finally:
            with self._lock:
                self._putting -= 1
                self._lock.notify_all()

    def _raise_if_over(self) -> None:
        if self._state.error is not None:
            raise self._state.error
        if self._input_closed or self._state.stopped:
            raise RunClosed("the live run was closed: it takes no more items")

    # -- reading --------------------------------------------------------------------
    def get(self, timeout: float | None = None) -> Out:
        """The next output, in order; waits at most ``timeout`` seconds (then ``TimeoutError``).

        Raises ``RunClosed`` once the run has ended and every output was read.
        """
        try:
            return self._run.next_within(timeout)
        except TimeoutError:
            raise TimeoutError(f"no output within {timeout} s") from None
        except StopIteration:
            raise RunClosed("the live run has ended: every output was read") from None

    def __iter__(self) -> Iterator[Out]:
        return self

    def __next__(self) -> Out:
        """Iteration waits for outputs until ``close()`` (or ``stop()``) ends the run."""
        return next(self._run)

    # -- stopping -------------------------------------------------------------------
    def close(self) -> None:
        """Drain: take no more items, finish what was put, stop every worker.

        Outputs not yet read stay readable with ``get`` or iteration. Raises the
        run's ``StageError`` if a stage failed.
        """
        # Outputs nobody reads must not hold the drain (or a put it waits for) up.
        self._output.unbound()
        with self._lock:
            first = not self._input_closed
            self._input_closed = True
            while self._putting:
                self._lock.wait()
        if first:
            self._entry.close()  # end of input: each stage ends once it has caught up
        try:
            for worker in self._workers:
                worker.join()
        except BaseException:  # Ctrl-C while draining: stop now
            self.stop()
            raise
        if self._state.error is not None:
            raise self._state.error

    def stop(self) -> None:
        """Stop every worker now; what was put but not finished, or not read, is discarded."""
        with self._lock:
            self._input_closed = True
        self._run.close()

    def __enter__(self) -> LiveRun[In, Out]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __del__(self) -> None:
        try:
            self.stop()
        except Exception:  # never raise from a finaliser
            pass

    # -- observing ------------------------------------------------------------------
    @property
    def stats(self) -> RunStats:
        """Per-stage statistics, as for ``iter``: live while it runs, final once it ended."""
        return self._run.stats

    # -- what a REPL and a notebook show (one block: kept together for porting) -------
    def __repr__(self) -> str:
        """``<flowpipe.LiveRun detect | track on thread: live, 3 items out>``."""
        if self._state.error is not None:
            state = f"failed in stage {getattr(self._state.error, 'stage', '?')!r}"
        else:
            state = "stopped" if self._state.stopped else "closed" if self._input_closed else "live"
        return f"<flowpipe.LiveRun {self._run._summary(state)}>"  # pyright: ignore[reportPrivateUsage]

    def _repr_html_(self) -> str:
        return self._run._html(repr(self))  # pyright: ignore[reportPrivateUsage]


def open_live(plan: Plan, **options: Any) -> LiveRun[Any, Any]:
    """Start ``plan`` with no source: its first stage takes what ``put`` gives."""
    stall_seconds, stall_raises = stall_options(options)
    if options:
        given = ", ".join(f"{k}={v!r:.40}" for k, v in sorted(options.items()))
        raise RunOptionError(
            f"unknown start option(s): {given}; start takes backend=, stall_timeout= and on_stall="
        )
    if plan.source_stage is not None:
        raise GraphError(
            f"stage {plan.source_stage.label!r} takes no argument, so it is the source: "
            "a pipeline that starts with it cannot take items from put(); use iter() or run()"
        )
    wired = start_stages(plan, lambda entry, state: [], watch=stall_seconds is not None)
    run: Run[Any] = Run(
        wired.state, wired.output, wired.workers, wired.parts, plan, wired.owners, wired.started
    )
    watch_stalls(
        wired.state,
        wired.parts,
        wired.output,
        wired.workers,
        wired.owners,
        stall_seconds,
        stall_raises,
    )
    return LiveRun(run, wired)
