"""The implementations timed side by side: flowpipe and what a user would pick instead.

Each peer turns a scenario into a *job*: a function of no arguments that runs
the whole workload (starting and stopping its threads included) and returns
the outputs in input order. Whatever can be built once without running
anything (flowpipe's graph) is built in ``prepare``, outside the timed call.

Optional peers (pypeln, mpire, SPDL) are imported lazily, in ``prepare``: a peer whose
import fails is skipped with a note instead of failing the run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .chains import run_queue_chain
from .scenarios import Scenario

Job = Callable[[], list[Any]]

LIST_CHUNK = 64


@dataclass(frozen=True)
class Peer:
    key: str  # short name used in ratios and targets
    label: str  # what the table shows
    prepare: Callable[[Scenario], Job]
    flowpipe: bool = False  # rows the targets apply to
    package: str | None = None  # distribution whose version is printed
    processes: bool = False  # a process-based peer: timed on ``cpu`` scenarios only
    ray: bool = False  # needs Ray (the extra flowpipe[ray]; Ray Data needs ray[data])
    only: str | None = None  # timed on this scenario only (None: every one it applies to)
    shapes: tuple[str, ...] = ("chain",)  # the scenario shapes it can run (``Scenario.shape``)

    def applies_to(self, scenario: Scenario) -> bool:
        if self.only is not None and scenario.name != self.only:
            return False
        if scenario.shape not in self.shapes:
            return False
        return scenario.cpu or not self.processes


class Fused:
    """The four stages as one picklable callable (for process pools)."""

    def __init__(self, stages: tuple[Callable[[int], int], ...]) -> None:
        self.stages = stages

    def __call__(self, x: int) -> int:
        for fn in self.stages:
            x = fn(x)
        return x


def fused(scenario: Scenario) -> Callable[[int], int]:
    a, b, c, d = scenario.stages
    return lambda x: d(c(b(a(x))))


def prepare_loop(scenario: Scenario) -> Job:
    n = scenario.n
    if scenario.shape == "fanout":
        a, b, c, d = scenario.stages
        return lambda: [d((b(y), c(y))) for y in map(a, range(n))]
    if scenario.shape == "batch":
        prep, model, post = scenario.stages
        size = scenario.batch

        def job() -> list[Any]:
            ready = [prep(x) for x in range(n)]
            done: list[Any] = []
            for i in range(0, n, size):
                done.extend(model(ready[i : i + size]))
            return [post(y) for y in done]

        return job
    a, b, c, d = scenario.stages
    return lambda: [d(c(b(a(x)))) for x in range(n)]


def prepare_queue_items(scenario: Scenario) -> Job:
    stages, n, w = scenario.stages, scenario.n, scenario.workers
    return lambda: run_queue_chain(stages, range(n), workers=w)


def prepare_queue_lists(scenario: Scenario) -> Job:
    stages, n, w = scenario.stages, scenario.n, scenario.workers
    return lambda: run_queue_chain(stages, range(n), workers=w, chunk=LIST_CHUNK)


def prepare_pypeln(scenario: Scenario) -> Job:
    """``pl.thread.map`` chained, ``workers`` per stage; ``pl.thread.ordered`` when w > 1.

    pypeln's thread stages emit in completion order; with one worker per stage
    that is input order, with several it is not, so the chain ends with
    ``ordered`` to give the same (ordered) result as every other peer.
    """
    import pypeln as pl

    stages, n, w = scenario.stages, scenario.n, scenario.workers

    def job() -> list[Any]:
        s: Any = range(n)
        for fn in stages:
            s = pl.thread.map(fn, s, workers=w)
        if w > 1:
            s = pl.thread.ordered(s)
        return list(s)

    return job


def prepare_mpire(scenario: Scenario) -> Job:
    """One ``WorkerPool`` of threads running the four stages fused, ``map`` keeps order.

    ``n_jobs`` is the number of threads a pipeline of the scenario gets
    (4 stages x workers), so both sides have the same number of threads.
    """
    from mpire.pool import WorkerPool

    fn, n, jobs = fused(scenario), scenario.n, scenario.threads

    def job() -> list[Any]:
        with WorkerPool(n_jobs=jobs, use_dill=False, start_method="threading") as pool:
            return list(pool.map(fn, range(n)))

    return job


def flowpipe_pipeline(scenario: Scenario) -> Any:
    from flowpipe import stage

    if scenario.shape == "batch":
        prep, model, post = scenario.stages
        return (
            stage(prep, workers=scenario.workers) | stage(model, batch=scenario.batch) | stage(post)
        )
    a, b, c, d = (stage(fn, workers=scenario.workers) for fn in scenario.stages)
    if scenario.shape == "fanout":
        return a | (b, c) | d
    return a | b | c | d


def prepare_spdl(scenario: Scenario) -> Job:
    """SPDL's ``PipelineBuilder`` (``spdl_peers.py``): ``pipe`` per stage, input order."""
    import spdl.pipeline  # noqa: F401  # skip the row here if it is missing

    from . import spdl_peers

    stages, n, w = scenario.stages, scenario.n, scenario.workers
    if scenario.shape == "fanout":
        return lambda: spdl_peers.fanout(stages, n, w)
    if scenario.shape == "batch":
        size = scenario.batch
        return lambda: spdl_peers.batched(stages, n, w, size)
    return lambda: spdl_peers.chain(stages, n, w)


def prepare_flowpipe_process(scenario: Scenario) -> Job:
    """The same pipeline on ``backend="process"``: one worker process per stage worker."""
    pipe, n = flowpipe_pipeline(scenario), scenario.n
    return lambda: pipe.run(range(n), backend="process")


def prepare_mp_pool(scenario: Scenario) -> Job:
    """``multiprocessing.Pool(cpus).imap`` over the fused stages, the stdlib way.

    Chunks of ``n / (4 x cpus)`` items, as ``Pool.map`` would pick.
    """
    import multiprocessing
    import os

    fn, n = Fused(scenario.stages), scenario.n
    cpus = os.cpu_count() or 1
    chunk = max(1, n // (4 * cpus))

    def job() -> list[Any]:
        with multiprocessing.get_context("spawn").Pool(cpus) as pool:
            return list(pool.imap(fn, range(n), chunksize=chunk))

    return job


def prepare_pypeln_process(scenario: Scenario) -> Job:
    """``pl.process.map`` chained, ``workers`` processes per stage, then ordered."""
    import pypeln as pl

    stages, n, w = scenario.stages, scenario.n, scenario.workers

    def job() -> list[Any]:
        s: Any = range(n)
        for fn in stages:
            s = pl.process.map(fn, s, workers=w)
        return list(pl.process.ordered(s))

    return job


def start_ray() -> Any:
    """A local Ray for the Ray peers, started once, outside every timed call."""
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    return ray


def prepare_flowpipe_ray(scenario: Scenario) -> Job:
    """The same pipeline on ``backend="ray"``: one actor per stage worker."""
    start_ray()
    pipe, n = flowpipe_pipeline(scenario), scenario.n
    return lambda: pipe.run(range(n), backend="ray")


def prepare_ray_actors(scenario: Scenario) -> Job:
    """Ray actors by hand: one per stage, each item's calls chained by object ref.

    The actors are made once here (warm, as flowpipe's pooled actors are after
    its first round) and reserve no CPU, like flowpipe's: four must fit on two
    CPUs next to the other Ray peers' actors. Items go in a window of
    ``process_peers.RAY_WINDOW`` so that frames do not pile up in the object
    store (the same chain as the process scenarios' ``ray`` row).
    """
    from .process_peers import make_ray_actors, ray_actor_stream  # it imports this module

    actors = make_ray_actors(scenario.stages)
    n = scenario.n

    def job() -> list[Any]:
        return list(ray_actor_stream(scenario.stages, n, actors))

    return job


class _Mapper:
    """One stage for Ray Data's ``map_batches``: applies it to every row of a batch."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        return {"item": np.asarray([self.fn(v) for v in batch["item"]])}


def prepare_ray_data(scenario: Scenario) -> Job:
    """Ray Data: ``map_batches`` with one actor per stage (``concurrency=1``), order kept.

    A quarter CPU per actor: the four fit in one CPU, which leaves one for Ray
    Data's own read tasks on a two-CPU machine.
    """
    start_ray()
    import ray.data as rd

    rd.DataContext.get_current().execution_options.preserve_order = True
    stages, n = scenario.stages, scenario.n

    def job() -> list[Any]:
        ds = rd.range(n).map_batches(lambda b: {"item": b["id"]})
        for fn in stages:
            ds = ds.map_batches(
                _Mapper, fn_constructor_args=(fn,), concurrency=1, num_cpus=0.25, batch_size=32
            )
        return [int(row["item"]) for row in ds.take_all()]

    return job


def prepare_mpire_process(scenario: Scenario) -> Job:
    """mpire's ``WorkerPool`` of processes (its default start method) over the fused stages."""
    import os

    from mpire.pool import WorkerPool

    fn, n = Fused(scenario.stages), scenario.n
    cpus = os.cpu_count() or 1

    def job() -> list[Any]:
        with WorkerPool(n_jobs=cpus) as pool:
            return list(pool.map(fn, range(n)))

    return job


def prepare_flowpipe(scenario: Scenario) -> Job:
    pipe, n = flowpipe_pipeline(scenario), scenario.n
    return lambda: pipe.run(range(n))


def prepare_flowpipe_nostats(scenario: Scenario) -> Job:
    """The ``flowpipe`` row with the stage workers' statistics switched off.

    Every stage worker of these runs counts into ``NoStatsCounters``, whose
    per-slice update does nothing, so the two rows differ only by what counting
    costs: the ``stats overhead`` target compares them. (The clock reads that
    size the slices, and the buffers' fill and peak, stay: they are nearly free.)
    """
    from flowpipe._observe.counters import WorkerCounters

    try:
        from flowpipe._runtime.core.loop import StageRun
    except ImportError:  # a revision from before the runtime core (benchmarks compare both)
        from flowpipe._runtime.engine import StageRun  # type: ignore[import-not-found,no-redef]

    class NoStatsCounters(WorkerCounters):
        __slots__ = ()

        def count_slice(self, *args: Any, **kwargs: Any) -> None:  # every revision's
            pass

    pipe, n = flowpipe_pipeline(scenario), scenario.n

    def job() -> list[Any]:
        counting = StageRun.counters_class
        StageRun.counters_class = NoStatsCounters
        try:
            out: list[Any] = pipe.run(range(n))
        finally:
            StageRun.counters_class = counting
        return out

    return job


def prepare_flowpipe_gen(scenario: Scenario) -> Job:
    """The same pipeline over a generator: a lazy source that cannot be sliced."""
    pipe, n = flowpipe_pipeline(scenario), scenario.n
    return lambda: pipe.run(x for x in range(n))


LOOP = "loop"
SHAPES = ("chain", "fanout", "batch")

PEERS: tuple[Peer, ...] = (
    Peer(LOOP, "plain loop", prepare_loop, shapes=SHAPES),
    Peer("queue/1", "queue chain, 1/put", prepare_queue_items),
    Peer("queue/64", f"queue chain, {LIST_CHUNK}/put", prepare_queue_lists),
    Peer("pypeln", "pypeln thread", prepare_pypeln, package="pypeln"),
    Peer("mpire", "mpire threads, fused", prepare_mpire, package="mpire"),
    Peer("spdl", "SPDL PipelineBuilder", prepare_spdl, package="spdl", shapes=SHAPES),
    Peer(
        "flowpipe",
        "flowpipe range()",
        prepare_flowpipe,
        flowpipe=True,
        package="flowpipe",
        shapes=SHAPES,
    ),
    Peer("flowpipe/gen", "flowpipe generator", prepare_flowpipe_gen, flowpipe=True, shapes=SHAPES),
    Peer("flowpipe/nostats", "flowpipe, no stats", prepare_flowpipe_nostats, only="trivial"),
    Peer("mp.Pool", "multiprocessing.Pool, fused", prepare_mp_pool, processes=True),
    Peer("pypeln/p", "pypeln process", prepare_pypeln_process, processes=True),
    Peer("mpire/p", "mpire processes, fused", prepare_mpire_process, processes=True),
    Peer(
        "flowpipe/p",
        "flowpipe process",
        prepare_flowpipe_process,
        flowpipe=True,
        processes=True,
    ),
    Peer("ray", "Ray actors by hand", prepare_ray_actors, processes=True, ray=True),
    Peer("ray.data", "Ray Data map_batches", prepare_ray_data, processes=True, ray=True),
    Peer(
        "flowpipe/ray",
        "flowpipe ray",
        prepare_flowpipe_ray,
        flowpipe=True,
        processes=True,
        ray=True,
    ),
)

BASELINES = ("loop", "queue/1", "queue/64", "pypeln", "mpire", "spdl", "mp.Pool", "ray", "ray.data")


def select_peers(keys: list[str] | None, also_known: Sequence[str] = ()) -> list[Peer]:
    """The peers named (the plain loop always: it is the reference output and baseline).

    ``also_known``: keys of other scenarios' rows (the process scenarios'), accepted here.
    """
    if not keys:
        return list(PEERS)
    known = {p.key for p in PEERS} | set(also_known)
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise SystemExit(
            f"unknown peer(s): {', '.join(unknown)}; choose from {', '.join(sorted(known))}"
        )
    return [p for p in PEERS if p.key == LOOP or p.key in keys]


def prepare_all(scenario: Scenario, peers: list[Peer]) -> tuple[list[tuple[Peer, Job]], list[str]]:
    """Jobs for every peer that can run here, and a note for each one skipped."""
    jobs: list[tuple[Peer, Job]] = []
    notes: list[str] = []
    for peer in peers:
        if not peer.applies_to(scenario):
            continue
        try:
            jobs.append((peer, peer.prepare(scenario)))
        except ImportError as exc:
            extra = "ray" if peer.ray else "benchmarks"
            notes.append(f"skipped {peer.key}: {exc} (install it: pip install -e '.[{extra}]')")
    return jobs, notes


def version_of(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"
