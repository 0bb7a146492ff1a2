"""Seeing what runs (issue 6): stats, bottleneck and advice, progress bars, pictures, logging.

Timings here come from stages that sleep (simulated work), never from sleeping
to wait for something: waits use gates and events.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import FileGate, dropping_run

from flowpipe import MissingExtra, StageError, stage

GATE_TIMEOUT = 10.0


# -- stats: every field, on every backend ---------------------------------------------------


def test_stats_give_every_field_of_each_stage(backend: str) -> None:
    @stage
    def double(x: int) -> int:
        return 2 * x

    @stage(workers=2, buffer=4)
    def nap(x: int) -> int:
        time.sleep(0.002)  # the work
        return x

    with (double | nap).iter(range(20), backend=backend) as run:
        assert list(run) == [2 * x for x in range(20)]
    stats = run.stats
    s = stats["nap"]
    assert (s.items_in, s.items_out, s.calls, s.workers) == (20, 20, 20, 2)
    assert (s.dropped, s.skipped, s.errors, s.retries) == (0, 0, 0, 0)
    assert s.busy_s >= 20 * 0.0019  # 20 calls of at least 2 ms (histogram precision: 5%)
    assert s.latency_p50_s is not None
    assert s.latency_p99_s is not None
    assert 0.0019 <= s.latency_p50_s <= s.latency_p99_s
    assert min(s.waiting_s, s.blocked_s) >= 0
    assert 0 < s.busy_share <= 1
    assert 0 <= s.waiting_share <= 1
    assert 0 <= s.blocked_share <= 1
    assert s.throughput == pytest.approx(20 / stats.elapsed_s)
    assert (s.buffer_fill, s.buffer_size) == (0, 4)
    assert 1 <= s.buffer_peak <= 4
    assert (s.backend, s.batch, s.source) == (backend, None, False)
    assert stats["double"].latency_p50_s is not None

    data = json.loads(json.dumps(stats.to_dict()))  # plain data, ready for JSON logs
    row = data["stages"][1]
    assert row["name"] == "nap"
    assert row["latency_p50_s"] > 0
    assert row["buffer_peak"] >= 1


def test_shares_leave_out_the_wait_for_the_first_input(backend: str) -> None:
    """Busy, waiting and blocked split each worker's time from its first input on:
    a slow start of the source is not counted as waiting."""

    def slow_start() -> Iterator[int]:
        time.sleep(0.3)  # the source takes a while to produce its first item
        yield from range(10)

    @stage
    def nap(x: int) -> int:
        time.sleep(0.005)  # the work
        return x

    with nap.iter(slow_start(), backend=backend) as run:
        assert list(run) == list(range(10))
    s = run.stats["nap"]
    total = s.busy_share + s.waiting_share + s.blocked_share
    assert s.waiting_s < 0.3, str(run.stats)
    assert total <= 1.001, str(run.stats)


def test_stats_are_live_while_the_run_goes_on_and_final_after(backend: str) -> None:
    more = threading.Event()

    def numbers() -> Iterator[int]:
        yield from range(5)
        assert more.wait(GATE_TIMEOUT)
        yield from range(5, 8)

    @stage
    def inc(x: int) -> int:
        return x + 1

    with inc.iter(numbers(), backend=backend) as run:
        assert [next(run) for _ in range(5)] == [1, 2, 3, 4, 5]
        # The counters follow each slice just after its outputs were handed on.
        deadline = time.monotonic() + GATE_TIMEOUT
        while run.stats["inc"].items_out < 5:
            assert time.monotonic() < deadline
        live = run.stats
        assert (live["inc"].items_in, live["inc"].items_out) == (5, 5)
        assert str(live).startswith("stage")  # a live table prints too
        more.set()
        assert list(run) == [6, 7, 8]
    final = run.stats
    assert (final["inc"].items_in, final["inc"].items_out) == (8, 8)
    assert final.elapsed_s > live.elapsed_s
    assert run.stats == final  # once ended, the numbers stay put


def test_a_generator_waiting_for_room_downstream_is_blocked_not_busy(backend: str) -> None:
    """A generator stage, and a source stage, feeding a slower stage: the slower stage
    is the bottleneck in every run; the generator's time suspended at ``yield`` (the
    next buffer is full) is blocked, and its p50 is the time to make one output."""

    @stage
    def read(path: int) -> Iterator[int]:
        yield from range(100)  # quick: a video decoded faster than it is analysed

    @stage
    def camera() -> Iterator[int]:
        yield from range(100)

    @stage(buffer=2)
    def slow(x: int) -> int:
        time.sleep(0.005)  # the work: longer in all than starting a worker process
        return x

    for run_no in range(3):
        for name in ("read", "camera"):
            run = (
                (read | slow).iter([0], backend=backend)
                if name == "read"
                else (camera | slow).iter(backend=backend)
            )
            with run:
                assert list(run) == list(range(100))
            stats = run.stats
            gen = stats[name]
            assert stats.bottleneck is not None, str(stats)
            assert stats.bottleneck.name == "slow", (run_no, str(stats))
            assert stats.why.startswith("slow ("), stats.why
            assert gen.blocked_share > 0.5, str(stats)
            assert gen.busy_share < 0.25, str(stats)
            assert gen.latency_p50_s is not None
            assert gen.latency_p50_s < 0.005, str(stats)  # per output, not the generator's life
            assert gen.items_out == 100


def test_a_run_that_went_into_start_up_says_so(backend: str) -> None:
    """A class stage whose ``__init__`` (a model load) takes most of the run: its start
    is shown, and the run says start-up limited it, not a 0%-busy stage."""

    @stage
    class Model:
        def __init__(self) -> None:
            time.sleep(0.6)  # loading a model

        def __call__(self, x: int) -> int:
            return x

    @stage
    def add_offset(x: int) -> int:
        return x + 1

    with (Model() | add_offset).iter(range(20), backend=backend) as run:
        assert list(run) == list(range(1, 21))
    stats = run.stats
    assert stats["Model"].startup_s >= 0.6
    assert stats["add_offset"].startup_s < stats["Model"].startup_s
    assert stats.starting is stats.bottleneck is stats["Model"]
    assert stats.why.startswith("Model (start-up "), stats.why
    assert "start-up" in stats.advice[0]
    assert "`keep_alive=True`" in stats.advice[0]
    assert "start" in str(stats).splitlines()[0].split()


def test_worker_processes_report_their_memory_and_cpu(backend: str) -> None:
    """Each stage's CPU seconds; for workers in processes of their own, their resident
    memory too (stages in the caller's process share its memory: no number)."""

    class Hold:
        def __init__(self) -> None:
            self.block = b"x" * (64 << 20)  # a model's weights: 64 MiB, written, resident

        def __call__(self, x: int) -> int:
            t = time.thread_time()
            while time.thread_time() - t < 0.002:  # 2 ms of CPU
                pass
            return x

    with stage(Hold)().iter(range(20), backend=backend) as run:
        assert list(run) == list(range(20))
    stats = run.stats
    s = stats["Hold"]
    assert s.cpu_s is not None
    assert s.cpu_s >= 20 * 0.002 * 0.9, str(stats)
    head = str(stats).splitlines()[0].split()
    if s.in_caller:
        assert s.rss_bytes is None
        assert "rss" not in head
    else:
        assert s.rss_bytes is not None
        assert s.rss_bytes >= 64 << 20, str(stats)
        assert head[-2:] == ["proc-cpu", "rss"]
        assert str(stats).splitlines()[2].endswith("MB")
        assert s.worker_cpu_s is not None
        assert s.worker_cpu_s >= s.cpu_s * 0.9


# -- bottleneck and advice -----------------------------------------------------------------


def test_advice_names_the_bottleneck_and_suggests_workers(backend: str) -> None:
    @stage
    def parse(x: int) -> int:
        return x

    @stage
    def detect(x: int) -> int:
        time.sleep(0.004)  # the slow stage
        return x

    @stage
    def label(x: int) -> int:
        return x

    with (parse | detect | label).iter(range(40), backend=backend) as run:
        assert list(run) == list(range(40))
    stats = run.stats
    assert stats.bottleneck is not None
    assert stats.bottleneck.name == "detect"
    assert stats.why.startswith("detect (busy ")
    assert stats["detect"].busy_share > 0.75
    tips = stats.advice
    assert tips, str(stats)
    assert tips[0].startswith("`detect` is busy"), tips
    if backend == "thread" or stats.cpus > 1:  # a process per core: one core has no room
        assert re.search(r"try `workers=[2-4]`", tips[0]), tips
    others = [t for t in tips if "`parse`" in t or "`label`" in t]
    if stats["parse"].in_caller:
        assert others == [], tips
    else:  # microsecond calls in worker processes: each is told to stay on threads
        assert len(others) == 2, tips
        assert all("keep it on threads" in t for t in others), tips
    assert f"advice: {tips[0]}" in str(stats)


def test_advice_follows_what_the_stage_itself_used_and_the_cores(backend: str) -> None:
    """A stage that sleeps is told to add workers, even beyond the cores, the same in
    every run; a stage that computes (pure Python) never gets more workers than the
    machine has cores."""

    @stage
    def nap(x: int) -> int:
        time.sleep(0.003)  # waits like I/O
        return x

    @stage
    def spin(x: int) -> int:
        t = time.thread_time()
        while time.thread_time() - t < 0.003:  # 3 ms of this thread's own CPU: pure Python
            pass
        return x

    seen = set()
    for _ in range(3):
        with nap.iter(range(40), backend=backend) as run:
            assert list(run) == list(range(40))
        tips = [t for t in run.stats.advice if "to start" not in t]  # a slow process start
        assert tips, str(run.stats)
        assert tips[0].startswith("`nap` is busy"), str(run.stats)
        assert "mostly waiting (sleep, I/O" in tips[0], str(run.stats)
        assert "try `workers=4`" in tips[0], str(run.stats)  # not bounded by the cores
        seen.add(re.sub(r"\d+%", "N%", tips[0]))
    assert len(seen) == 1, seen  # identical runs, the same advice

    with spin.iter(range(150), backend=backend) as run:
        assert list(run) == list(range(150))
    stats = run.stats
    s = stats["spin"]
    assert s.cpu_s is not None
    assert s.cpu_s >= 150 * 0.003 * 0.9, str(stats)
    tip = next(t for t in stats.advice if "to start" not in t)
    assert tip.startswith("`spin` is busy"), str(stats)
    assert "computes" in tip, str(stats)
    wanted = re.search(r"workers=(\d+)", tip)
    if wanted is not None:
        assert int(wanted[1]) <= stats.cpus, (tip, stats.cpus)
    else:
        assert "more workers need more cores" in tip


def test_following_the_advice_makes_the_run_faster() -> None:
    @stage
    def detect(x: int) -> int:
        time.sleep(0.004)  # waits like I/O: threads overlap it
        return x

    with detect.iter(range(30)) as run:
        list(run)
    wanted = re.search(r"workers=(\d+)", run.stats.advice[0])
    assert wanted, run.stats.advice
    with detect.with_options(workers=int(wanted[1])).iter(range(30)) as faster:
        list(faster)
    assert faster.stats.elapsed_s < run.stats.elapsed_s


def test_no_advice_for_a_balanced_pipeline(backend: str) -> None:
    def nap(x: int) -> int:
        time.sleep(0.01)  # every stage does the same work, long next to a call's overhead
        return x

    pipe = stage(nap, name="a") | stage(nap, name="b") | stage(nap, name="c")
    with pipe.iter(range(40), backend=backend) as run:
        assert list(run) == list(range(40))
    # (each sleeping stage on worker processes is told it would do as well on threads)
    tips = [t for t in run.stats.advice if "keep it on threads" not in t]
    assert tips == [], str(run.stats)


def test_advice_says_when_the_source_limits_the_run(backend: str, tmp_path: Path) -> None:
    started = FileGate(tmp_path / "started")

    def slow_source() -> Iterator[int]:
        yield 0
        assert started.wait()  # the stage is up (its worker process too)
        for x in range(1, 12):
            time.sleep(0.01)  # a camera, a socket: the items come slowly
            yield x

    @stage
    def inc(x: int) -> int:
        if x == 0:
            started.open()
        return x + 1

    with inc.iter(slow_source(), backend=backend) as run:
        assert list(run) == list(range(1, 13))
    # (a worker process's start, and a stage too cheap for worker processes, told apart)
    tips = [t for t in run.stats.advice if "to start" not in t and "on threads" not in t]
    assert len(tips) == 1, (tips, str(run.stats))
    assert "the source" in tips[0]
    assert "workers=" not in tips[0]


def test_advice_says_when_the_consumer_limits_the_run(backend: str) -> None:
    @stage(buffer=2)
    def inc(x: int) -> int:
        return x + 1

    with inc.iter(range(15), backend=backend) as run:
        for _ in run:
            time.sleep(0.01)  # the caller's own slow work on each result
    # (a worker process's start, and a stage too cheap for worker processes, told apart)
    tips = [t for t in run.stats.advice if "to start" not in t and "on threads" not in t]
    assert len(tips) == 1, (tips, str(run.stats))
    assert "reads the results" in tips[0]


def test_advice_suggests_batch_for_a_bottleneck_of_short_calls(backend: str) -> None:
    @stage
    def parse(x: int) -> int:
        return x

    @stage
    def score(x: int) -> int:
        total = 0
        for k in range(2000):  # short, CPU-bound calls: under a millisecond
            total += k * x
        return total

    with (parse | score).iter(range(1000), backend=backend) as run:
        assert len(list(run)) == 1000
    tips = run.stats.advice
    assert any(t.startswith("`score`'s calls are short") and "batch=" in t for t in tips), tips


def test_advice_suggests_a_bigger_batch_when_batches_are_quick() -> None:
    @stage
    def first(x: int) -> int:
        return x

    @stage(batch=4)
    def embed(xs: list[int]) -> list[int]:
        total = 0
        for k in range(2000):  # quick batches: well under a millisecond a call
            total += k
        return xs

    with (first | embed).iter(range(2000)) as run:
        list(run)
    tips = run.stats.advice
    assert any("try `batch=16`" in t for t in tips), (tips, str(run.stats))


# -- progress bars ---------------------------------------------------------------------------


def test_progress_shows_a_bar_with_items_rate_and_bottleneck(
    backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tqdm", reason='progress bars need the "progress" extra')

    @stage
    def inc(x: int) -> int:
        return x + 1

    assert inc.run(range(50), backend=backend, progress=True) == list(range(1, 51))
    captured = capsys.readouterr()
    assert captured.out == ""  # the bar goes to stderr
    final = captured.err.rstrip().split("\r")[-1]
    assert re.match(
        r"flowpipe: 100%.* 50/50 \[.* items/s, bottleneck: inc \((busy|start-up)", final
    ), final


def test_progress_without_a_known_length_counts_items(
    backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tqdm", reason='progress bars need the "progress" extra')

    @stage
    def twice(x: int) -> Iterator[int]:
        yield x
        yield x

    with twice.iter(iter(range(10)), backend=backend, progress=True) as run:
        assert len(list(run)) == 20
    final = capsys.readouterr().err.rstrip().split("\r")[-1]
    assert "flowpipe: 20 items" in final, final


def test_no_progress_prints_nothing(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    @stage
    def inc(x: int) -> int:
        return x + 1

    assert inc.run(range(50), backend=backend) == list(range(1, 51))
    assert inc.run(range(5), backend=backend, progress=False) == list(range(1, 6))
    assert capsys.readouterr() == ("", "")


def test_progress_without_tqdm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import tqdm.auto now fails
    monkeypatch.setitem(sys.modules, "tqdm", None)
    threads_before = threading.active_count()

    @stage
    def inc(x: int) -> int:
        return x + 1

    with pytest.raises(
        MissingExtra, match=re.escape("pip install -e '.[progress]' in the flowpipe checkout")
    ):
        inc.iter(range(5), progress=True)
    with pytest.raises(ImportError, match=re.escape("flowpipe[progress]")):
        inc.run(range(5), progress=True)
    assert threading.active_count() == threads_before  # nothing was started
    assert inc.run(range(3)) == [1, 2, 3]  # without a bar all is well


# -- pictures ----------------------------------------------------------------------------------


def test_after_a_run_the_picture_shows_throughput_and_busy_share(backend: str) -> None:
    @stage(workers=2)
    def detect(x: int) -> int:
        return x

    @stage
    def inc(x: int) -> int:
        return x + 1

    pipe = detect | (inc, inc) | stage(lambda pair: pair[0] + pair[1], name="add")
    with pipe.iter(range(10), backend=backend) as run:
        assert list(run) == [2 * x + 2 for x in range(10)]
    chart = run.to_mermaid()
    assert chart == pipe.to_mermaid(stats=run.stats)
    for name in ("detect\\[x2\\]", "inc", "inc", "add"):
        assert re.search(rf'\["{name}<br/>[\d.kM]+ items/s, busy \d+%"\]', chart), chart
    assert chart.count("busy") == 4  # both inc branches (labels inc, inc#2) are annotated
    assert pipe.to_mermaid().count("busy") == 0  # without stats: the plain graph

    shown = run._repr_markdown_()  # what a notebook displays for a run
    assert shown.startswith("```mermaid\nflowchart LR")
    assert "| stage | workers |" in shown
    assert "| inc#2 |" in shown
    assert "bottleneck: " in shown
    assert run.stats._repr_markdown_() == run.stats.to_markdown()


def test_a_run_says_what_it_is(backend: str) -> None:
    @stage(workers=2)
    def double(x: int) -> int:
        return 2 * x

    @stage
    def boom(x: int) -> int:
        raise ValueError(x)

    run = double.iter(range(5), backend=backend)
    assert repr(run) == f"<flowpipe.Run double[x2] on {backend}: running, 0 items out>"
    assert run.collect() == [0, 2, 4, 6, 8]
    assert repr(run) == f"<flowpipe.Run double[x2] on {backend}: finished, 5 items out>"
    page = run._repr_html_()  # a notebook: the summary, the annotated graph, the table
    assert page.startswith(f"<div><p><code>&lt;flowpipe.Run double[x2] on {backend}: finished")
    assert re.search(r"<text [^>]*>[\d.kM]+ items/s, busy \d+%</text>", page), page
    assert '<div class="flowpipe-stats"><table>' in page

    with double.iter(range(100), backend=backend) as early:
        next(early)
    assert re.fullmatch(
        rf"<flowpipe.Run double\[x2\] on {backend}: closed early, \d+ items? out>", repr(early)
    )
    failing = (double | boom).iter(range(3), backend=backend)
    with pytest.raises(StageError):
        failing.collect()
    assert repr(failing) == (
        f"<flowpipe.Run double[x2] | boom on {backend}: failed in stage 'boom', 0 items out>"
    )


def test_a_live_run_says_what_it_is(backend: str) -> None:
    @stage
    def inc(x: int) -> int:
        return x + 1

    live = inc.start(backend=backend)
    assert repr(live) == f"<flowpipe.LiveRun inc on {backend}: live, 0 items out>"
    live.put(1)
    assert live.get(timeout=GATE_TIMEOUT) == 2
    assert repr(live) == f"<flowpipe.LiveRun inc on {backend}: live, 1 item out>"
    live.close()
    assert repr(live) == f"<flowpipe.LiveRun inc on {backend}: closed, 1 item out>"
    live.stop()
    assert repr(live) == f"<flowpipe.LiveRun inc on {backend}: stopped, 1 item out>"
    assert live._repr_html_().startswith("<div><p><code>&lt;flowpipe.LiveRun inc on ")


# -- logging -------------------------------------------------------------------------------


def test_logs_start_and_finish(backend: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="flowpipe")

    @stage
    def inc(x: int) -> int:
        return x + 1

    inc.run(range(5), backend=backend)
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "flowpipe"]
    assert messages[0] == (logging.INFO, f"run starting: inc (backend={backend})")
    assert any(
        level == logging.INFO and re.match(r"run finished in \d+\.\d+s: 5 outputs read", text)
        for level, text in messages
    ), messages


def test_logs_an_early_stop(backend: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flowpipe")

    @stage
    def inc(x: int) -> int:
        return x + 1

    with inc.iter(range(10_000), backend=backend) as run:
        next(run)
    assert any(r.getMessage().startswith("run stopped early") for r in caplog.records)


def test_logs_a_failed_run_as_an_error(backend: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flowpipe")

    @stage
    def broken(x: int) -> int:
        raise ValueError("no good")

    with pytest.raises(StageError):
        broken.run(range(3), backend=backend)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in caplog.records]
    assert errors[0].getMessage().startswith("run failed")
    assert "no good" in errors[0].getMessage()


def test_logs_retries_and_skips(backend: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flowpipe")

    class Flaky:
        def __init__(self) -> None:
            self.seen: set[int] = set()

        def __call__(self, x: int) -> int:
            if x == 3:
                raise ValueError("never works")
            if x not in self.seen:  # every other item works on its second try
                self.seen.add(x)
                raise ValueError("first try fails")
            return x

    flaky = stage(Flaky, retries=1, on_error="skip")()
    assert flaky.run(range(5), backend=backend) == [0, 1, 2, 4]
    summary = [r for r in caplog.records if "failed calls" in r.getMessage()]
    assert len(summary) == 1
    assert summary[0].levelno == logging.INFO
    assert summary[0].getMessage() == "stage 'Flaky': 6 failed calls, 5 retries, 1 inputs skipped"
    if backend == "thread":  # in this process, each retry and skip is logged as it happens
        assert any(
            r.levelno == logging.WARNING and "skipped" in r.getMessage() for r in caplog.records
        )


def test_logs_drops_once_and_their_count_at_the_end(
    backend: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO, logger="flowpipe")
    out, dropped = dropping_run(backend, "drop_newest", FileGate(tmp_path / "gate"), 100)
    assert dropped > 0
    assert len(out) + dropped == 100
    texts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stage")]
    assert texts == [
        "stage 'held': input buffer full (2 items), dropping inputs (overflow='drop_newest')",
        f"stage 'held' dropped {dropped} of its inputs in all (overflow='drop_newest')",
    ]
