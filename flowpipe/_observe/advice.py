"""Advice from a run's statistics: the rules behind ``RunStats.advice``.

Every rule reads the run's own numbers; each threshold has a margin on either side
of the values real stages take (a sleeping stage is near 0% CPU, a computing one
near 100%), so identical runs land on the same side and get the same advice.
``docs/observing.md`` lists the rules in words.
"""

from __future__ import annotations

from .stats import RunStats, StageStats, format_rate, format_seconds

BUSY = 0.75  # a stage busier than this is saturated
MARGIN = 0.15  # ...and limits the run when the next stage has < 85% of its work per worker
MIN_CALLS = 10  # fewer calls than this are too few to judge
SHORT_CALL = 1e-3  # seconds: calls shorter than this are dominated by per-call costs
WAITS = 0.3  # a stage on a core less than this share of its busy time mostly waits
COMPUTES = 0.7  # threads of one stage using less than this, one core between them: the GIL
CHEAP_CPU = 1e-4  # CPU seconds a call: less than a worker process costs to reach


def advise(stats: RunStats) -> tuple[str, ...]:
    """Suggestions from the measured numbers; see ``docs/observing.md`` for the rules."""
    tips: list[str] = []
    starting = stats.starting
    if starting is not None:
        tips.append(
            f"`{starting.name}`'s workers took {format_seconds(starting.startup_s)} to start "
            f"(a worker process, its `__init__`, a model load) of the run's "
            f"{format_seconds(stats.elapsed_s)}: the run is mostly start-up; a longer run "
            "spreads that cost, and `keep_alive=True` keeps the workers for the next run"
        )
    working = [s for s in stats.stages if not s.source and s.calls >= MIN_CALLS]
    tips.extend(_main_advice(stats, working))
    tips.extend(_too_cheap(s) for s in working if _is_too_cheap(s))
    return tuple(tips)


def _main_advice(stats: RunStats, working: list[StageStats]) -> list[str]:
    if not working:
        return []
    ranked = sorted(working, key=lambda s: s.load_s, reverse=True)
    top = ranked[0]
    # How much of the top stage's work per worker the next stage has: near 1, balanced.
    second = ranked[1].load_s / top.load_s if len(ranked) > 1 and top.load_s > 0 else 0.0
    if top.busy_share >= BUSY:
        if second > 1 - MARGIN:
            return []  # balanced: several stages do as much work, none alone limits
        return _for_bottleneck(stats, top, second)
    tips: list[str] = []
    last, first = working[-1], working[0]
    if last.blocked_share >= 0.5:
        tips.append(
            f"`{last.name}` spent {last.blocked_share:.0%} of its time waiting for the code "
            "that reads the results: the consumer limits the run, not the stages"
        )
    elif max(s.busy_share for s in working) < 0.5 and first.waiting_share >= 0.5:
        tips.append(
            f"`{first.name}` waited for input {first.waiting_share:.0%} of the time: the source "
            f"({format_rate(first.items_in / stats.elapsed_s if stats.elapsed_s else 0)} "
            "items/s) limits the run; more workers would not help"
        )
    return tips


def _more_workers(w: int, second: float) -> int:
    """Workers enough for the stage to do no more work per worker than the next stage
    (``second`` of its work per worker now), in steps of 2x: 2w, or 4w when 2w would
    clearly fall short (by more than ``MARGIN``), so that noise does not change it."""
    need = w / max(second, 0.25)
    return 2 * w if need <= 2 * w * (1 + MARGIN) else 4 * w


def _uses_the_gil(stats: RunStats, s: StageStats, share: float) -> bool:
    """Threads of the caller's process that take turns on one core: their CPU adds up
    to about one core while each spends most of its busy time off a core, neither
    sleeping (that uses no core at all) nor waiting for one (``queued_s``: other
    programs' load, which native code on a busy machine waits for)."""
    if not s.in_caller or s.workers < 2 or stats.cpus < 2 or s.cpu_s is None:
        return False
    cores = s.cpu_s / s.load_s if s.load_s > 0 else 0.0  # cores its busy workers used together
    return share < COMPUTES and 1 - 2 * MARGIN <= cores <= 1 + 2 * MARGIN


def _cores_used(stats: RunStats) -> float:
    """Cores this program kept busy during the run, on average: the caller's process
    and its stages' worker processes, every thread of them. A native library may
    compute in threads of its own (MediaPipe, ONNX Runtime) while the calling thread
    waits for them as if it slept: then this is what shows the cores are taken."""
    if stats.elapsed_s <= 0:
        return 0.0
    workers = sum(s.worker_cpu_s or 0.0 for s in stats.stages if s.on_this_machine)
    return (stats.cpu_s + workers) / stats.elapsed_s


def _for_bottleneck(stats: RunStats, s: StageStats, second: float) -> list[str]:
    w, cpus = s.workers, stats.cpus
    wanted = _more_workers(w, second)
    share = s.cpu_share
    used = _cores_used(stats)
    head = f"`{s.name}` is busy {s.busy_share:.0%} of the time and limits the run"
    fused = [o.name for o in stats.stages if o.fused_into == s.name]
    if fused:  # its worker runs them too, and cannot have more workers
        names = ", ".join(f"`{n}`" for n in fused)
        return [
            f"{head}; its worker also runs {names} (`fuse=True`): take `fuse=True` off the "
            "costly ones, so that they get workers of their own"
        ]
    tips: list[str] = []
    if share is not None and _uses_the_gil(stats, s, share):
        tips.append(
            f"{head}; its {w} threads used one core between them ({share:.0%} of their busy "
            "time on a core): pure-Python work holds the GIL, so more threads do not help; "
            f'try `backend="process"` on this stage with `workers={min(wanted, cpus)}`'
        )
    elif share is None:  # not measured: at most a worker process per core
        if not s.in_caller and s.on_this_machine:
            wanted = min(wanted, cpus)
        tips.append(
            f"{head}: try `workers={wanted}`"
            if wanted > w
            else f"{head}, and has a worker per CPU core ({cpus}): more workers need more "
            f"cores; make `{s.name}` cheaper"
        )
    elif share < WAITS and used >= (1 - 2 * MARGIN) * cpus:  # waits, yet the cores are busy
        tips.append(
            f"{head}; its calls ran on a core only {share:.0%} of their time, yet this "
            f"program kept the machine's {cpus} CPU cores busy ({used:.1f} in use): its work "
            "runs in threads of its own (a native library's), so more workers need more "
            f"cores; make `{s.name}` cheaper"
        )
    elif share < WAITS:  # it waits (sleep, I/O): more workers overlap the waits
        tips.append(
            f"{head}, mostly waiting (sleep, I/O: {share:.0%} of its busy time on a core): "
            f"try `workers={wanted}`"
        )
    else:  # it computes: at most as many such workers as cores
        on_cores = f"{share:.0%} of its busy time on a core"
        wanted = min(wanted, cpus)  # never more workers that compute than cores
        if wanted <= w:
            tips.append(
                f"{head}, and computes ({on_cores}) with as many workers as the machine's "
                f"{cpus} CPU cores allow: more workers need more cores; make `{s.name}` cheaper"
            )
        else:
            tip = f"{head}, and computes ({on_cores}): try `workers={wanted}` ({cpus} CPU cores)"
            if s.in_caller and w == 1:  # one thread: nothing tells native code from Python yet
                tip += (
                    "; threads run at once only in code that releases the GIL (NumPy, OpenCV, "
                    'PyTorch): for pure-Python work, with `backend="process"`'
                )
            tips.append(tip)
    p50 = s.latency_p50_s
    if p50 is not None and p50 < SHORT_CALL:
        if s.batch is None:
            tips.append(
                f"`{s.name}`'s calls are short ({format_seconds(p50)} each): if it can work on "
                "a list at once, `batch=64` spreads the cost of each call over many items"
            )
        else:
            tips.append(
                f"`{s.name}`'s batches of {s.batch} take only {format_seconds(p50)} a call: "
                f"try `batch={s.batch * 4}`"
            )
    return tips


def _is_too_cheap(s: StageStats) -> bool:
    """A stage whose workers run elsewhere (worker processes, actors), whose calls use
    less CPU than reaching such a worker costs."""
    return not s.in_caller and s.cpu_s is not None and s.cpu_s / s.calls < CHEAP_CPU


def _too_cheap(s: StageStats) -> str:
    assert s.cpu_s is not None
    where, many = ("worker process", "es") if s.on_this_machine else ("remote worker", "s")
    return (
        f"`{s.name}` uses only {format_seconds(s.cpu_s / s.calls)} of CPU a call in its "
        f"{where}{many}, less than sending items to a {where} costs: keep it on threads "
        f'(`backend="thread"` on this stage)'
    )
