"""The workloads: four stages over N items, and the targets the issue sets for them.

Every scenario but two (``fanout`` and ``batch``, at the end) is a chain of
exactly four one-to-one stage functions. Each implementation (see
``peers.py``) turns ``range(n)`` into the list ``[d(c(b(a(x)))) for x in
range(n)]``, in input order.

- ``trivial``: every stage is ``x + 1``, one worker per stage. The work is
  negligible, so this measures the per-item overhead of moving items between
  stages.
- ``sleep-w1`` / ``sleep-w4``: every stage sleeps 2 ms (I/O stand-in that
  releases the GIL) and returns its input, with 1 or 4 workers per stage. This
  measures how close an implementation gets to the ideal throughput of a
  pipeline whose stages are all equally slow.
- ``cpu``: every stage spins in pure Python (holds the GIL) for about 0.25 ms,
  one worker per stage. Threads cannot beat the loop here; this compares
  flowpipe's process and Ray backends with process pools, pypeln's process
  stages, Ray actors by hand and Ray Data.
- ``frames``: the first stage makes a 1080p RGB frame (6 MB) from its number,
  the next two brighten it (NumPy), the last reduces it to a checksum: three
  edges that carry frames, which is what moving large items between workers
  costs.

Two scenarios have another shape (``Scenario.shape``), timed only by the rows
that can express it (the plain loop, flowpipe, SPDL):

- ``fanout``: ``a | (b, c) | d``, every stage a 2 ms sleep on 4 workers; ``d``
  gets each item's pair ``(b(x), c(x))``. Three stages deep, so the ideal is
  ``(N / 4 + 2) x 2 ms``.
- ``batch``: ``prep`` (a 1 ms sleep, 4 workers) then a ``model`` called on
  batches of 32 (a 10 ms sleep per call, whatever its size: a GPU-like batch
  call) then a cheap ``post`` per item. The ideal is the **model bound**:
  ``ceil(N / 32)`` calls of 10 ms.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Fn = Callable[[Any], Any]
Stages = tuple[Fn, ...]

TRIVIAL_N = 200_000
TRIVIAL_N_QUICK = 5_000
SLEEP_N = 1_000
SLEEP_N_QUICK = 40
SLEEP_SECONDS = 0.002
CPU_N = 2_000
CPU_N_QUICK = 100
SPIN = 20_000  # loop turns per stage call: about 0.25 ms of pure Python
FRAMES_N = 120
FRAMES_N_QUICK = 8
FRAME_SHAPE = (1080, 1920, 3)
FANOUT_WORKERS = 4
BATCH = 32
BATCH_N = 1_024
BATCH_N_QUICK = 128
PREP_SECONDS = 0.001
MODEL_SECONDS = 0.010  # one model call, whatever the batch's size
PREP_WORKERS = 4


def inc1(x: int) -> int:
    return x + 1


def inc2(x: int) -> int:
    return x + 1


def inc3(x: int) -> int:
    return x + 1


def inc4(x: int) -> int:
    return x + 1


def nap1(x: int) -> int:
    time.sleep(SLEEP_SECONDS)
    return x


def nap2(x: int) -> int:
    time.sleep(SLEEP_SECONDS)
    return x


def nap3(x: int) -> int:
    time.sleep(SLEEP_SECONDS)
    return x


def nap4(x: int) -> int:
    time.sleep(SLEEP_SECONDS)
    return x


def spin1(x: int) -> int:
    for _ in range(SPIN):
        pass
    return x + 1


def spin2(x: int) -> int:
    for _ in range(SPIN):
        pass
    return x + 1


def spin3(x: int) -> int:
    for _ in range(SPIN):
        pass
    return x + 1


def spin4(x: int) -> int:
    for _ in range(SPIN):
        pass
    return x + 1


def nap_join(pair: tuple[int, int]) -> int:
    time.sleep(SLEEP_SECONDS)
    return pair[0] + pair[1]


def prep(x: int) -> int:
    time.sleep(PREP_SECONDS)
    return x + 1


def model(batch: list[int]) -> list[int]:
    time.sleep(MODEL_SECONDS)
    return [x * 2 for x in batch]


def post(x: int) -> int:
    return x + 1


def make_frame(x: int) -> Any:
    import numpy as np

    return np.full(FRAME_SHAPE, x % 251, dtype=np.uint8)


def brighten(frame: Any) -> Any:
    return frame + 1


def brighten_more(frame: Any) -> Any:
    return frame + 2


def checksum(frame: Any) -> int:
    return int(frame[0, 0, 0]) + int(frame[-1, -1, -1])


@dataclass(frozen=True)
class Target:
    """One goal from the issue: ``peer`` at least ``ratio`` times ``baseline``.

    ``baseline`` is a peer key, ``"ideal"`` for the fraction of ideal
    throughput, or ``"ideal/real"`` for the same with the ideal computed from
    what ``time.sleep`` really takes here. ``strict`` means strictly ahead (ratio > 1, "ahead of").
    """

    baseline: str
    ratio: float
    strict: bool = False
    peer: str | None = None  # only this flowpipe row (None: every flowpipe row)
    # A cost target: ``peer`` is ``baseline`` plus what this names (e.g. "stats"),
    # and its time may be at most ``1 / ratio`` times the baseline's.
    overhead: str | None = None

    def describe(self) -> str:
        if self.overhead is not None:
            return f"{self.overhead} overhead < {1 / self.ratio - 1:.0%}"
        if self.baseline == "ideal":
            return f">= {self.ratio:.0%} of ideal"
        if self.baseline == "ideal/real":
            return f">= {self.ratio:.0%} of ideal (real sleep)"
        if self.strict:
            return f"ahead of {self.baseline}"
        return f">= {self.ratio:g}x {self.baseline}"


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    n: int
    stages: Stages
    workers: int
    sleep_s: float = 0.0  # per item per stage; 0: no ideal time is defined
    targets: tuple[Target, ...] = field(default=())
    cpu: bool = False  # stages hold the GIL: process-based peers are timed too
    # "chain": four one-to-one stages; "fanout": a | (b, c) | d; "batch": prep, a
    # batch stage of ``batch`` items (``sleep_s`` a call), post.
    shape: str = "chain"
    batch: int = 0

    @property
    def threads(self) -> int:
        """Threads a pipeline of this scenario uses for its stages (4 x workers)."""
        return len(self.stages) * self.workers

    def ideal_seconds(self, stage_s: float | None = None) -> float | None:
        """Ideal wall time: N items at ``workers`` per ``sleep_s``, plus filling the pipe.

        ``stage_s`` replaces the nominal ``sleep_s`` by what one stage call really
        takes here (``time.sleep`` overshoots by the timer slack).

        The first item leaves after four stage times; from then on one item
        leaves every ``sleep_s / workers`` seconds: ``n * sleep_s / workers``
        for the stream plus ``3 * sleep_s`` to fill the pipe.
        """
        if not self.sleep_s:
            return None
        if self.batch:  # the model bound; the real sleep is measured for 2 ms stages only
            return None if stage_s is not None else -(-self.n // self.batch) * self.sleep_s
        per_item = self.sleep_s if stage_s is None else stage_s
        return (self.n / self.workers + self.depth - 1) * per_item

    @property
    def depth(self) -> int:
        """Stages on the path of one item (a fan-out's branches are one level)."""
        return len(self.stages) - 1 if self.shape == "fanout" else len(self.stages)

    def ideal_formula(self) -> str:
        if self.batch:
            return f"ceil({self.n} / {self.batch}) model calls x {self.sleep_s * 1e3:g} ms"
        return f"({self.n} / {self.workers} + {self.depth - 1} fill) x {self.sleep_s * 1e3:g} ms"


STATS_OVERHEAD = 0.05  # collecting stats may cost at most 5% of the run's time (issue 6)
TRIVIAL_TARGETS = (
    Target("queue/1", 10.0),
    Target("loop", 0.2),
    Target("pypeln", 4.0),
    Target("mpire", 1.0, strict=True),
    # time with stats <= 1.05 x time without: throughput ratio >= 1 / 1.05
    Target("flowpipe/nostats", 1 / (1 + STATS_OVERHEAD), peer="flowpipe", overhead="stats"),
)
SLEEP_TARGETS = (Target("ideal", 0.95), Target("ideal/real", 0.95))
# issue 21: 4 x sleep on 4 workers >= 95% of ideal and ahead of the hand-written chain
SLEEP_W4_TARGETS = (*SLEEP_TARGETS, Target("queue/1", 1.0, strict=True))
SPDL_TARGETS = (Target("spdl", 1.0, strict=True),)  # issue 21: ahead of SPDL
RAY_TARGETS = (
    Target("ray", 0.9, peer="flowpipe/ray"),
)  # flowpipe on Ray within 10% of Ray by hand (issue 7)


def build_scenarios(quick: bool) -> list[Scenario]:
    trivial_n = TRIVIAL_N_QUICK if quick else TRIVIAL_N
    sleep_n = SLEEP_N_QUICK if quick else SLEEP_N
    cpu_n = CPU_N_QUICK if quick else CPU_N
    frames_n = FRAMES_N_QUICK if quick else FRAMES_N
    batch_n = BATCH_N_QUICK if quick else BATCH_N
    naps: Stages = (nap1, nap2, nap3, nap4)
    return [
        Scenario(
            "trivial",
            f"4 stages x+1, {trivial_n:_} ints, 1 worker each (per-item overhead)",
            trivial_n,
            (inc1, inc2, inc3, inc4),
            workers=1,
            targets=TRIVIAL_TARGETS,
        ),
        *(
            Scenario(
                f"sleep-w{w}",
                f"4 stages sleep({SLEEP_SECONDS}), {sleep_n:_} items, {w} worker(s) each",
                sleep_n,
                naps,
                workers=w,
                sleep_s=SLEEP_SECONDS,
                targets=SLEEP_W4_TARGETS if w == 4 else SLEEP_TARGETS,
            )
            for w in (1, 4)
        ),
        Scenario(
            "fanout",
            f"a | (b, c) | d, each sleep({SLEEP_SECONDS}), {sleep_n:_} items, "
            f"{FANOUT_WORKERS} workers each",
            sleep_n,
            (nap1, nap2, nap3, nap_join),
            workers=FANOUT_WORKERS,
            sleep_s=SLEEP_SECONDS,
            targets=SPDL_TARGETS,
            shape="fanout",
        ),
        Scenario(
            "batch",
            f"prep (sleep 1 ms, {PREP_WORKERS} workers), model on batches of {BATCH} "
            f"(sleep {MODEL_SECONDS * 1e3:g} ms a call), post: {batch_n:_} items",
            batch_n,
            (prep, model, post),
            workers=PREP_WORKERS,
            sleep_s=MODEL_SECONDS,
            targets=SPDL_TARGETS,
            shape="batch",
            batch=BATCH,
        ),
        Scenario(
            "frames",
            f"make a 1080p frame, brighten it twice, checksum it: {frames_n} frames, 1 worker each",
            frames_n,
            (make_frame, brighten, brighten_more, checksum),
            workers=1,
            cpu=True,
            targets=RAY_TARGETS,
        ),
        Scenario(
            "cpu",
            f"4 stages of pure-Python work (~0.25 ms each), {cpu_n:_} items, 1 worker each",
            cpu_n,
            (spin1, spin2, spin3, spin4),
            workers=1,
            cpu=True,
            targets=RAY_TARGETS,
        ),
    ]


def select(scenarios: list[Scenario], names: list[str] | None) -> list[Scenario]:
    """Scenarios named exactly, or by family (``sleep`` picks ``sleep-w1`` and ``sleep-w4``)."""
    if not names:
        return scenarios
    known = {s.name for s in scenarios} | {s.name.split("-")[0] for s in scenarios}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(
            f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(sorted(known))}"
        )
    return [s for s in scenarios if s.name in names or s.name.split("-")[0] in names]
