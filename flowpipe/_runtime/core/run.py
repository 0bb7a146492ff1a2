"""Wiring a plan into a live run, and the ``Run`` object users iterate.

The builder walks the plan right to left, so every stage's downstream channels
exist before its workers start::

    build(steps, downstream=[output])  ->  entry channels of steps[0]

A stage's input channel is made with that stage's ``buffer``/``overflow``; a
join gets one channel per branch and a thread that zips them; a merge lets
every branch emit into the same downstream channel.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar, cast

from ..._errors import GraphError, MissingExtra, RunOptionError
from ..._observe.counters import WorkerCounters
from ..._plan.edges import EdgePlan, plan_edges, sealed_capacity
from ..._plan.plan import FanOutNode, Node, Plan, StageNode
from ..._transport.buffer import Aborted, Channel
from ..backends.base import Backend, Worker, load_backend
from .closing import JOIN_TIMEOUT, Owner, join_workers
from .feed import feed_source
from .loop import StageRun
from .meter import Meter, Part
from .routing import Emitter, join_rows
from .shaping import MAX_SLICE
from .stall import stall_options, watch_stalls
from .state import Opener, RunState, start_thread

if TYPE_CHECKING:
    from ..._observe.stats import RunStats

Out = TypeVar("Out")
logger = logging.getLogger("flowpipe")
# The caller's waits (next(), put() on a live run) look again this often, so a
# Ctrl-C that lands just before one starts is raised now, not at the next output.
CALLER_POLL = 0.1


class _Builder:
    """Wires a plan's steps into channels and stage runs, right to left, then starts them."""

    def __init__(self, plan: Plan, state: RunState, backends: dict[str, Backend]) -> None:
        self.plan = plan
        self.edges = plan.edges or EdgePlan()
        self.state = state
        self.backends = backends
        self.stage_runs: list[StageRun] = []
        self.workers: list[Worker] = []
        self.owners: dict[int, Owner] = {}  # by id(worker): its stage, for messages
        self.joins: list[tuple[Any, ...]] = []

    def build(self, steps: tuple[Node, ...], downstream: list[Channel]) -> list[Channel]:
        for step in reversed(steps):
            downstream = self._step(step, downstream)
        return downstream

    def _step(self, step: Node, downstream: list[Channel]) -> list[Channel]:
        if isinstance(step, FanOutNode):
            return self._fan_out(step, downstream)
        opts = step.stage.options
        inp = self.state.channel(opts.buffer, opts.overflow, name=step.label)
        sealed = self.edges.sealed(step.position)
        if sealed[0]:  # the plan: this edge carries sealed slices, counted as entries
            inp.carry_bundles(sealed_capacity(opts.workers))
        router = None
        if step.keyed:  # the plan: a router sends each item to its key's worker
            from .keyed import KeyRouter  # only a run with a keyed stage needs it

            router = KeyRouter(step, inp, self.state)
        stage_run = StageRun(step, inp, Emitter(downstream), self.state, sealed, router)
        self.stage_runs.append(stage_run)
        return [inp]

    def start(self) -> None:
        """Start every worker, once the whole graph is wired (no channel gains a producer later)."""
        for stage_run in sorted(self.stage_runs, key=lambda sr: sr.node.position):  # graph order
            backend = self.backends[stage_run.node.backend]
            started = backend.start_stage(stage_run)
            owner = Owner(stage_run.node.label, backend.capabilities.in_caller)
            self.owners.update((id(w), owner) for w in started)
            self.workers.extend(started)
            if stage_run.router is not None:
                self.workers.append(
                    start_thread(f"{stage_run.node.label}-keys", stage_run.router.run)
                )
        for args in self.joins:
            self.workers.append(start_thread("join", join_rows, *args))
            self.owners[id(self.workers[-1])] = Owner("join", True)

    def _fan_out(self, step: FanOutNode, downstream: list[Channel]) -> list[Channel]:
        entries: list[Channel] = []
        if step.merge:
            for branch in step.branches:
                entries.extend(self.build(branch, downstream))
            return entries
        inputs = [self.state.channel(None, name="join") for _ in step.branches]
        emitter = Emitter(downstream)
        self.joins.append((inputs, step.keys, emitter, self.state))
        for branch, inp in zip(step.branches, inputs):
            entries.extend(self.build(branch, [inp]))
        return entries


def run_cleanups(state: RunState) -> None:
    for cleanup in state.cleanups:
        try:
            cleanup()
        except Exception:  # a cleanup never hides the run's own outcome
            logger.exception("flowpipe: cleanup after a run failed")


class Run(Generic[Out]):
    """A running pipeline: an iterator over its outputs and a context manager.

    Leaving early (``break``, ``close()``, garbage collection, Ctrl-C) stops
    every worker. Workers hold no reference to this object, so dropping it is
    enough to stop them.
    """

    def __init__(
        self,
        state: RunState,
        output: Channel,
        workers: list[Worker],
        parts: list[Part],
        plan: Plan | None = None,
        owners: dict[int, Owner] | None = None,
        started: float | None = None,
    ) -> None:
        self._state = state
        self._output = output
        self._workers = workers
        self._owners = owners or {}  # by id(worker): what it runs, to name a stuck one
        self._meter = Meter(parts, started)  # from before its workers started: they take time
        self._plan = plan
        self._buffer: list[Any] = []
        self._pos = 0
        self._closed = False

    # -- iteration ----------------------------------------------------------------
    def __iter__(self) -> Iterator[Out]:
        return self

    def __next__(self) -> Out:
        if self._pos < len(self._buffer):
            item: Out = self._buffer[self._pos]
            self._pos += 1
            return item
        got = self._take()
        if got is None:
            raise StopIteration
        self._buffer, self._pos = got, 1
        return got[0]  # type: ignore[no-any-return]

    def collect(self) -> list[Out]:
        """Every remaining output, in order (what ``pipe.run`` returns)."""
        out: list[Out] = self._buffer[self._pos :]
        self._buffer, self._pos = [], 0
        while (got := self._take()) is not None:
            out.extend(got)
        return out

    def next_within(self, timeout: float | None) -> Out:
        """The next output, waiting at most ``timeout`` seconds for it (``TimeoutError``).

        ``StopIteration`` at the end, like ``next()``.
        """
        if timeout is None or self._pos < len(self._buffer):
            return self.__next__()
        got = self._take(time.perf_counter() + timeout)
        if got is None:
            raise StopIteration
        self._buffer, self._pos = got, 1
        return got[0]  # type: ignore[no-any-return]

    def _take(self, give_up_at: float | None = None) -> list[Any] | None:
        if self._closed:
            return None
        try:
            got = self._output.take(MAX_SLICE, give_up_at=give_up_at, poll=CALLER_POLL)
        except Aborted:
            got = None
        except TimeoutError:  # get(timeout=...): nothing came in time; the run goes on
            raise
        except BaseException:  # Ctrl-C while waiting: stop everything, then re-raise
            self.close()
            raise
        if got is not None:
            self._meter.delivered += len(got[2])
            open_handles = self._state.open_handles
            return open_handles(got[2]) if open_handles is not None else got[2]
        self._finish()
        if self._state.error is not None:
            raise self._state.error
        return None

    # -- stopping -----------------------------------------------------------------
    def _finish(self, stopped_early: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        self._meter.stop_clock()  # the run's time ends here, not after the workers left
        if self._state.error is not None:
            self._state.stop()
        join_workers(self._workers, self._owners)
        run_cleanups(self._state)
        self._meter.finish(self._state.error, stopped_early)

    def close(self) -> None:
        """Stop every worker now (outputs not yet read are discarded)."""
        self._buffer, self._pos = [], 0  # outputs not yet read are discarded
        if not self._closed:
            self._state.stop()
            self._finish(stopped_early=True)

    def __enter__(self) -> Run[Out]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # never raise from a finaliser
            pass

    # -- observing ----------------------------------------------------------------
    @property
    def stats(self) -> RunStats:
        """Per-stage statistics: live while the run goes on, final after it ends."""
        return self._meter.stats()

    def to_mermaid(self) -> str:
        """The pipeline's Mermaid picture, each stage annotated with its throughput and busy share."""
        if self._plan is None or self._plan.pipeline is None:
            raise ValueError("this run does not know its pipeline")
        mermaid: str = self._plan.pipeline.to_mermaid(self.stats)
        return mermaid

    def _repr_markdown_(self) -> str:
        known = self._plan is not None and self._plan.pipeline is not None
        parts = [f"```mermaid\n{self.to_mermaid()}\n```"] if known else []
        return "\n\n".join([*parts, self.stats.to_markdown()])

    # -- what a REPL and a notebook show (one block: kept together for porting) -------
    def _summary(self, state: str) -> str:
        """``read | detect[x4] on thread: running, 12 items out``."""
        pipe = "a pipeline" if self._plan is None else self._plan.description
        backends = sorted({s.backend for s in self.stats.stages if not s.source}) or ["thread"]
        out = self._meter.delivered
        return f"{pipe} on {'+'.join(backends)}: {state}, {out} item{'s' * (out != 1)} out"

    def __repr__(self) -> str:
        if self._state.error is not None:
            state = f"failed in stage {getattr(self._state.error, 'stage', '?')!r}"
        elif not self._closed:
            state = "running"
        else:
            state = "closed early" if self._state.stopped else "finished"
        return f"<flowpipe.Run {self._summary(state)}>"

    def _html(self, title: str) -> str:
        """``title``, the graph with each stage's throughput, and the stats table."""
        import html

        stats = self.stats
        plan = self._plan
        graph: str = (
            plan.pipeline.to_svg(stats) if plan is not None and plan.pipeline is not None else ""
        )
        return f"<div><p><code>{html.escape(title)}</code></p>{graph}{stats.to_html()}</div>"

    def _repr_html_(self) -> str:
        return self._html(repr(self))


def _opener(plan: Plan, source: Any) -> tuple[str, Callable[[], Iterable[Any]]]:
    first = plan.source_stage
    if first is not None:
        if source is not None:
            raise GraphError(
                f"stage {first.label!r} takes no argument, so it is the source: run() takes no source"
            )
        return first.label, first.stage.make_callable()
    if source is None:
        raise GraphError("this pipeline needs a source: pipe.run(items), or items | pipe")
    if not isinstance(source, Iterable):
        raise GraphError(f"a source must be iterable, got {type(source).__name__}: {source!r:.60}")
    # isinstance leaves the item type unknown
    return "source", lambda: cast("Iterable[object]", source)


def open_run(plan: Plan, source: Any, **options: Any) -> Run[Any]:
    """Start a run of ``plan`` over ``source`` (``None``: the plan's source stage)."""
    progress = bool(options.pop("progress", False))
    stall_seconds, stall_raises = stall_options(options)
    if options:
        given = ", ".join(f"{k}={v!r:.40}" for k, v in sorted(options.items()))
        raise RunOptionError(
            f"unknown run option(s): {given}; run/iter take the source, backend=, progress=, "
            "stall_timeout= and on_stall="
        )
    tqdm = _progress_bars() if progress else None  # a missing extra fails before anything starts
    label, open_source = _opener(plan, source)
    source_counters = WorkerCounters()

    def start_feeder(emitter: Emitter, state: RunState) -> list[Worker]:
        return [
            start_thread("source", feed_source, open_source, label, emitter, state, source_counters)
        ]

    if logger.isEnabledFor(logging.INFO):
        logger.info("run starting: %s (backend=%s)", plan.description, plan.backend)
    wired = start_stages(plan, start_feeder, watch=stall_seconds is not None)
    parts: list[Part] = []
    if plan.source_stage is not None:
        parts.append(Part(label, 1, [source_counters], None, plan.source_stage))
    elif callable(drops := getattr(source, "_flowpipe_dropped", None)):
        # ``flowpipe.sources``: a source row, whose ``dropped`` are the feeds' drops
        counted = cast("Callable[[], int]", drops)
        parts.append(Part("sources", 1, [source_counters], None, None, None, counted))
    parts.extend(wired.parts)
    run: Run[Any] = Run(
        wired.state, wired.output, wired.workers, parts, plan, wired.owners, wired.started
    )
    watch_stalls(
        wired.state, parts, wired.output, wired.workers, wired.owners, stall_seconds, stall_raises
    )
    if tqdm is not None:
        try:
            # open_run made this Run: it may set up the Run's own meter
            run._meter.show_progress(tqdm, _expected_outputs(plan, source))  # pyright: ignore[reportPrivateUsage]
        except BaseException:
            run.close()
            raise
    return run


def _progress_bars() -> Any:
    try:
        from ..._observe.progress import load_tqdm  # only for progress=True

        return load_tqdm()
    except ImportError as exc:
        raise MissingExtra(
            "progress=True needs tqdm, which is the optional extra flowpipe[progress]: "
            "pip install -e '.[progress]' in the flowpipe checkout"
        ) from exc


def _expected_outputs(plan: Plan, source: Any) -> int | None:
    """How many outputs a run will give, when every stage gives one per input (a bar's total)."""
    if plan.source_stage is not None or not hasattr(source, "__len__"):
        return None
    for node in plan.steps:
        if isinstance(node, FanOutNode) and node.merge:
            return None
    for stage_node in plan.stages:
        opts = stage_node.stage.options
        if stage_node.stage.call_kind == "generator" or opts.window or opts.overflow != "block":
            return None
    try:
        return len(source)
    except Exception:
        return None


class Wired(NamedTuple):
    """A started graph: what a ``Run`` needs, and the emitter that feeds the first stage."""

    state: RunState
    output: Channel
    entry: Emitter
    workers: list[Worker]  # the feeder's first, then every stage's
    parts: list[Part]  # per stage, in graph order, for the stats
    owners: dict[int, Owner]  # by id(worker): its stage (a stuck one is named)
    started: float | None = None  # perf_counter() before any worker started: the run's start


def start_stages(
    plan: Plan, start_feeder: Callable[[Emitter, RunState], list[Worker]], *, watch: bool = False
) -> Wired:
    """Wire the plan's stages into channels, start ``start_feeder``, then every worker.

    ``start_feeder(entry, state)`` starts whatever fills the first stage's
    channels through ``entry`` (``iter``: a thread reading the source;
    ``start``: nothing, ``put`` does). If anything fails to start, every
    worker already started is stopped. ``watch``: the run watches for stalls (workers
    elsewhere then register how to read their stacks: ``RunState.stacks``).
    """
    started = time.perf_counter()
    state = RunState()
    if watch:
        state.stacks = {}
    # The hand-over to the caller is as large as the last stage's own buffer, so a
    # small explicit ``buffer=`` bounds what is read ahead of a slow consumer.
    last = plan.steps[-1]
    output = state.channel(
        last.stage.options.buffer if isinstance(last, StageNode) else None, name="output"
    )
    builder: _Builder | None = None
    fed: list[Worker] = []
    try:
        # An unavailable backend fails here, before anything starts.
        backends = {name: load_backend(name)(state) for name in sorted(plan.backends)}
        plan = plan_edges(plan, {name: b.capabilities for name, b in backends.items()})
        if plan.edges is not None and plan.edges.handles:
            state.open_handles = _opener_of_handles(backends)
        builder = _Builder(plan, state, backends)
        entry = Emitter(builder.build(plan.wired_steps, [output]))
        # The source first, every producer being registered by now: the first items
        # are read, and the first stage works on them, while the later stages'
        # workers start (each thread's start waits for it to run, ~0.1 ms).
        fed = start_feeder(entry, state)
        builder.start()
    except BaseException:
        state.stop()
        for w in [*fed, *(builder.workers if builder is not None else [])]:
            w.join(JOIN_TIMEOUT)
        run_cleanups(state)
        raise
    parts: list[Part] = []
    for sr in sorted(builder.stage_runs, key=lambda sr: sr.node.position):
        caps = backends[sr.node.backend].capabilities
        opts = sr.node.stage.options
        parts.append(Part(sr.node.label, opts.workers, sr.counters, sr.inp, sr.node, caps))
        for node, counters in zip(sr.node.fused, sr.fused_counters):  # in its worker
            parts.append(Part(node.label, 1, [counters], None, node, caps, None, sr.node.label))
    source = plan.source_stage.label if plan.source_stage is not None else "source"
    owners = {id(w): Owner(source, True, source=True) for w in fed}
    owners.update(builder.owners)
    return Wired(state, output, entry, [*fed, *builder.workers], parts, owners, started)


def _opener_of_handles(backends: dict[str, Backend]) -> Opener:
    """What opens handles in this process: every backend that returns some, in turn."""
    openers = list(dict.fromkeys(o for b in backends.values() if (o := b.open_handles())))
    if len(openers) == 1:
        return openers[0]

    def open_all(items: list[Any]) -> list[Any]:
        for opener in openers:
            items = opener(items)
        return items

    return open_all
