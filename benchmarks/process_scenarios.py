"""The process scenarios (``proc-*``): flowpipe's process backend side by side with its peers.

Four scenarios, each run with every implementation in one run (``python -m
benchmarks --scenario proc``; they run only when named):

- ``proc-trivial``: 4 stages ``x + 1`` over 100_000 ints: the per-item cost of
  moving items between processes.
- ``proc-cpu``: 2 stages of about 1 ms of pure-Python work each over 2_000
  items: how much of the ideal 2-core speed-up over the plain loop a row gets,
  ``(loop time / row time) / 2``. The work is an empty ``for`` loop over a
  ``range``, which flowpipe's workers turned out to run slower per call than
  other processes do, for a reason not found yet (see ``benchmarks/README.md``), so
- ``proc-cpu-mixed`` measures the same with a more typical ~1 ms of pure
  Python in each stage: string keys counted in a dict, with arithmetic.
- ``proc-frames``: stage 1 makes a 1080p RGB uint8 frame from its number,
  stage 2 marks a few pixels in place and passes the same array on, stage 3
  marks it too and returns a small checksum: 1_200 frames. Frames per second,
  the GB/s that crosses between processes (``frames x 6_220_800 bytes x 2``
  process-to-process edges / seconds), that rate as a fraction of a
  single-process ``np.copyto`` of one frame measured in the same run, and the
  memory of the processes each run uses (``MemorySampler``). The run is long
  enough that its middle third comes after the warm-up (flowpipe's segment
  pools fill in the first ~0.8 s), so "growth" sees a leak, not the warm-up.
- ``proc-startup``: 3 stages ``x + 1`` over 10 items: the time from the call
  (processes started in it) to the first result, and to the end (every
  process ended).

Every row's output is compared with the plain loop's (same items, same
order); a wrong output or an exception marks it FAILED. Rows are timed
round-robin, as in ``measure.py``; a row whose first run took longer than
``SLOW_S`` is timed only that once (pypeln's process stages on
``proc-trivial`` take about 90 s per run). After each scenario, any
process this one started and that is still running (or not reaped) is
reported and fails the run. The implementations are in ``process_peers.py``.
"""

from __future__ import annotations

import gc
import itertools
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import process_peers as pp
from .measure import mismatch
from .peers import start_ray, version_of
from .report import rate, ratio, table
from .scenarios import inc1, inc2, inc3, inc4

Fn = Callable[[Any], Any]
Job = Callable[[], list[Any]]

FAMILY = "proc"
KINDS = ("trivial", "cpu", "cpu-mixed", "frames", "startup")
CPU_KINDS = frozenset({"cpu", "cpu-mixed"})  # scored as a fraction of the ideal 2-core speed-up
NAMES = tuple(f"{FAMILY}-{k}" for k in KINDS)

TRIVIAL_N, TRIVIAL_N_QUICK = 100_000, 2_000
CPU_N, CPU_N_QUICK = 2_000, 40
PROC_SPIN = 80_000  # loop turns per stage call: about 1 ms of pure Python
MIXED_TURNS = 4_000  # dict updates per stage call (proc-cpu-mixed): about 1 ms too
FRAMES_N, FRAMES_N_QUICK = 1_200, 12  # long enough to pass the warm-up of the segment pools
STARTUP_N = 10
FRAME_SHAPE = (1080, 1920, 3)
FRAME_BYTES = FRAME_SHAPE[0] * FRAME_SHAPE[1] * FRAME_SHAPE[2]  # 6_220_800
FRAME_EDGES = 2  # process-to-process edges a frame crosses: stage 1 -> 2 -> 3
QUEUE_ITEMS = 1024  # bound of each multiprocessing.Queue in the chain (ints, lists)
FRAME_QUEUE_ITEMS = 8  # the same for frames (and pypeln's maxsize there): 50 MB per queue
LIST_CHUNK = 64
RAY_DATA_BATCH = {"trivial": 1024, "cpu": 32, "cpu-mixed": 32}

DEFAULT_REPEAT = 3  # throughput scenarios, when --repeat is not given
STARTUP_REPEAT = 5  # proc-startup, when --repeat is not given
SLOW_S = 15.0  # a row whose first run takes longer is timed only once
SAMPLE_S = 0.02  # memory sampling interval (proc-frames)
TREE_EVERY = 5  # ... and the process tree is found again every 5 samples
GROWTH_FRAMES = 4  # "no growth": the tree's RSS may rise by at most 4 frames over a run
ORPHAN_GRACE_S = 5.0


# -- the stage functions (module level: spawned processes import them) ------------------


def work1(x: int) -> int:
    for _ in range(PROC_SPIN):
        pass
    return x + 1


def work2(x: int) -> int:
    for _ in range(PROC_SPIN):
        pass
    return x * 2


def count_keys(x: int) -> int:
    """About 1 ms of everyday pure Python: format keys, count them in a dict, add up."""
    counts: dict[str, int] = {}
    for i in range(MIXED_TURNS):
        key = f"k{(i * 31 + x) % 97}"
        counts[key] = counts.get(key, 0) + i * x
        if i % 3 == 0:
            counts[key] ^= len(key)
    return sum(counts.values()) % 1000


def mixed1(x: int) -> int:
    return x + 1 + count_keys(x) * 0


def mixed2(x: int) -> int:
    return x * 2 + count_keys(x) * 0


def make_frame(x: int) -> Any:
    import numpy as np

    return np.full(FRAME_SHAPE, x % 251, dtype=np.uint8)


def annotate(frame: Any) -> Any:
    """A typical pass-on stage: mark a few pixels in place, return the same array."""
    frame[:2, :2] = 255
    return frame


def checksum(frame: Any) -> int:
    """Mark the frame too, return a small number (``262 + x % 251``)."""
    frame[-1, -1] = 7
    return int(frame[0, 0, 0]) + int(frame[-1, -1, 2]) + int(frame[540, 960, 1])


# -- workloads and rows ----------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    kind: str  # one of KINDS
    summary: str
    n: int
    stages: tuple[Fn, ...]
    queue_items: int = QUEUE_ITEMS

    @property
    def name(self) -> str:
        return f"{FAMILY}-{self.kind}"


def build_workloads(quick: bool) -> list[Workload]:
    trivial_n = TRIVIAL_N_QUICK if quick else TRIVIAL_N
    cpu_n = CPU_N_QUICK if quick else CPU_N
    frames_n = FRAMES_N_QUICK if quick else FRAMES_N
    return [
        Workload(
            "trivial",
            f"4 process stages x+1, {trivial_n:_} ints (per-item overhead between processes)",
            trivial_n,
            (inc1, inc2, inc3, inc4),
        ),
        Workload(
            "cpu",
            f"2 process stages of ~1 ms pure-Python work, {cpu_n:_} items (2-core scaling)",
            cpu_n,
            (work1, work2),
        ),
        Workload(
            "cpu-mixed",
            f"2 process stages of ~1 ms of dict and string work, {cpu_n:_} items (2-core scaling)",
            cpu_n,
            (mixed1, mixed2),
        ),
        Workload(
            "frames",
            f"1080p RGB frames made in stage 1, marked in stages 2 and 3: {frames_n} frames",
            frames_n,
            (make_frame, annotate, checksum),
            queue_items=FRAME_QUEUE_ITEMS,
        ),
        Workload(
            "startup",
            f"3 process stages x+1 over {STARTUP_N} items: time to first result and to the end",
            STARTUP_N,
            (inc1, inc2, inc3),
        ),
    ]


Cleanups = list[Callable[[], None]]


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    prepare: Callable[[Workload, Cleanups], pp.Stream]  # what a stream needs, made untimed
    kinds: frozenset[str]
    flowpipe: bool = False  # the targets apply
    package: str | None = None  # its version is printed
    edges: int = FRAME_EDGES  # process-to-process edges a frame crosses (0: none)
    collect: Callable[[Workload], Job] | None = None  # throughput job (default: list(stream()))
    ray: bool = False


def prep_loop(w: Workload, cleanups: Cleanups) -> pp.Stream:
    return lambda: pp.loop_stream(w.stages, w.n)


def prep_mpq(w: Workload, cleanups: Cleanups) -> pp.Stream:
    return lambda: pp.mp_queue_chain(w.stages, w.n, w.queue_items)


def prep_mpq_lists(w: Workload, cleanups: Cleanups) -> pp.Stream:
    per_queue = max(1, w.queue_items // LIST_CHUNK)
    return lambda: pp.mp_queue_chain(w.stages, w.n, per_queue, chunk=LIST_CHUNK)


def prep_pypeln(w: Workload, cleanups: Cleanups) -> pp.Stream:
    import pypeln  # noqa: F401  # skip the row here if it is missing

    maxsize = FRAME_QUEUE_ITEMS if w.kind == "frames" else 0
    return lambda: pp.pypeln_stream(w.stages, w.n, maxsize)


def prep_mpipe(w: Workload, cleanups: Cleanups) -> pp.Stream:
    import mpipe  # type: ignore[import-untyped, import-not-found, unused-ignore]  # noqa: F401

    return lambda: pp.mpipe_stream(w.stages, w.n)


def prep_spdl(w: Workload, cleanups: Cleanups) -> pp.Stream:
    import spdl.pipeline  # noqa: F401  # skip the row here if it is missing

    from . import spdl_peers

    return lambda: spdl_peers.process_stream(w.stages, w.n)


def prep_pool(w: Workload, cleanups: Cleanups) -> pp.Stream:
    return lambda: pp.pool_stream(w.stages, w.n)


def prep_mpire(w: Workload, cleanups: Cleanups) -> pp.Stream:
    import mpire  # noqa: F401

    return lambda: pp.mpire_stream(w.stages, w.n)


def prep_ray(w: Workload, cleanups: Cleanups) -> pp.Stream:
    """Warm actors (made here, killed after the scenario); fresh ones per call on start-up."""
    start_ray()
    if w.kind == "startup":
        return lambda: pp.ray_actor_stream(w.stages, w.n, None)
    actors = pp.make_ray_actors(w.stages)
    cleanups.append(lambda: pp.kill_ray_actors(actors))
    return lambda: pp.ray_actor_stream(w.stages, w.n, actors)


def prep_ray_data(w: Workload, cleanups: Cleanups) -> pp.Stream:
    start_ray()
    import ray.data  # noqa: F401

    batch = RAY_DATA_BATCH[w.kind]
    return lambda: pp.ray_data_stream(w.stages, w.n, batch)


def prep_flowpipe(backend: str) -> Callable[[Workload, Cleanups], pp.Stream]:
    def prepare(w: Workload, cleanups: Cleanups) -> pp.Stream:
        pipe = pp.flowpipe_pipeline(w.stages)  # the lazy graph: built outside the clock
        return lambda: pp.flowpipe_stream(pipe, w.n, backend)

    return prepare


def flowpipe_run(backend: str, fuse: bool = False) -> Callable[[Workload], Job]:
    """``pipe.run(range(n), backend=...)``: what a user calls for the whole output."""

    def prepare(w: Workload) -> Job:
        pipe = pp.flowpipe_pipeline(w.stages, fuse)
        return lambda: list(pipe.run(range(w.n), backend=backend))

    return prepare


def prep_flowpipe_fused(w: Workload, cleanups: Cleanups) -> pp.Stream:
    """Every stage ``fuse=True`` (issue 21): one worker process calls them in turn."""
    try:
        pipe = pp.flowpipe_pipeline(w.stages, fuse=True)
    except ValueError as exc:  # a revision from before fuse= (benchmarks.revisions)
        raise ImportError(f"this flowpipe has no fuse= ({exc})") from exc
    return lambda: pp.flowpipe_stream(pipe, w.n, "process")


ALL = frozenset(KINDS)
ROWS: tuple[Row, ...] = (
    Row("loop", "plain loop", prep_loop, ALL, edges=0),
    Row("mpq/1", "mp.Queue chain, 1/put", prep_mpq, ALL),
    Row("mpq/64", f"mp.Queue chain, {LIST_CHUNK}/put", prep_mpq_lists, frozenset({"trivial"})),
    Row("pypeln/p", "pypeln process", prep_pypeln, ALL, package="pypeln"),
    Row("mpipe", "mpipe OrderedStage", prep_mpipe, ALL, package="mpipe"),
    Row("spdl/p", "SPDL, a process pool per stage", prep_spdl, CPU_KINDS, package="spdl"),
    Row("mp.Pool", "mp.Pool(2).imap, fused", prep_pool, ALL, edges=0),
    Row("mpire/p", "mpire processes, fused", prep_mpire, ALL, package="mpire", edges=0),
    Row(
        "ray",
        "Ray actors by hand",
        prep_ray,
        frozenset({"cpu", "cpu-mixed", "frames", "startup"}),
        package="ray",
        ray=True,
    ),
    Row(
        "ray.data",
        "Ray Data map_batches",
        prep_ray_data,
        frozenset({"trivial", "cpu", "cpu-mixed"}),
        package="ray",
        ray=True,
    ),
    Row(
        "flowpipe",
        "flowpipe thread",
        prep_flowpipe("thread"),
        frozenset({"frames", "startup"}),
        edges=0,
        collect=flowpipe_run("thread"),
    ),
    Row(
        "flowpipe/p",
        "flowpipe process",
        prep_flowpipe("process"),
        ALL,
        flowpipe=True,
        package="flowpipe",
        collect=flowpipe_run("process"),
    ),
    Row(
        "flowpipe/pf",
        "flowpipe process, fuse=True",
        prep_flowpipe_fused,
        frozenset({"trivial", "cpu-mixed"}),  # cheap stages, and costly ones (fusing loses)
        flowpipe=True,
        collect=flowpipe_run("process", fuse=True),
    ),
)
KEYS = tuple(r.key for r in ROWS)


def is_proc_name(name: str) -> bool:
    return name == FAMILY or name.startswith(FAMILY + "-")


def select_workloads(workloads: list[Workload], names: Sequence[str]) -> list[Workload]:
    unknown = [n for n in names if n != FAMILY and n not in NAMES]
    if unknown:
        raise SystemExit(
            f"unknown scenario(s): {', '.join(unknown)}; process scenarios: {FAMILY}, {', '.join(NAMES)}"
        )
    return [w for w in workloads if FAMILY in names or w.name in names]


# -- processes and memory (Linux /proc) -------------------------------------------------------


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (every thread's), from /proc."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return found


def process_tree(root: int) -> list[int]:
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children(pid))
    return pids


PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def state_and_cmd(pid: int) -> tuple[str, str]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except (OSError, IndexError):
        return "gone", ""
    return state, cmd


def shm_names() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


@dataclass
class MemoryUse:
    """One run: the tree's peak RSS above its start, its growth over the run, /dev/shm left."""

    peak: int  # bytes above the RSS of the tree at the start of the run
    growth: int | None  # median of the last third of the samples - median of the middle third
    shm_left: frozenset[str]  # entries of /dev/shm made during the run and still there after it


class MemorySampler:
    """Samples the RSS of this process's tree every ``SAMPLE_S`` in a thread, during one run.

    Without ``whole_tree``, processes that were already running when the run
    began (Ray's daemons, a library's helper kept for the session) are left
    out, except this one: a row is charged with its own processes only. Rows
    that use Ray count the whole tree, since their work happens in processes
    started before the run.
    """

    def __init__(self, whole_tree: bool = False) -> None:
        self.pid = os.getpid()
        self.whole_tree = whole_tree
        self.before: set[int] = set()
        self.samples: list[int] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.sample, name="memory-sampler", daemon=True)

    def sample(self) -> None:
        # Finding the tree reads every thread's children file (Ray's driver has
        # dozens of threads): done every TREE_EVERY samples, RSS every sample.
        for k in itertools.count():
            if k % TREE_EVERY == 0:
                pids = self.tree()
            self.samples.append(sum(rss(p) for p in pids))
            if self.stopped.wait(SAMPLE_S):
                return

    def tree(self) -> list[int]:
        pids = process_tree(self.pid)
        if self.whole_tree:
            return pids
        return [p for p in pids if p == self.pid or p not in self.before]

    def __enter__(self) -> MemorySampler:
        self.shm_before = shm_names()
        self.before = set(process_tree(self.pid))
        self.start = sum(rss(p) for p in self.tree())
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()
        self.samples.append(sum(rss(p) for p in self.tree()))
        self.shm_after = shm_names()

    def use(self) -> MemoryUse:
        s = self.samples
        third = len(s) // 3
        # the middle third, not the first: the first holds the processes' start-up
        # Medians, not peaks: a leak moves the whole last third up, while one sample
        # taken with a few more frames in flight than usual is not growth.
        growth = (
            int(statistics.median(s[-third:]) - statistics.median(s[third:-third]))
            if third >= 2
            else None
        )
        return MemoryUse(
            peak=max(s) - self.start,
            growth=growth,
            shm_left=frozenset(self.shm_after - self.shm_before),
        )


# -- timing ----------------------------------------------------------------------------------------


@dataclass
class Result:
    row: Row
    seconds: list[float] = field(default_factory=list)  # whole run (throughput) or to the end
    first: list[float] = field(default_factory=list)  # start-up: to the first result
    memory: list[MemoryUse] = field(default_factory=list)
    error: str | None = None
    note: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.seconds)


Trial = Callable[[], tuple[float | None, float, list[Any], MemoryUse | None]]
"""One timed run: (seconds to the first output or None, seconds to the end, outputs, memory)."""


def stream_trial(stream: pp.Stream) -> Trial:
    """Start-up: seconds to the first output and to the end (everything ended)."""

    def trial() -> tuple[float | None, float, list[Any], MemoryUse | None]:
        gc.collect()
        t0 = time.perf_counter()
        out: list[Any] = []
        t1 = t0
        for x in stream():
            if not out:
                t1 = time.perf_counter()
            out.append(x)
        return t1 - t0, time.perf_counter() - t0, out, None

    return trial


def job_trial(job: Job, sample: bool, whole_tree: bool = False) -> Trial:
    """Throughput: the whole run, its memory sampled when ``sample`` (``MemorySampler``)."""

    def trial() -> tuple[float | None, float, list[Any], MemoryUse | None]:
        gc.collect()
        if not sample:
            t0 = time.perf_counter()
            out = job()
            return None, time.perf_counter() - t0, out, None
        with MemorySampler(whole_tree) as sampler:
            t0 = time.perf_counter()
            out = job()
            seconds = time.perf_counter() - t0
        return None, seconds, out, sampler.use()

    return trial


def collected(stream: pp.Stream) -> Job:
    return lambda: list(stream())


def measure_workload(
    w: Workload, trials: Sequence[tuple[Row, Trial]], repeat: int, log: bool
) -> list[Result]:
    """Round-robin over the rows ``repeat`` times; the loop (first) gives the reference."""
    results = [Result(row) for row, _ in trials]
    reference: list[Any] | None = None
    for r in range(repeat):
        done: list[str] = []
        for (row, trial), res in zip(trials, results):
            if res.error is not None or res.note is not None:
                continue
            try:
                first, seconds, out, mem = trial()
            except Exception as exc:
                res.error = f"raised {exc!r}"
                continue
            if reference is None:
                reference = out
            if out != reference:
                res.error = f"wrong output: {mismatch(out, reference)}"
                continue
            res.seconds.append(seconds)
            if first is not None:
                res.first.append(first)
            if mem is not None:
                res.memory.append(mem)
            if seconds > SLOW_S and r + 1 < repeat and len(res.seconds) == 1:
                res.note = (
                    f"{row.key} timed once: its first run took {seconds:.1f} s (> {SLOW_S:g} s)"
                )
            done.append(f"{row.key} {seconds:.3f}s")
        if log:
            print(f"  [{w.name}] round {r + 1}/{repeat}: {', '.join(done)}", file=sys.stderr)
    return results


# -- references measured in the same run -----------------------------------------------------------


def copyto_bytes_per_s(copies: int = 50) -> float:
    """A single-process ``np.copyto`` of one 1080p frame: bytes per second (median)."""
    import numpy as np

    src = np.full(FRAME_SHAPE, 7, dtype=np.uint8)
    dst = np.empty_like(src)
    took = []
    for _ in range(copies):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        took.append(time.perf_counter() - t0)
    return FRAME_BYTES / statistics.median(took)


def stage_call_seconds(fn: Fn, calls: int = 200) -> float:
    took = []
    for x in range(calls):
        t0 = time.perf_counter()
        fn(x)
        took.append(time.perf_counter() - t0)
    return statistics.median(took)


# -- the report ---------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms" if seconds >= 0.01 else f"{seconds * 1e3:.2f} ms"


def mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:+.0f}"


@dataclass(frozen=True)
class Check:
    label: str
    what: str
    shown: str
    ok: bool | None  # None: not measured

    def line(self) -> str:
        verdict = "not measured" if self.ok is None else "met" if self.ok else "MISSED"
        return f"  {self.label:<20} {self.what:<42} {self.shown:>10}  {verdict}"


class WorkloadReport:
    def __init__(self, w: Workload, results: Sequence[Result], copyto: float | None) -> None:
        self.w = w
        self.results = list(results)
        self.copyto = copyto
        self.by_key = {r.row.key: r for r in results}

    def median_s(self, key: str) -> float | None:
        r = self.by_key.get(key)
        return statistics.median(r.seconds) if r is not None and r.ok else None

    def rate(self, key: str) -> float | None:
        s = self.median_s(key)
        return None if s is None else self.w.n / s

    def vs(self, key: str, base: str) -> float | None:
        mine, theirs = self.rate(key), self.rate(base)
        return None if mine is None or theirs is None else mine / theirs

    def of_ideal(self, key: str) -> float | None:
        loop, mine = self.median_s("loop"), self.median_s(key)
        return None if loop is None or mine is None else loop / mine / 2

    def gbps(self, r: Result) -> float | None:
        x = self.rate(r.row.key)
        return None if x is None or not r.row.edges else x * FRAME_BYTES * r.row.edges / 1e9

    def baselines(self) -> list[str]:
        extra = {"trivial": ["mpq/64"], "frames": ["ray"]}.get(self.w.kind, [])
        return [b for b in ["loop", "mpq/1", *extra] if self.rate(b) is not None]

    def throughput_table(self) -> str:
        frames = self.w.kind == "frames"
        unit = "frames/s" if frames else "items/s"
        headers = [
            "implementation",
            f"{unit} median",
            "min-max",
            "s median",
            "runs",
            *(f"vs {b}" for b in self.baselines()),
        ]
        if self.w.kind in CPU_KINDS:
            headers.append("of ideal 2-core speed-up")
        if frames:
            headers += [
                "GB/s between processes",
                "of np.copyto",
                "peak RSS +MB",
                "RSS growth MB",
                "/dev/shm left",
            ]
        rows = []
        for r in self.results:
            if not r.ok:
                rows.append(
                    [r.row.label, "FAILED" if r.error else "-", *["-"] * (len(headers) - 2)]
                )
                continue
            rates = [self.w.n / s for s in r.seconds]
            cells = [
                r.row.label,
                rate(statistics.median(rates)),
                f"{rate(min(rates))}-{rate(max(rates))}",
                f"{statistics.median(r.seconds):.3f}",
                str(len(r.seconds)),
            ]
            for b in self.baselines():
                v = self.vs(r.row.key, b)
                cells.append("-" if v is None else ratio(v))
            if self.w.kind in CPU_KINDS:
                f = self.of_ideal(r.row.key)
                cells.append("-" if f is None else f"{f:.1%}")
            if frames:
                g = self.gbps(r)
                cells.append("-" if g is None else f"{g:.2f}")
                cells.append(
                    "-" if g is None or not self.copyto else f"{g * 1e9 / self.copyto:.1%}"
                )
                cells += self.memory_cells(r)
            rows.append(cells)
        return table(headers, rows)

    @staticmethod
    def memory_cells(r: Result) -> list[str]:
        """The worst over the runs: peak, growth, and /dev/shm entries left."""
        if not r.memory:
            return ["-", "-", "-"]
        growths = [m.growth for m in r.memory if m.growth is not None]
        return [
            mb(max(m.peak for m in r.memory)),
            mb(max(growths)) if growths else "-",
            str(max(len(m.shm_left) for m in r.memory)),
        ]

    def startup_table(self) -> str:
        headers = [
            "implementation",
            "first result median",
            "min-max",
            "total median",
            "min-max",
            "runs",
        ]
        rows = []
        for r in self.results:
            if not r.ok:
                rows.append([r.row.label, "FAILED" if r.error else "-", *["-"] * 4])
                continue
            rows.append(
                [
                    r.row.label,
                    ms(statistics.median(r.first)),
                    f"{ms(min(r.first))}-{ms(max(r.first))}",
                    ms(statistics.median(r.seconds)),
                    f"{ms(min(r.seconds))}-{ms(max(r.seconds))}",
                    str(len(r.seconds)),
                ]
            )
        return table(headers, rows)

    def checks(self) -> list[Check]:
        out: list[Check] = []
        for r in self.results:
            if not r.row.flowpipe:
                continue
            label = r.row.label
            if self.w.kind == "startup":
                for what, values, bound in (
                    ("first result within 0.5 s (median)", r.first, 0.5),
                    ("10 items end to end within 1 s (median)", r.seconds, 1.0),
                ):
                    if not r.ok:
                        out.append(Check(label, what, "n/a", None))
                        continue
                    v = statistics.median(values)
                    out.append(Check(label, what, ms(v), v <= bound))
                continue
            for what, value, bound, strict in self.ratio_targets(r.row.key):
                if value is None:
                    out.append(Check(label, what, "n/a", None))
                    continue
                shown = f"{value:.1%}" if "%" in what else ratio(value)
                out.append(Check(label, what, shown, value > bound if strict else value >= bound))
            if self.w.kind == "frames":
                out.append(self.no_growth(r))
        return out

    def ratio_targets(self, key: str) -> list[tuple[str, float | None, float, bool]]:
        """(description, measured value, bound, strictly ahead) for this scenario."""
        if self.w.kind == "trivial":
            targets: list[tuple[str, float | None, float, bool]] = [
                (">= 10x mpq/1", self.vs(key, "mpq/1"), 10.0, False),
                (">= 15x mpq/1 (issue 21)", self.vs(key, "mpq/1"), 15.0, False),
            ]
            for peer in ("pypeln/p", "mpipe", "ray.data", "mpire/p", "mp.Pool"):
                if peer in self.by_key:
                    targets.append((f"ahead of {peer}", self.vs(key, peer), 1.0, True))
            for peer in ("mpire/p", "ray.data"):  # issue 21
                if peer in self.by_key:
                    targets.append((f">= 2x {peer}", self.vs(key, peer), 2.0, False))
            return targets
        if self.w.kind in CPU_KINDS and key == "flowpipe/pf":
            return []  # shown to measure what fusing costly stages loses; no target
        if self.w.kind in CPU_KINDS:  # issue 21: 95%, and ahead of mpipe and the fused pool
            targets = [(">= 95% of ideal 2-core speed-up", self.of_ideal(key), 0.95, False)]
            for peer in ("mpipe", "mp.Pool", "spdl/p"):
                if peer in self.by_key:
                    targets.append((f"ahead of {peer}", self.vs(key, peer), 1.0, True))
            return targets
        if self.w.kind == "frames":
            targets = [(">= 5x mpq/1 frames/s", self.vs(key, "mpq/1"), 5.0, False)]
            if "ray" in self.by_key:
                targets.append((">= 1.5x ray frames/s", self.vs(key, "ray"), 1.5, False))
            return targets
        return []

    def no_growth(self, r: Result) -> Check:
        bound = GROWTH_FRAMES * FRAME_BYTES
        what = f"no growth: RSS +<= {GROWTH_FRAMES} frames, /dev/shm clean"
        growths = [m.growth for m in r.memory if m.growth is not None]
        if not r.ok or not growths:
            return Check(r.row.label, what, "n/a", None)
        worst, left = max(growths), max(len(m.shm_left) for m in r.memory)
        return Check(r.row.label, what, f"{mb(worst)} MB, {left}", worst <= bound and left == 0)

    def render(self, head: Sequence[str]) -> str:
        parts = [f"## {self.w.name}: {self.w.summary}", "", *head, ""]
        parts.append(self.startup_table() if self.w.kind == "startup" else self.throughput_table())
        checks = self.checks()
        if checks:
            parts += ["", "targets (from the issue):", *(c.line() for c in checks)]
        return "\n".join(parts)


# -- the family's run --------------------------------------------------------------------------------


def session_helpers() -> dict[int, str]:
    """Helper processes a library keeps for the whole session, ended at exit (not leaks).

    The ``multiprocessing`` resource tracker (started by the first spawn-context
    queue or pool), pypeln's ``multiprocessing.Manager`` (pypeln starts one
    on first use and keeps it in a module global) and flowpipe's fork server
    (the workers it forks are checked like any child).
    """
    import multiprocessing

    helpers = {
        p.pid: f"{p.name} (pypeln's manager)"
        for p in multiprocessing.active_children()  # also reaps finished children
        if p.pid is not None and p.name.startswith("SyncManager")
    }
    for pid in children(os.getpid()):
        if "multiprocessing.resource_tracker" in state_and_cmd(pid)[1]:
            helpers[pid] = "multiprocessing's resource tracker"
    server = fork_server_pid()
    if server is not None:
        helpers[server] = "flowpipe's fork server"
    return helpers


def fork_server_pid() -> int | None:
    """flowpipe's fork server, if one runs: kept for the session (its workers are not)."""
    try:
        from flowpipe._runtime.backends.process import forkserver
    except ImportError:  # a revision from before the runtime core (benchmarks compare both)
        from flowpipe._runtime import forkserver  # type: ignore[attr-defined,no-redef]

    return forkserver.server_pid()


def leftover_processes(before: set[int], ray_used: bool) -> tuple[list[str], list[str]]:
    """Children of this process started since ``before`` that still run (or wait to be reaped),
    and the session helpers among them (``session_helpers``), which are not counted.

    With Ray in use its own processes (raylet, GCS, ... which Ray starts and
    keeps for the whole session) are not counted either.
    """
    deadline = time.monotonic() + ORPHAN_GRACE_S
    while True:
        helpers = session_helpers()
        left, kept = [], []
        server = fork_server_pid()
        forked = set(children(server)) if server is not None else set()  # flowpipe's workers
        for pid in [*children(os.getpid()), *sorted(forked)]:
            if pid in before:
                continue
            state, cmd = state_and_cmd(pid)
            if state == "gone" or (ray_used and "ray" in cmd):
                continue
            if pid in helpers:
                kept.append(f"{pid} {helpers[pid]}")
                continue
            left.append(f"{pid} ({state}) {cmd[:80]}")
        if not left or time.monotonic() > deadline:
            return left, kept
        time.sleep(0.1)


def header_lines(w: Workload, repeat: int, extra: Sequence[str]) -> list[str]:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [f"repeats: {repeat}; load average (1, 5, 15 min) at the start: {load}"]
    if w.kind == "startup":
        lines.append(
            "first result = from the call (processes started in it) to the first output; "
            "total = to the last output, every process ended"
        )
    else:
        lines.append(
            "throughput = items through every stage per second, wall time of the whole run "
            "(processes started and ended included); ratios compare medians"
        )
    return lines + list(extra)


def run_workload(
    w: Workload, keys: Sequence[str] | None, repeat: int, log: bool
) -> tuple[str, bool]:
    """Prepare, time and report one scenario; the Markdown, and whether anything failed."""
    rows = [r for r in ROWS if w.kind in r.kinds and (r.key == "loop" or not keys or r.key in keys)]
    cleanups: Cleanups = []
    trials: list[tuple[Row, Trial]] = []
    notes: list[str] = []
    for row in rows:
        try:
            stream = row.prepare(w, cleanups)
        except ImportError as exc:
            needs = "ray" if row.ray else "benchmarks"
            notes.append(f"skipped {row.key}: {exc} (install it: pip install -e '.[{needs}]')")
            continue
        if w.kind == "startup":
            trials.append((row, stream_trial(stream)))
        else:
            job = row.collect(w) if row.collect is not None else collected(stream)
            trials.append((row, job_trial(job, sample=w.kind == "frames", whole_tree=row.ray)))
    extra: list[str] = []
    copyto = None
    if w.kind in CPU_KINDS:
        call = stage_call_seconds(w.stages[0])
        extra.append(
            f"one stage call takes {call * 1e3:.2f} ms here (median of 200); "
            "of ideal 2-core speed-up = (loop time / row time) / 2"
        )
    if w.kind == "frames":
        copyto = copyto_bytes_per_s()
        extra.append(
            f"np.copyto of one 1080p frame in one process: {copyto / 1e9:.1f} GB/s (median of 50); "
            f"GB/s between processes = frames/s x {FRAME_BYTES:_} B x {FRAME_EDGES} edges "
            "(rows that run the stages fused, or in one process, move none)"
        )
        extra.append(
            f"memory, the worst run: peak RSS of this process and the processes the run started "
            "(Ray rows: the whole tree) above its start, its growth "
            f"(median of the last third of the {SAMPLE_S * 1e3:g} ms samples - median of the middle third), "
            "and entries left in /dev/shm"
        )
    head = header_lines(w, repeat, extra)
    before = set(children(os.getpid()))
    try:
        results = measure_workload(w, trials, repeat, log)
    finally:
        for cleanup in cleanups:
            cleanup()
    lines = [WorkloadReport(w, results, copyto).render(head)]
    failed = False
    for r in results:
        if r.note is not None:
            lines.append(f"note: {r.note}")
        left_in_shm = sorted(set().union(*(m.shm_left for m in r.memory)))
        if left_in_shm:
            shown = ", ".join(left_in_shm[:5]) + (", ..." if len(left_in_shm) > 5 else "")
            lines.append(f"note: {r.row.key} left in /dev/shm (or another process made): {shown}")
    lines += [f"note: {n}" for n in notes]
    for r in results:
        if r.error is not None:
            failed = True
            lines.append(f"error: {r.row.key} in {w.name}: {r.error}")
    left, kept = leftover_processes(before, ray_used=any(row.ray for row, _ in trials))
    if kept:
        lines.append(f"note: kept for the session by a library (ended at exit): {'; '.join(kept)}")
    if left:
        failed = True
        lines.append(
            f"error: {len(left)} process(es) left running after {w.name}: {'; '.join(left)}"
        )
    return "\n".join(lines), failed


def versions() -> str:
    return ", ".join(
        f"{p} {version_of(p)}"
        for p in ("flowpipe", "pypeln", "mpipe", "mpire", "spdl", "ray", "numpy")
    )


def run_family(
    names: Sequence[str],
    quick: bool,
    repeat: int | None,
    keys: Sequence[str] | None,
    log: bool = True,
) -> bool:
    """Run the named process scenarios, printing each report as it is done; True if one failed."""
    workloads = select_workloads(build_workloads(quick), names)
    failed = False
    print(f"\nprocess scenarios: {versions()}", flush=True)
    for w in workloads:
        n = repeat
        if n is None:
            n = 1 if quick else STARTUP_REPEAT if w.kind == "startup" else DEFAULT_REPEAT
        report, bad = run_workload(w, keys, n, log)
        print()
        print(report, flush=True)
        failed = failed or bad
    return failed
