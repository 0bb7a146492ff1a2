"""Stats records, latency percentiles, the advice rules (on made-up numbers), pictures, logging."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from flowpipe import RunStats, StageStats, stage
from flowpipe._observe.counters import WorkerCounters, latency_percentiles
from flowpipe._observe.stats import format_rate, format_seconds


def make(name: str, busy: float, **fields: Any) -> StageStats:
    """A stage's record over a 1-second run: ``busy`` is its busy share per worker."""
    workers = fields.pop("workers", 1)
    values: dict[str, Any] = {
        "name": name,
        "workers": workers,
        "items_in": 100,
        "items_out": 100,
        "skipped": 0,
        "dropped": 0,
        "errors": 0,
        "retries": 0,
        "busy_s": busy * workers,
        "waiting_s": (1 - busy) * workers,
        "blocked_s": 0.0,
        "buffer_fill": 0,
        "buffer_peak": 3,
        "buffer_size": 1024,
        "elapsed_s": 1.0,
        "calls": 100,
        "latency_p50_s": 0.01,
        "latency_p99_s": 0.02,
        "span_s": 1.0 * workers,
    }
    values.update(fields)
    return StageStats(**values)


def run_of(*stages: StageStats, cpu_s: float = 0.1, cpus: int = 8) -> RunStats:
    return RunStats(tuple(stages), 1.0, cpu_s, cpus)


# -- latency histogram ------------------------------------------------------------------------


def test_latency_percentiles_come_back_within_five_percent() -> None:
    c = WorkerCounters()
    for _ in range(98):
        c.record_latency(0.002, 1)  # 2 ms calls...
    c.record_latency(1.0, 2)  # ...and two slow ones (a slice of 2 calls: 0.5 s each)
    p50, p99, p100 = latency_percentiles([c.latency], (0.5, 0.99, 1.0))
    assert p50 == pytest.approx(0.002, rel=0.05)
    assert p99 == pytest.approx(0.5, rel=0.05)
    assert p100 == pytest.approx(0.5, rel=0.05)


def test_a_slice_counts_as_its_calls_at_their_mean_latency() -> None:
    a, b = WorkerCounters(), WorkerCounters()
    a.record_latency(0.010, 10)  # 10 calls of 1 ms in one slice
    b.record_latency(0.001, 1)
    assert sum(a.latency) == 10
    (p50,) = latency_percentiles([a.latency, b.latency], (0.5,))
    assert p50 == pytest.approx(0.001, rel=0.05)


def test_time_a_generator_spent_handing_parts_on_is_blocked_not_busy() -> None:
    c = WorkerCounters()
    # taken at 1.0, called until 3.0, of which 1.5 s handing parts on; handed on by 3.5
    c.count_slice(1, 10, 1, 0.5, 1.0, 3.0, 3.5, held=1.5, per_call=False)
    assert (c.busy, c.blocked, c.waiting) == (0.5, 2.0, 0.5)
    assert sum(c.latency) == 0  # a generator's latency is counted per output, by parts
    c.count_slice(1, 1, 1, 3.5, 3.5, 3.6, 3.6)
    assert sum(c.latency) == 1


def test_no_calls_no_latency() -> None:
    assert latency_percentiles([WorkerCounters().latency], (0.5, 0.99)) == [None, None]
    assert latency_percentiles([], (0.5,)) == [None]


def test_extreme_latencies_land_in_the_end_buckets() -> None:
    c = WorkerCounters()
    c.record_latency(0.0, 1)
    c.record_latency(1e9, 1)
    assert (c.latency[0], c.latency[-1]) == (1, 1)


def test_formats() -> None:
    assert [format_seconds(s) for s in (None, 2e-7, 4.2e-5, 0.0034, 1.234)] == [
        "-",
        "0.2µs",
        "42µs",
        "3.4ms",
        "1.23s",
    ]
    assert [format_rate(r) for r in (12.4, 950, 12_345, 2_100_000)] == [
        "12",
        "950",
        "12.3k",
        "2.1M",
    ]


# -- shares and the bottleneck -------------------------------------------------------------------


def test_shares_divide_by_the_workers_time_since_their_first_input() -> None:
    s = make("x", 0.5, workers=2, blocked_s=0.25, span_s=2.0)
    assert (s.busy_share, s.waiting_share, s.blocked_share) == (0.5, 0.5, 0.125)
    assert s.load_s == 0.5
    no_span = make("y", 0.5, span_s=0.0)  # an async stage: the run's clock
    assert no_span.busy_share == 0.5


def test_the_bottleneck_is_the_stage_with_most_work_per_worker() -> None:
    stats = run_of(make("read", 0.3), make("detect", 1.0, workers=4), make("late", 0.9))
    assert stats.bottleneck is not None
    assert stats.bottleneck.name == "detect"
    assert stats.why == "detect (busy 100%)"
    assert run_of().bottleneck is None
    assert run_of().why == ""


def test_a_run_mostly_spent_starting_names_the_start_not_an_idle_stage() -> None:
    stats = run_of(make("Model", 0.0, startup_s=0.8), make("add_offset", 0.0), make("c", 0.01))
    assert stats.starting is stats.bottleneck
    assert stats.bottleneck is not None
    assert stats.bottleneck.name == "Model"
    assert stats.why == "Model (start-up 800ms of the run's 1.00s)"
    assert stats.advice[0].startswith("`Model`'s workers took 800ms to start")
    quick = run_of(make("Model", 0.9, startup_s=0.3), make("b", 0.1))
    assert quick.starting is None
    assert quick.why == "Model (busy 90%)"
    # A stage that worked about as long as the start limits the run: it is named.
    busy_after = run_of(make("Model", 0.1, startup_s=0.6), make("b", 0.9))
    assert busy_after.starting is None
    assert busy_after.why == "b (busy 90%)"


# -- advice rules ------------------------------------------------------------------------------


def test_a_clear_bottleneck_gets_workers_to_catch_up_with_the_next_stage() -> None:
    stats = run_of(make("read", 0.2), make("detect", 0.97), make("track", 0.4))
    assert stats.advice == ("`detect` is busy 97% of the time and limits the run: try `workers=4`",)
    closer = run_of(make("read", 0.2), make("detect", 0.97), make("track", 0.5))
    assert "try `workers=2`" in closer.advice[0]  # 2x is enough (within the margin)


def test_a_fused_group_that_limits_the_run_is_told_to_unfuse_not_to_add_workers() -> None:
    stats = run_of(
        make("read", 0.2),
        make("parse", 0.97),
        make("score", 0.0, busy_s=0.0, fused_into="parse"),
        make("track", 0.4),
    )
    assert stats.advice == (
        "`parse` is busy 97% of the time and limits the run; its worker also runs `score` "
        "(`fuse=True`): take `fuse=True` off the costly ones, so that they get workers of "
        "their own",
    )


def test_more_workers_are_at_most_four_times_as_many() -> None:
    stats = run_of(make("detect", 0.99, workers=2), make("track", 0.01))
    assert "try `workers=8`" in stats.advice[0]


def test_no_advice_when_stages_are_balanced_or_half_busy_or_few() -> None:
    balanced = run_of(make("a", 0.95), make("b", 0.9), make("c", 0.97))
    assert balanced.advice == ()
    half_busy = run_of(make("a", 0.6), make("b", 0.65))
    assert half_busy.advice == ()
    few = run_of(make("a", 0.99, calls=3), make("b", 0.1, calls=3))
    assert few.advice == ()


def test_a_process_stage_gets_at_most_a_worker_per_core() -> None:
    stats = run_of(make("a", 0.99, backend="process", in_caller=False), make("b", 0.1), cpus=2)
    assert "try `workers=2`" in stats.advice[0]
    one_core = run_of(make("a", 0.99, backend="process", in_caller=False), make("b", 0.1), cpus=1)
    assert "more workers need more cores" in one_core.advice[0]


def test_a_stage_that_waits_gets_workers_beyond_the_cores() -> None:
    # 1% of its busy time on a core: sleeping, I/O; more threads overlap the waits.
    stats = run_of(make("fetch", 0.99, cpu_s=0.01), make("b", 0.05), cpus=2)
    assert stats.advice == (
        "`fetch` is busy 99% of the time and limits the run, mostly waiting (sleep, I/O: "
        "1% of its busy time on a core): try `workers=4`",
    )


def test_a_stage_waiting_on_its_own_thread_while_the_cores_are_busy_gets_no_more_workers() -> None:
    # A native library (MediaPipe) computes in threads of its own: the calling thread
    # waits (2% on a core), while this program keeps both cores busy (1.9 in use).
    stats = run_of(make("pose", 0.99, workers=2, cpu_s=0.04), make("b", 0.05), cpu_s=1.9, cpus=2)
    assert stats.advice == (
        "`pose` is busy 99% of the time and limits the run; its calls ran on a core only 2% "
        "of their time, yet this program kept the machine's 2 CPU cores busy (1.9 in use): "
        "its work runs in threads of its own (a native library's), so more workers need "
        "more cores; make `pose` cheaper",
    )
    idle = run_of(make("pose", 0.99, workers=2, cpu_s=0.04), make("b", 0.05), cpu_s=0.3, cpus=2)
    assert "mostly waiting (sleep, I/O" in idle.advice[0]  # the cores were free: it waits


def test_worker_processes_that_keep_the_cores_busy_get_no_more_workers() -> None:
    # In worker processes too: their calling threads wait (2%), the library's threads
    # keep the cores busy (1.6 s of the processes' CPU in the 1-second run).
    pose = make(
        "pose", 0.99, workers=2, cpu_s=0.04, worker_cpu_s=1.6, backend="process", in_caller=False
    )
    stats = run_of(pose, make("b", 0.05), cpu_s=0.1, cpus=2)
    assert "this program kept the machine's 2 CPU cores busy (1.7 in use)" in stats.advice[0]
    assert "more workers need more cores" in stats.advice[0]


def test_cpu_bound_workers_are_never_more_than_cores() -> None:
    one = run_of(make("score", 0.99, cpu_s=0.97), make("b", 0.05), cpus=2)
    assert one.advice[0] == (
        "`score` is busy 99% of the time and limits the run, and computes (98% of its busy "
        "time on a core): try `workers=2` (2 CPU cores); threads run at once only in code "
        "that releases the GIL (NumPy, OpenCV, PyTorch): for pure-Python work, with "
        '`backend="process"`'
    )
    full = run_of(
        make("score", 0.99, workers=2, cpu_s=1.94, in_caller=False), make("b", 0.05), cpus=2
    )
    assert full.advice[0] == (
        "`score` is busy 99% of the time and limits the run, and computes (98% of its busy "
        "time on a core) with as many workers as the machine's 2 CPU cores allow: more "
        "workers need more cores; make `score` cheaper"
    )
    for cpus in (1, 2, 3, 4, 8, 16):  # whatever the need, never more than the cores
        for w in (1, 2, 4):
            stats = run_of(make("s", 0.99, workers=w, cpu_s=0.95 * w), make("b", 0.01), cpus=cpus)
            m = re.search(r"workers=(\d+)", stats.advice[0])
            assert m is None or int(m[1]) <= cpus, (cpus, w, stats.advice)


def test_threads_taking_turns_on_one_core_are_told_about_the_gil() -> None:
    # Two threads, busy all the time, one core's worth of CPU between them.
    gil = run_of(make("parse", 0.99, workers=2, cpu_s=0.99), make("b", 0.05), cpus=4)
    assert gil.advice[0] == (
        "`parse` is busy 99% of the time and limits the run; its 2 threads used one core "
        "between them (50% of their busy time on a core): pure-Python work holds the GIL, "
        'so more threads do not help; try `backend="process"` on this stage with `workers=4`'
    )


def test_native_code_on_a_busy_machine_is_not_blamed_on_the_gil() -> None:
    # The same CPU as above, but the threads were ready to run and waited for a core
    # (other programs' load): native code that releases the GIL, on a loaded machine.
    native = run_of(
        make("pose", 0.99, workers=2, cpu_s=0.99, queued_s=0.9), make("b", 0.05), cpus=2
    )
    assert not any("GIL" in tip for tip in native.advice), native.advice
    assert "more workers need more cores" in native.advice[0]


def test_other_programs_load_and_the_runs_own_cpu_do_not_change_the_advice() -> None:
    tips = {
        run_of(make("score", 0.99, cpu_s=0.97), make("b", 0.05), cpu_s=cpu, cpus=4).advice
        for cpu in (0.1, 1.0, 3.9)
    }
    assert len(tips) == 1, tips


def test_identical_runs_get_the_same_advice_despite_noise() -> None:
    kinds = [
        {"cpu_s": 0.01},  # waits
        {"cpu_s": 0.97},  # computes
        {"workers": 2, "cpu_s": 1.0},  # two threads on the GIL
        {},  # not measured
    ]
    for fields in kinds:
        seen = set()
        for k in range(21):  # +-5% on every measured number
            jitter = 0.95 + k * 0.005
            w = int(fields.get("workers", 1))
            cpu = fields.get("cpu_s")
            stats = run_of(
                make(
                    "a",
                    min(1.0, 0.95 * jitter),
                    workers=w,
                    **({"cpu_s": cpu * jitter} if cpu is not None else {}),
                ),
                make("b", 0.2 * jitter),
                cpus=2,
            )
            seen.add(re.sub(r"\d+%", "N%", " ".join(stats.advice)))
        assert len(seen) == 1, (fields, seen)


def test_a_stage_too_cheap_for_worker_processes_is_told_to_stay_on_threads() -> None:
    stats = run_of(
        make("inc", 0.3, cpu_s=0.0003, in_caller=False, backend="process"),
        make("dec", 0.3, cpu_s=0.0002, in_caller=False, backend="process"),
        make("model", 0.3, cpu_s=0.3, in_caller=False, backend="process"),
    )
    assert stats.advice[-2:] == (
        "`inc` uses only 3.0µs of CPU a call in its worker processes, less than sending "
        'items to a worker process costs: keep it on threads (`backend="thread"` on this stage)',
        "`dec` uses only 2.0µs of CPU a call in its worker processes, less than sending "
        'items to a worker process costs: keep it on threads (`backend="thread"` on this stage)',
    )
    assert not any("`model`" in tip for tip in stats.advice)
    on_threads = run_of(make("inc", 0.3, cpu_s=0.0003), make("b", 0.3, cpu_s=0.3))
    assert not any("keep it on threads" in tip for tip in on_threads.advice)


def test_short_calls_get_batch_advice() -> None:
    short = run_of(make("embed", 0.95, latency_p50_s=4e-5), make("b", 0.1))
    assert short.advice[1] == (
        "`embed`'s calls are short (40µs each): if it can work on a list at once, "
        "`batch=64` spreads the cost of each call over many items"
    )
    batched = run_of(make("embed", 0.95, latency_p50_s=3e-4, batch=8), make("b", 0.1))
    assert batched.advice[1] == "`embed`'s batches of 8 take only 300µs a call: try `batch=32`"
    long_calls = run_of(make("embed", 0.95, latency_p50_s=0.05), make("b", 0.1))
    assert len(long_calls.advice) == 1


def test_a_slow_consumer_or_source_is_named() -> None:
    consumer = run_of(make("a", 0.1), make("b", 0.1, waiting_s=0.2, blocked_s=0.7))
    assert consumer.advice == (
        "`b` spent 70% of its time waiting for the code that reads the results: "
        "the consumer limits the run, not the stages",
    )
    source = run_of(make("a", 0.1), make("b", 0.1))
    assert source.advice == (
        "`a` waited for input 90% of the time: the source (100 items/s) limits the run; "
        "more workers would not help",
    )


def test_a_source_stage_is_never_advised() -> None:
    stats = run_of(make("camera", 0.0, source=True, calls=0), make("a", 0.2))
    assert stats.advice == (
        "`a` waited for input 80% of the time: the source (100 items/s) "
        "limits the run; more workers would not help",
    )


# -- the table, Markdown and pictures --------------------------------------------------------------


def test_memory_of_worker_processes_gets_a_column_only_when_known() -> None:
    stats = run_of(
        make(
            "model",
            0.5,
            workers=2,
            in_caller=False,
            rss_bytes=273_000_000,
            cpu_s=0.9,
            worker_cpu_s=1.2,
        ),
        make("b", 0.1),
    )
    lines = str(stats).splitlines()
    assert lines[0].split()[-2:] == ["proc-cpu", "rss"]
    assert lines[2].split()[-2:] == ["1.20s", "273MB"]
    assert lines[3].split()[-2:] == ["-", "-"]
    assert "| rss |" in stats.to_markdown()
    assert "rss" not in str(run_of(make("a", 0.5))).splitlines()[0].split()


def test_the_table_shows_every_column_then_bottleneck_and_advice() -> None:
    text = str(run_of(make("read", 0.2), make("detect", 0.97), make("track", 0.4)))
    lines = text.splitlines()
    assert lines[0].split() == [
        "stage", "workers", "in", "out", "skipped", "dropped", "errors", "retries",
        "start", "busy", "wait", "blocked", "cpu", "p50", "p99", "items/s", "buffer", "peak",
    ]  # fmt: skip
    assert lines[3].split() == [
        "detect", "1", "100", "100", "0", "0", "0", "0", "-", "97%", "3%", "0%", "-", "10ms", "20ms",
        "100", "0/1024", "3",
    ]  # fmt: skip
    assert lines[-2] == "elapsed 1.000s; bottleneck: detect (busy 97%)"
    assert lines[-1].startswith("advice: `detect` is busy 97%")


def test_markdown_table_for_notebooks() -> None:
    stats = run_of(make("read", 0.2), make("detect", 0.97), make("track", 0.4))
    md = stats._repr_markdown_()
    assert md.splitlines()[0].startswith("| stage | workers | in | out |")
    assert "| detect | 1 | 100 | 100 |" in md
    assert "**advice**: `detect` is busy" in md


def test_a_pipeline_picture_with_stats_annotates_stages_by_label() -> None:
    inc = stage(lambda x: x + 1, name="inc")
    pipe = inc | inc
    stats = run_of(make("inc", 0.5), make("inc#2", 0.25))
    chart = pipe.to_mermaid(stats=stats)
    assert '["inc<br/>100 items/s, busy 50%"]' in chart
    assert '["inc<br/>100 items/s, busy 25%"]' in chart
    assert "busy" not in pipe.to_mermaid()


def test_at_a_repl_the_stats_are_their_table() -> None:
    stats = run_of(make("read", 0.2), make("detect", 0.97))
    assert repr(stats) == str(stats)
    assert repr(stats).splitlines()[0].split()[:3] == ["stage", "workers", "in"]
    assert "StageStats(" not in repr(stats)  # not the dataclass's field dump
    # equality stays field by field
    assert stats == run_of(make("read", 0.2), make("detect", 0.97))
    assert stats != run_of(make("read", 0.2), make("detect", 0.96))


def test_an_html_table_for_notebooks() -> None:
    stats = run_of(make("read", 0.2), make("det<ect>", 0.97))
    page = stats._repr_html_()
    assert page == stats.to_html()
    root = ET.fromstring(page)  # well-formed: names and advice are escaped
    rows = root.findall("./table/tr")
    assert [c.text for c in rows[0]] == list(str(stats).splitlines()[0].split())
    assert [c.text for c in rows[2]][:4] == ["det<ect>", "1", "100", "100"]
    assert len(rows) == 3  # the head and one row per stage
    lines = ["".join(p.itertext()) for p in root.findall("./p")]
    assert lines[0] == "elapsed 1.000s; bottleneck: det<ect> (busy 97%)"
    assert lines[1].startswith("advice: det<ect> is busy 97%")
    assert root.find("./p/code") is not None  # `...` in advice is code


# -- logging -------------------------------------------------------------------------------------


def test_flowpipe_logs_nothing_unless_asked() -> None:
    """In a fresh interpreter without logging set up, warnings and errors print nothing."""
    code = """
import flowpipe
from flowpipe import stage

@stage(on_error="skip")
def picky(x):
    if x % 2:
        raise ValueError("odd")  # a warning per skipped input
    return x

print(picky.run(range(6)))
try:
    stage(lambda x: 1 / 0, name="broken").run([1])  # an error
except flowpipe.StageError:
    print("failed")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert (done.stdout, done.stderr) == ("[0, 2, 4]\nfailed\n", "")
