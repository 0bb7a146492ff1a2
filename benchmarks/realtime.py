"""The real-time scenario: a 30 fps camera, a 60 ms stage and a 5 ms stage (issue 5).

Not a throughput measurement: a live source produces frames at its own pace
whatever the pipeline does, and what matters is how *fresh* the outputs are.
For each implementation one run of ``seconds`` seconds reports:

- frames captured and output, the share dropped (captured - output), and, for
  flowpipe, the drops its statistics counted (they must add up);
- output fps: outputs / (last output time - first capture time);
- the age of each output, ``time.perf_counter()`` when the consumer got it
  minus the frame's capture time: median, p99 and maximum, and the p99 of the
  outputs of the first and of the last sixth of the run (10 s of a 60 s run),
  which shows whether the age grows.

The camera is a generator: frame ``i`` is due ``i / 30`` s after the first one
(it sleeps until then, so it keeps 30 fps instead of drifting), is a small
NumPy image (120x160x3), and is stamped with ``time.perf_counter()`` when it
is yielded. ``detect`` sleeps 60 ms (after a NumPy mean of the image), then
``track`` sleeps 5 ms; both release the GIL, so threads run them in parallel.

Rows (each one run, one after the other):

- ``flowpipe/block``: ``camera | detect | track`` with the defaults (lossless;
  the camera's frames queue up in front of ``detect``, which is half as fast);
  the run drains every frame after the camera stops.
- ``flowpipe/drop``: the same with ``buffer=1, overflow="drop_oldest"`` on
  both stages: ``detect`` always takes the newest frame.
- ``flowpipe/push``: the same stages in push mode, ``pipe.start()``; the
  camera runs in the caller's thread and calls ``put``.
- ``flowpipe/compat``: ParallelPipe's API on flowpipe
  (``flowpipe.compat.parallelpipe``), ``buffer_size=1``, the last stage a sink
  that records each output.
- ``parallelpipe``: PyParallelPipe 1.0.2 itself, threads (``multiprocess=False``),
  ``buffer_size=1``, the same sink. Its stage threads never return from a wait
  for input, so ``setstop()`` alone does not end them: after it, one ``None``
  is put to wake each stage once (the stages pass it on; the sink ignores it).
"""

from __future__ import annotations

import importlib
import math
import os
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .report import table

FPS = 30
DETECT_S = 0.060
TRACK_S = 0.005
FRAME_SHAPE = (120, 160, 3)
AGE_BOUND_S = 2 * (DETECT_S + TRACK_S)  # the target for the p99 age: 130 ms
GROWTH_LIMIT = 1.2  # "no growth": p99 of the last window at most 1.2 x that of the first
DEFAULT_SECONDS = 60.0
QUICK_SECONDS = 4.0


@dataclass(frozen=True)
class Frame:
    index: int
    captured: float  # time.perf_counter() when the camera yielded it
    image: Any  # a NumPy array


class Camera:
    """A 30 fps source: iterate it (once) to get ``frames`` frames, one every 1/30 s."""

    def __init__(self, seconds: float, fps: int = FPS) -> None:
        self.fps = fps
        self.frames = max(1, round(seconds * fps))
        self.produced = 0

    def __iter__(self) -> Iterator[Frame]:
        import numpy as np

        start = time.perf_counter()
        for i in range(self.frames):
            delay = start + i / self.fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            image = np.full(FRAME_SHAPE, i % 256, dtype=np.uint8)
            self.produced += 1
            yield Frame(i, time.perf_counter(), image)


def detect(frame: Frame) -> Frame:
    """The slow stage: 60 ms."""
    float(frame.image.mean())
    time.sleep(DETECT_S)
    return frame


def track(frame: Frame) -> Frame:
    """The fast stage: 5 ms."""
    time.sleep(TRACK_S)
    return frame


class Trace:
    """What the consumer saw: (output time, age, frame index) per output (one thread records)."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, float, int]] = []

    def record(self, frame: Frame) -> None:
        now = time.perf_counter()
        self.seen.append((now, now - frame.captured, frame.index))


@dataclass
class Outcome:
    """One row's run: the camera, the trace, flowpipe's drop count (None for others)."""

    camera: Camera
    trace: Trace
    first_capture: float
    stats_dropped: int | None = None


Runner = Callable[[float], Outcome]


def _dropped_in(stats: Any) -> int:
    return sum(s.dropped for s in stats.stages)


def run_flowpipe(seconds: float, drop: bool) -> Outcome:
    from flowpipe import stage

    if drop:
        pipe = stage(detect, buffer=1, overflow="drop_oldest") | stage(
            track, buffer=1, overflow="drop_oldest"
        )
    else:
        pipe = stage(detect) | stage(track)
    camera, trace = Camera(seconds), Trace()
    start = time.perf_counter()
    with pipe.iter(camera) as run:
        for frame in run:
            trace.record(frame)
    return Outcome(camera, trace, start, _dropped_in(run.stats))


def run_flowpipe_block(seconds: float) -> Outcome:
    return run_flowpipe(seconds, drop=False)


def run_flowpipe_drop(seconds: float) -> Outcome:
    return run_flowpipe(seconds, drop=True)


def run_flowpipe_push(seconds: float) -> Outcome:
    from flowpipe import stage

    pipe = stage(detect, buffer=1, overflow="drop_oldest") | stage(
        track, buffer=1, overflow="drop_oldest"
    )
    camera, trace = Camera(seconds), Trace()
    with pipe.start() as live:

        def read() -> None:
            for frame in live:
                trace.record(frame)

        reader = threading.Thread(target=read, name="realtime-reader")
        reader.start()
        start = time.perf_counter()
        try:
            for frame in camera:
                live.put(frame)  # never waits: a full buffer drops its oldest frame
            live.close()  # drain what was kept
        finally:
            reader.join()
        stats = live.stats
    return Outcome(camera, trace, start, _dropped_in(stats))


def run_flowpipe_compat(seconds: float) -> Outcome:
    from flowpipe.compat.parallelpipe import Pipeline, Stage

    trace = Trace()

    class Detect(Stage):
        def stage_run(self, x: Any) -> Any:
            return detect(x)

    class Track(Stage):
        def stage_run(self, x: Any) -> Any:
            return track(x)

    class Sink(Stage):
        def stage_run(self, x: Any) -> Any:
            trace.record(x)
            return None

    camera = Camera(seconds)
    pipe = Pipeline(stages=[Detect(), Track()], end_stage=Sink(), buffer_size=1)
    pipe.start()
    start = time.perf_counter()
    for frame in camera:
        pipe.put(frame)
    pipe.setstop()  # finishes what was put, then stops
    return Outcome(camera, trace, start, _dropped_in(pipe.stats))


def run_parallelpipe(seconds: float) -> Outcome:
    pp: Any = importlib.import_module("ParallelPipe")  # PyParallelPipe ships no type information
    trace = Trace()

    class Detect(pp.Stage):  # type: ignore[misc]
        def stage_run(self, x: Any) -> Any:
            return None if x is None else detect(x)

    class Track(pp.Stage):  # type: ignore[misc]
        def stage_run(self, x: Any) -> Any:
            return None if x is None else track(x)

    class Sink(pp.Stage):  # type: ignore[misc]
        def stage_run(self, x: Any) -> Any:
            if x is not None:
                trace.record(x)

    camera = Camera(seconds)
    pipe = pp.Pipeline(stages=[Detect(), Track(), Sink()], buffer_size=1, multiprocess=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # its start() calls Thread.setDaemon
        pipe.start()
    start = time.perf_counter()
    for frame in camera:
        pipe.put(frame)
    # No drain in ParallelPipe: wait for the last frame (the newest, so never skipped) to come out.
    deadline = time.perf_counter() + 2.0
    while time.perf_counter() < deadline and not (
        trace.seen and trace.seen[-1][2] == camera.frames - 1
    ):
        time.sleep(0.005)
    pipe.setstop()
    pipe.put(None)  # wakes each stage thread once, so that it sees the stop flag and returns
    for thread in pipe.stage_process:
        thread.join(timeout=2.0)
    return Outcome(camera, trace, start, None)


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    runner: Runner
    drop: bool  # the drop_oldest targets apply
    flowpipe: bool


ROWS = (
    Row(
        "flowpipe/block",
        'flowpipe, overflow="block" (default buffer)',
        run_flowpipe_block,
        False,
        True,
    ),
    Row("flowpipe/drop", 'flowpipe, "drop_oldest", buffer=1', run_flowpipe_drop, True, True),
    Row(
        "flowpipe/push",
        'flowpipe push mode, "drop_oldest", buffer=1',
        run_flowpipe_push,
        True,
        True,
    ),
    Row(
        "flowpipe/compat",
        "flowpipe.compat.parallelpipe, buffer_size=1",
        run_flowpipe_compat,
        True,
        True,
    ),
    Row(
        "parallelpipe",
        "ParallelPipe 1.0.2 (threads), buffer_size=1",
        run_parallelpipe,
        False,
        False,
    ),
)


def p99(xs: Sequence[float]) -> float:
    """The 99th percentile by nearest rank (NaN for no values)."""
    ordered = sorted(xs)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


@dataclass
class Result:
    row: Row
    seconds: float
    outcome: Outcome | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome is not None and bool(self.outcome.trace.seen)

    def _seen(self) -> list[tuple[float, float, int]]:
        assert self.outcome is not None
        return self.outcome.trace.seen

    @property
    def captured(self) -> int:
        return 0 if self.outcome is None else self.outcome.camera.produced

    @property
    def out(self) -> int:
        return 0 if self.outcome is None else len(self.outcome.trace.seen)

    @property
    def dropped(self) -> int:
        return self.captured - self.out

    @property
    def fps(self) -> float:
        assert self.outcome is not None
        return self.out / (self._seen()[-1][0] - self.outcome.first_capture)

    def ages(self, window: str = "all") -> list[float]:
        seen = self._seen()
        width = self.seconds / 6
        if window == "first":
            assert self.outcome is not None
            return [a for t, a, _ in seen if t < self.outcome.first_capture + width]
        if window == "last":
            return [a for t, a, _ in seen if t > seen[-1][0] - width]
        return [a for _, a, _ in seen]

    @property
    def growth(self) -> float:
        return p99(self.ages("last")) / p99(self.ages("first"))

    def check(self) -> None:
        """Outputs in capture order; for flowpipe, every frame output or counted as dropped."""
        if not self.ok:
            self.error = self.error or "no output"
            return
        indices = [i for _, _, i in self._seen()]
        if indices != sorted(set(indices)):
            self.error = "outputs out of order or repeated"
        assert self.outcome is not None
        counted = self.outcome.stats_dropped
        if counted is not None and counted != self.dropped:
            self.error = f"{self.dropped} frames missing but the stats counted {counted} drops"


def run_row(row: Row, seconds: float) -> Result:
    result = Result(row, seconds)
    try:
        result.outcome = row.runner(seconds)
    except ImportError as exc:
        result.notes.append(f"{row.key} skipped: {exc}")
        return result
    except Exception as exc:
        result.error = f"raised {exc!r}"
        return result
    result.check()
    return result


def age(seconds: float) -> str:
    """An age, short: 82 ms, 4448 ms, 24.7 s."""
    return f"{seconds * 1e3:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def render(results: Sequence[Result], seconds: float) -> str:
    window = seconds / 6
    headers = [
        "implementation",
        "frames in",
        "out",
        "dropped",
        "output fps",
        "age median",
        "age p99",
        f"p99 first {window:.3g} s",
        f"p99 last {window:.3g} s",
        "max age",
    ]
    rows = []
    for r in results:
        if not r.ok or r.error is not None:
            why = "FAILED" if r.error is not None else "skipped"
            rows.append([r.row.label, why, *(["-"] * (len(headers) - 2))])
            continue
        ages = r.ages()
        rows.append(
            [
                r.row.label,
                str(r.captured),
                str(r.out),
                f"{r.dropped} ({r.dropped / r.captured:.0%})",
                f"{r.fps:.1f}",
                age(statistics.median(ages)),
                age(p99(ages)),
                age(p99(r.ages("first"))),
                age(p99(r.ages("last"))),
                age(max(ages)),
            ]
        )
    return table(headers, rows)


def render_targets(results: Sequence[Result]) -> list[str]:
    lines = []
    for r in results:
        if not r.row.flowpipe or not r.ok or r.error is not None:
            continue
        checks: list[tuple[str, str, bool]] = []
        if r.row.drop:
            worst = p99(r.ages())
            checks.append(
                (
                    f"p99 age <= {AGE_BOUND_S * 1e3:.0f} ms",
                    f"{worst * 1e3:.0f} ms",
                    worst <= AGE_BOUND_S,
                )
            )
            checks.append(
                (
                    f"no growth: p99 last <= {GROWTH_LIMIT:g} x first",
                    f"{r.growth:.2f}x",
                    r.growth <= GROWTH_LIMIT,
                )
            )
        else:
            counted = r.outcome.stats_dropped if r.outcome is not None else None
            checks.append(("zero drops", f"{r.dropped} ({counted} counted)", r.dropped == 0))
        for what, shown, ok in checks:
            lines.append(f"  {r.row.label:<45} {what:<34} {shown:>14}  {'met' if ok else 'MISSED'}")
    return lines


def summary(seconds: float) -> str:
    return (
        f"## realtime: a {FPS} fps camera for {seconds:g} s, detect {DETECT_S * 1e3:g} ms | "
        f"track {TRACK_S * 1e3:g} ms (one worker each)"
    )


def run_all(seconds: float, log: bool = True) -> tuple[str, bool]:
    """Run every row once; the Markdown report, and whether a row failed."""
    from .peers import version_of

    load_before = os.getloadavg()
    results = []
    for row in ROWS:
        if log:
            print(f"realtime: {row.key} for {seconds:g} s ...", file=sys.stderr, flush=True)
        results.append(run_row(row, seconds))
    load_after = os.getloadavg()
    lines = [
        summary(seconds),
        "",
        f"PyParallelPipe {version_of('PyParallelPipe')}; age = output time - capture time; "
        f"output fps = outputs / (last output - first capture); dropped = captured - output",
        "load average (1, 5, 15 min) before: "
        + ", ".join(f"{x:.2f}" for x in load_before)
        + "; after: "
        + ", ".join(f"{x:.2f}" for x in load_after),
        "",
        render(results, seconds),
    ]
    targets = render_targets(results)
    if targets:
        lines += ["", "targets (from the issue):", *targets]
    failed = False
    for r in results:
        lines += [f"note: {n}" for n in r.notes]
        if r.error is not None:
            failed = True
            lines.append(f"error: {r.row.key} in realtime: {r.error}")
    return "\n".join(lines), failed
