"""Run statistics as frozen records: a readable table, the bottleneck; advice in ``advice``."""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from .counters import WorkerCounters, latency_percentiles

_N = TypeVar("_N", int, float)
STARTUP_SHARE = 0.25  # a start that took this share of the run (and more than any work)


@dataclasses.dataclass(frozen=True)
class StageStats:
    """What one stage did during a run (so far, while it runs)."""

    name: str
    """The stage's label (``name#2`` when a name appears twice)."""
    workers: int
    items_in: int
    """Inputs the stage took from its buffer."""
    items_out: int
    """Outputs it handed on."""
    skipped: int
    """Inputs skipped by ``on_error``."""
    dropped: int
    """Inputs dropped from its buffer by ``overflow``."""
    errors: int
    """Calls that raised (retried ones included)."""
    retries: int
    busy_s: float
    """Seconds spent in the stage's function, summed over workers. A generator
    suspended at ``yield`` while the next buffer is full is blocked, not busy."""
    waiting_s: float
    """Seconds its workers waited for input."""
    blocked_s: float
    """Seconds its workers were blocked handing outputs on (backpressure)."""
    buffer_fill: int
    """Items in its input buffer now."""
    buffer_peak: int
    """The most items its input buffer held at once."""
    buffer_size: int
    elapsed_s: float
    calls: int = 0
    """Calls of the stage's function (one per item; one per batch with ``batch=``)."""
    latency_p50_s: float | None = None
    """Median seconds per call (``None`` before the first call); for a generator stage
    and a source, seconds per output (the time to make each)."""
    latency_p99_s: float | None = None
    """99th percentile of seconds per call."""
    span_s: float = 0.0
    """Seconds since each worker's first input, summed over workers (what shares divide by)."""
    backend: str = ""
    """The backend its calls ran on ("" for a source iterable, read by a thread of the caller's)."""
    in_caller: bool = True
    """Its calls ran in the caller's process (threads: they share its interpreter)."""
    on_this_machine: bool = True
    """Its workers ran on this machine (their number is bounded by its cores)."""
    batch: int | None = None
    source: bool = False
    """A source stage (it takes no input; its row counts what it yielded)."""
    startup_s: float = 0.0
    """Seconds its first worker took to start, before the stage could take an input: a
    worker process's boot, a class stage's ``__init__`` (a model load); restarts after
    a crash included."""
    cpu_s: float | None = None
    """CPU seconds its workers used in their calls, summed: a worker thread's own CPU
    clock, a worker process's CPU time (``None`` where not measured: async stages)."""
    queued_s: float | None = None
    """Seconds of its calls its calling threads were ready to run but waited for a core
    (other programs' load, more busy threads than cores; Linux only, else ``None``)."""
    rss_bytes: int | None = None
    """Resident memory of its worker processes (or actors), summed, as each last
    reported it (``None`` for stages in the caller's process)."""
    call_s: float | None = None
    """Seconds of its calls by the clock of the worker process (or actor) that ran
    them, summed (``None`` in the caller's process, where they are ``busy_s``): its
    busy time less the trips to and from the worker and the caller's own delays."""
    worker_cpu_s: float | None = None
    """CPU seconds of its worker processes (or actors) in all: its calls, and also
    receiving, opening and sending items (``None`` for stages in the caller's process)."""
    fused_into: str | None = None
    """The stage whose worker called this one, in turn, on each of its slices
    (``fuse=True``): this row counts items and errors; the time is that stage's."""

    @property
    def cpu_share(self) -> float | None:
        """Share of its busy time its workers ran on a core, leaving out the time they
        waited for one (``queued_s``: other programs' load): near 1 for CPU work (Python
        or native, however loaded the machine), near 0 for waiting (sleep, I/O), about
        ``1/workers`` for threads taking turns on the GIL."""
        called = self.call_s if self.call_s is not None else self.busy_s  # where they ran
        if self.cpu_s is None or called <= 0:
            return None
        ran = called - (self.queued_s or 0.0)
        return min(1.0, self.cpu_s / ran) if ran > 0 else 1.0

    @property
    def busy_share(self) -> float:
        """Fraction of its workers' time spent in calls: near 1.0 means this stage limits.

        Measured from each worker's first input to the end of the run (or now,
        while it runs): filling the pipeline and starting worker processes are
        not counted as idle time.
        """
        span = self._span()
        return min(1.0, self.busy_s / span) if span > 0 else 0.0

    @property
    def waiting_share(self) -> float:
        """Fraction of its workers' time spent waiting for input."""
        span = self._span()
        return min(1.0, self.waiting_s / span) if span > 0 else 0.0

    @property
    def blocked_share(self) -> float:
        """Fraction of its workers' time spent blocked handing outputs on."""
        span = self._span()
        return min(1.0, self.blocked_s / span) if span > 0 else 0.0

    def _span(self) -> float:
        return self.span_s if self.span_s > 0 else self.elapsed_s * self.workers

    @property
    def load_s(self) -> float:
        """Seconds of work per worker: the stage with the most needs the most time."""
        return self.busy_s / self.workers if self.workers else 0.0

    @property
    def throughput(self) -> float:
        """Outputs per second over the run so far."""
        return self.items_out / self.elapsed_s if self.elapsed_s > 0 else 0.0


def combine(
    name: str,
    counters: Sequence[WorkerCounters],
    *,
    workers: int,
    dropped: int,
    fill: int,
    peak: int,
    size: int,
    elapsed: float,
    started: float = 0.0,
    backend: str = "",
    in_caller: bool = True,
    on_this_machine: bool = True,
    batch: int | None = None,
    source: bool = False,
    fused_into: str | None = None,
) -> StageStats:
    """One stage's record from its workers' counters; ``started`` is the run's start
    (``perf_counter``), ``elapsed`` the seconds since (to its end, once ended)."""
    calls = sum(c.calls for c in counters)
    end = started + elapsed
    span = sum(
        end - max(started, c.started if c.started is not None else started) for c in counters
    )
    span *= workers / len(counters) if counters else 0  # an async stage: one loop, many in flight
    p50, p99 = (
        latency_percentiles([c.latency for c in counters], (0.5, 0.99)) if calls else (None, None)
    )
    return StageStats(
        name=name,
        workers=workers,
        items_in=sum(c.items_in for c in counters),
        items_out=sum(c.items_out for c in counters),
        skipped=sum(c.skipped for c in counters),
        dropped=dropped,
        errors=sum(c.errors for c in counters),
        retries=sum(c.retries for c in counters),
        busy_s=sum(c.busy for c in counters),
        waiting_s=sum(c.waiting for c in counters),
        blocked_s=sum(c.blocked for c in counters),
        buffer_fill=fill,
        buffer_peak=peak,
        buffer_size=size,
        elapsed_s=elapsed,
        calls=calls,
        span_s=max(0.0, span),
        latency_p50_s=p50,
        latency_p99_s=p99,
        backend=backend,
        in_caller=in_caller,
        on_this_machine=on_this_machine,
        batch=batch,
        source=source,
        fused_into=fused_into,
        startup_s=min((c.startup for c in counters if c.startup > 0), default=0.0),
        cpu_s=_sum_known(c.cpu for c in counters),
        queued_s=_sum_known(c.queued for c in counters),
        rss_bytes=_sum_known(c.rss for c in counters),
        worker_cpu_s=_sum_known(c.worker_cpu for c in counters),
        call_s=_sum_known(c.wall for c in counters),
    )


def _sum_known(values: Iterable[_N | None]) -> _N | None:
    known = [v for v in values if v is not None]
    return sum(known[1:], known[0]) if known else None


def format_bytes(n: int | None) -> str:
    """``273MB``, ``1.2GB``; ``-`` for no value."""
    if n is None:
        return "-"
    if n >= 10**9:
        return f"{n / 1e9:.1f}GB"
    return f"{n / 1e6:.0f}MB"


def format_seconds(seconds: float | None) -> str:
    """``12µs``, ``3.4ms``, ``1.20s``; ``-`` for no value."""
    if seconds is None:
        return "-"
    if seconds < 1e-5:
        return f"{seconds * 1e6:.1f}µs"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.3g}ms"
    return f"{seconds:.2f}s"


def format_rate(per_second: float) -> str:
    """``950``, ``12.3k``, ``2.1M`` (items per second)."""
    if per_second >= 1e6:
        return f"{per_second / 1e6:.1f}M"
    if per_second >= 1e4:
        return f"{per_second / 1e3:.1f}k"
    return f"{per_second:.0f}"


_HEAD = (
    "stage",
    "workers",
    "in",
    "out",
    "skipped",
    "dropped",
    "errors",
    "retries",
    "start",
    "busy",
    "wait",
    "blocked",
    "cpu",
    "p50",
    "p99",
    "items/s",
    "buffer",
    "peak",
)


@dataclasses.dataclass(frozen=True)
class RunStats:
    """Per-stage statistics of one run; ``print(run.stats)`` shows a table and advice."""

    stages: tuple[StageStats, ...]
    elapsed_s: float
    cpu_s: float = 0.0
    """CPU seconds this process used during the run (every thread; not worker processes)."""
    cpus: int = 1
    """CPU cores of the machine."""

    def __getitem__(self, name: str) -> StageStats:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def bottleneck(self) -> StageStats | None:
        """The stage whose workers worked longest (``load_s``): the one that limits throughput.

        Ranking by work done rather than by ``busy_share`` keeps a short run fair:
        a stage whose worker process started late looks busy over its short life.
        A run that spent most of its time starting a stage's workers (``starting``)
        was limited by that start: then it is that stage.
        """
        starting = self.starting
        if starting is not None:
            return starting
        working = [s for s in self.stages if s.busy_s > 0]
        return max(working, key=lambda s: s.load_s, default=None)

    @property
    def starting(self) -> StageStats | None:
        """The stage whose start limited the run, if one did: the slowest to start, when
        its start took at least a quarter of the run and more than twice as long as any
        stage worked (``load_s``): a run too short for its stages' numbers to say what
        limits them."""
        slowest = max(self.stages, key=lambda s: s.startup_s, default=None)
        if slowest is None or slowest.startup_s < STARTUP_SHARE * self.elapsed_s:
            return None
        if any(2 * s.load_s >= slowest.startup_s for s in self.stages):
            return None  # a stage that worked about as long limits the run: say that
        return slowest

    @property
    def why(self) -> str:
        """Why the bottleneck is the bottleneck, in words (``""`` before any work)."""
        neck = self.bottleneck
        if neck is None:
            return ""
        if neck is self.starting:
            return (
                f"{neck.name} (start-up {format_seconds(neck.startup_s)} "
                f"of the run's {format_seconds(self.elapsed_s)})"
            )
        return f"{neck.name} (busy {neck.busy_share:.0%})"

    @property
    def advice(self) -> tuple[str, ...]:
        """Concrete changes the measured numbers suggest (empty when none stands out)."""
        from .advice import advise  # the rules: read when advice is asked for

        return advise(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "elapsed_s": self.elapsed_s,
            "stages": [dataclasses.asdict(s) for s in self.stages],
        }

    def _head(self) -> tuple[str, ...]:
        """The columns; ``proc-cpu`` and ``rss`` only when some stage runs in worker
        processes."""
        return (*_HEAD, "proc-cpu", "rss") if self._with_rss() else _HEAD

    def _with_rss(self) -> bool:
        return any(s.rss_bytes is not None for s in self.stages)

    def _rows(self) -> list[tuple[str, ...]]:
        rss = self._with_rss()
        return [
            (
                s.name if s.fused_into is None else f"{s.name} (fused into {s.fused_into})",
                str(s.workers),
                str(s.items_in),
                str(s.items_out),
                str(s.skipped),
                str(s.dropped),
                str(s.errors),
                str(s.retries),
                format_seconds(s.startup_s) if s.startup_s > 0 else "-",
                f"{s.busy_share:.0%}",
                f"{s.waiting_share:.0%}",
                f"{s.blocked_share:.0%}",
                format_seconds(s.cpu_s),
                format_seconds(s.latency_p50_s),
                format_seconds(s.latency_p99_s),
                f"{s.throughput:,.0f}",
                f"{s.buffer_fill}/{s.buffer_size}" if s.buffer_size else "-",
                str(s.buffer_peak) if s.buffer_size else "-",
                *((format_seconds(s.worker_cpu_s), format_bytes(s.rss_bytes)) if rss else ()),
            )
            for s in self.stages
        ]

    def _tail(self) -> list[str]:
        tail = f"elapsed {self.elapsed_s:.3f}s"
        if self.bottleneck is not None:
            tail += f"; bottleneck: {self.why}"
        return [tail, *(f"advice: {tip}" for tip in self.advice)]

    def __str__(self) -> str:
        head = self._head()
        rows = [head, *self._rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = [
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
            )
            for r in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        return "\n".join([*lines, *self._tail()])

    def to_markdown(self) -> str:
        """The table as Markdown (what a notebook shows)."""
        head = self._head()
        lines = [
            "| " + " | ".join(head) + " |",
            "|" + "|".join(":--" if i == 0 else "--:" for i in range(len(head))) + "|",
            *("| " + " | ".join(row) + " |" for row in self._rows()),
            "",
        ]
        lines.extend(line.replace("advice: ", "**advice**: ") + "  " for line in self._tail())
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    # At a REPL (and as a notebook's text/plain) the stats are their table, not the
    # dataclass's field dump; equality is still the dataclass's, field by field.
    def __repr__(self) -> str:
        return str(self)

    def to_html(self) -> str:
        """The table as HTML, then the run's time, bottleneck and advice (what a notebook shows)."""
        rows = [_html_row(self._head(), "th"), *(_html_row(row, "td") for row in self._rows())]
        tail = (  # `workers=3` in advice reads as code
            re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(line, quote=False))
            for line in self._tail()
        )
        return (
            f'<div class="flowpipe-stats"><table>{"".join(rows)}</table>'
            + "".join(f"<p>{line}</p>" for line in tail)
            + "</div>"
        )

    def _repr_html_(self) -> str:
        return self.to_html()

    def stage_notes(self) -> dict[str, str]:
        """Per stage label, a short note for a graph picture: throughput and busy share."""
        return {
            s.name: f"{format_rate(s.throughput)} items/s"
            + ("" if s.source else f", busy {s.busy_share:.0%}")
            for s in self.stages
        }


def _html_row(cells: Sequence[str], tag: str) -> str:
    """One table row: the stage name left-aligned, the numbers right-aligned."""
    return (
        "<tr>"
        + "".join(
            f'<{tag} style="text-align:{"right" if i else "left"}">{html.escape(c)}</{tag}>'
            for i, c in enumerate(cells)
        )
        + "</tr>"
    )
