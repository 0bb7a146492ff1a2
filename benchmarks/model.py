"""The real-model scenario (``model``): capture -> a pose model on 2 workers -> track -> classify.

The pipeline of ``examples/behaviour_recognition.py`` over 4 synthetic
cameras x 85 frames (340 frames, 320x320), with the real model, MediaPipe
Pose, when ``mediapipe`` is importable (the ``pose`` extra), and otherwise its
NumPy stand-in sized to about 25 ms of native, GIL-releasing work per call
(``StandInPose.sized(25)``). Runs only when named: ``python -m benchmarks
--scenario model``.

Rows, each giving the same results as the loop (compared by camera and frame:
track ids, boxes, actions), or marked FAILED:

- ``loop``: the example's ``sequential``: each frame captured, posed,
  tracked and classified in turn, one model.
- ``flowpipe/thread``: ``build_pipeline(load)`` over ``flowpipe.sources`` of
  the cameras, every stage on threads (``DetectPose`` x2, ``TrackPeople`` x2
  with ``key=`` the camera).
- ``flowpipe/model-process``: the same with the model stage on 2 worker
  processes (``model_backend="process"``), the rest on threads.
- ``mpire/thread`` and ``mpire/process``: the way an mpire user writes it: a
  ``WorkerPool(n_jobs=2)`` of threads or of spawned processes whose workers
  load the model once (``use_worker_state``, ``worker_init``) and ``imap`` it
  over the captured frames, in order; the caller tracks and classifies each
  result as it comes back. Not mpire's default start method, ``fork``: a
  worker forked from a parent that has run MediaPipe died at once
  ("malloc(): unaligned tcache chunk detected"), as forking a process that
  runs threads may.

Every row loads its models inside its timed run (the loop one, the others
two), as a script does. Rows are timed round-robin, ``repeat`` rounds.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from .report import ratio, table

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "behaviour_recognition.py"
CAMERAS, FRAMES = 4, 85  # 340 frames
QUICK_CAMERAS, QUICK_FRAMES = 2, 12
WORKERS = 2
STAND_IN_MS = 25.0
DEFAULT_REPEAT = 3

Job = Callable[[], dict[Any, Any]]


def load_example() -> ModuleType:
    """The example as a module, importable by name in spawned processes (mpire's).

    flowpipe's workers get its classes by value, as from a script.
    """
    import cloudpickle

    if str(SCRIPT.parent) not in sys.path:
        sys.path.append(str(SCRIPT.parent))  # a spawned child inherits sys.path
    module = importlib.import_module(SCRIPT.stem)
    cloudpickle.register_pickle_by_value(module)
    return module


def choose_model(ex: ModuleType) -> tuple[str, Any]:
    if importlib.util.find_spec("mediapipe") is not None:
        return "MediaPipe Pose (pose_landmark_full), the real model", ex.MediaPipePose
    return f"stand-in, ~{STAND_IN_MS:g} ms of native work per call", ex.StandInPose.sized(
        STAND_IN_MS
    )


def frames_in_loop_order(ex: ModuleType, cameras: Sequence[Any], frames: int) -> Iterator[Any]:
    for index in range(frames):
        for camera in cameras:
            yield ex.capture(ex.Tagged(camera.name, index, ex.shoot(camera, index, frames)))


# mpire's worker functions: the model lives in each worker's state, loaded once.


def _init_model(load: Any, state: dict[str, Any]) -> None:
    state["model"] = load_example().DetectPose.__wrapped__(load)


def _pose(load: Any, state: dict[str, Any], frame: Any) -> Any:
    return state["model"](frame)


def _close_model(load: Any, state: dict[str, Any]) -> None:
    state["model"].close()


def prepare_jobs(ex: ModuleType, load: Any, cameras: Sequence[Any], frames: int) -> dict[str, Job]:
    def loop() -> dict[Any, Any]:
        return dict(ex.summaries(ex.sequential(cameras, frames, load)))

    def flowpipe_job(model_backend: str | None) -> Job:
        pipe = ex.build_pipeline(load, workers=WORKERS, model_backend=model_backend)

        def job() -> dict[Any, Any]:
            out = pipe.run(ex.camera_feeds(cameras, frames))
            return dict(ex.summaries({(r.frame.camera, r.frame.index): r for r in out}))

        return job

    def mpire_job(start_method: str) -> Job:
        from mpire.pool import WorkerPool

        def job() -> dict[Any, Any]:
            tracker, results = ex.TrackPeople.__wrapped__(), {}
            with WorkerPool(
                n_jobs=WORKERS,
                start_method=start_method,
                shared_objects=load,
                use_worker_state=True,
            ) as pool:
                posed = pool.imap(
                    _pose,
                    frames_in_loop_order(ex, cameras, frames),
                    iterable_len=len(cameras) * frames,
                    worker_init=_init_model,
                    worker_exit=_close_model,
                    chunk_size=1,
                )
                for p in posed:
                    results[p.frame.camera, p.frame.index] = ex.classify(tracker(p))
            return dict(ex.summaries(results))

        return job

    jobs: dict[str, Job] = {
        "loop": loop,
        "flowpipe/thread": flowpipe_job(None),
        "flowpipe/model-process": flowpipe_job("process"),
    }
    if importlib.util.find_spec("mpire") is not None:
        jobs["mpire/thread"] = mpire_job("threading")
        jobs["mpire/process"] = mpire_job("spawn")
    return jobs


def time_rows(jobs: dict[str, Job], repeat: int) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Round-robin: every row once per round; a row whose results differ from the loop's fails."""
    seconds: dict[str, list[float]] = {key: [] for key in jobs}
    failed: dict[str, str] = {}
    reference: dict[Any, Any] | None = None
    for round_ in range(repeat):
        for key, job in jobs.items():
            if key in failed:
                continue
            print(f"model: round {round_ + 1}/{repeat}: {key}", file=sys.stderr, flush=True)
            start = time.perf_counter()
            try:
                got = job()
            except Exception as exc:  # a row that raises is reported, the others go on
                failed[key] = f"raised {type(exc).__name__}: {exc}"
                continue
            seconds[key].append(time.perf_counter() - start)
            if reference is None:
                reference = got
            elif got != reference:
                failed[key] = "results differ from the loop's"
    return seconds, failed


def model_call_ms(ex: ModuleType, load: Any, cameras: Sequence[Any], frames: int) -> float:
    """The median time of one model call here, in the caller's thread, on 20 frames."""
    model = ex.DetectPose.__wrapped__(load)
    try:
        shots = list(frames_in_loop_order(ex, cameras, frames))[:20]
        model(shots[0])  # warm up
        times = []
        for shot in shots:
            start = time.perf_counter()
            model(shot)
            times.append(time.perf_counter() - start)
    finally:
        model.close()
    return statistics.median(times) * 1e3


def run(quick: bool, repeat: int | None) -> tuple[str, bool]:
    """Run the scenario; the Markdown report and whether a row failed."""
    ex = load_example()
    ex.cv2.setNumThreads(1)  # as the example does: the workers give the parallelism
    name, load = choose_model(ex)
    n_cameras, frames = (QUICK_CAMERAS, QUICK_FRAMES) if quick else (CAMERAS, FRAMES)
    cameras = ex.CAMERAS[:n_cameras]
    rounds = repeat or (1 if quick else DEFAULT_REPEAT)
    call_ms = model_call_ms(ex, load, cameras, frames)
    jobs = prepare_jobs(ex, load, cameras, frames)
    load_before = os.getloadavg()
    seconds, failed = time_rows(jobs, rounds)
    load_after = os.getloadavg()

    total = n_cameras * frames
    loop_median = statistics.median(seconds["loop"]) if seconds["loop"] else None
    rows = []
    for key in jobs:
        s = seconds[key]
        if key in failed or not s:
            rows.append([key, "FAILED", "", "", failed.get(key, "")])
            continue
        med = statistics.median(s)
        vs_loop = ratio(loop_median / med) if loop_median else "-"
        rows.append(
            [key, f"{med:.2f}", f"{min(s):.2f}-{max(s):.2f}", f"{total / med:.1f}", vs_loop]
        )
    lines = [
        f"## model: capture -> pose model x{WORKERS} -> track (key=camera) x2 -> classify, "
        f"{n_cameras} cameras x {frames} frames = {total}",
        "",
        f"model: {name}; one call {call_ms:.1f} ms here (median of 20, in the caller's thread)",
        f"rounds: {rounds}; load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
        f"(1 min); {os.cpu_count()} CPUs",
        "",
        table(["row", "median s", "min-max s", "frames/s", "vs loop"], rows),
    ]
    lines += [f"failed: {key}: {why}" for key, why in failed.items()]
    lines += targets(seconds, failed, loop_median)
    return "\n".join(lines), bool(failed)


def targets(
    seconds: dict[str, list[float]], failed: dict[str, str], loop_median: float | None
) -> list[str]:
    """Issue 21's target: >= 1.8x the loop, and ahead of mpire in the same run."""
    if loop_median is None:
        return []
    medians = {k: statistics.median(s) for k, s in seconds.items() if s and k not in failed}
    mpire = [m for k, m in medians.items() if k.startswith("mpire")]
    out = [""]
    for key in ("flowpipe/thread", "flowpipe/model-process"):
        if key not in medians:
            continue
        speedup = loop_median / medians[key]
        ahead = not mpire or medians[key] < min(mpire)
        met = speedup >= 1.8 and ahead
        out.append(
            f"target {key}: >= 1.8x the loop ({speedup:.2f}x) and ahead of mpire "
            f"({'yes' if ahead else 'no'}): {'met' if met else 'missed'}"
        )
    return out
