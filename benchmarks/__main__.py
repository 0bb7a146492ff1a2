"""``python -m benchmarks``: flowpipe side by side with its peers, in one run.

Usage::

    python -m benchmarks                      # every scenario, 5 repeats
    python -m benchmarks --quick              # smoke run: small sizes, 1 repeat (< 60 s)
    python -m benchmarks --scenario trivial   # one scenario (or a family: --scenario sleep)
    python -m benchmarks --scenario realtime  # the 30 fps latency run (only when named; 60 s a row)
    python -m benchmarks --scenario proc      # the process scenarios (only when named; ~5-6 minutes)
    python -m benchmarks --scenario model     # a real pose model pipeline, 340 frames (only when named)
    python -m benchmarks --peer flowpipe --peer queue/1 --repeat 9

Results go to stdout as Markdown tables (paste them into benchmarks/README.md);
progress goes to stderr. The exit status is 0 unless an implementation gave a
wrong output or raised: speed targets are reported, never enforced here, and
never by unit tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence

from .measure import measure, measured_sleep
from .model import run as run_model
from .peers import PEERS, prepare_all, select_peers, version_of
from .process_scenarios import KEYS as PROC_KEYS
from .process_scenarios import NAMES as PROC_NAMES
from .process_scenarios import is_proc_name, run_family
from .realtime import DEFAULT_SECONDS, QUICK_SECONDS
from .realtime import run_all as run_realtime
from .report import ScenarioReport
from .scenarios import SLEEP_SECONDS, build_scenarios, select

DEFAULT_REPEAT = 5


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    names = [s.name for s in build_scenarios(quick=False)]
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time flowpipe side by side with a plain loop, queue chains, pypeln and mpire.",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help=f"scenario to run, repeatable: {', '.join(names)} (or 'sleep' for both); default: all; "
        "'realtime' (latency of a 30 fps feed, benchmarks/realtime.py) runs only when named, "
        f"and so do the process scenarios: {', '.join(PROC_NAMES)} (or 'proc' for all of them) "
        "and 'model' (a pose model pipeline, benchmarks/model.py)",
    )
    parser.add_argument(
        "--peer",
        action="append",
        metavar="KEY",
        help=f"implementation to time, repeatable: {', '.join(p.key for p in PEERS)}; "
        f"on the process scenarios: {', '.join(PROC_KEYS)}; "
        "the plain loop always runs (it is the reference); default: all",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        metavar="N",
        help=f"timed runs per implementation (default {DEFAULT_REPEAT}, on the process "
        "scenarios 3 and 5 on proc-startup; 1 with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: small sizes and 1 repeat (< 60 s)"
    )
    parser.add_argument(
        "--realtime-seconds",
        type=float,
        default=None,
        metavar="S",
        help=f"length of each realtime run (default {DEFAULT_SECONDS:g}; {QUICK_SECONDS:g} with --quick)",
    )
    args = parser.parse_args(argv)
    if args.realtime_seconds is None:
        args.realtime_seconds = QUICK_SECONDS if args.quick else DEFAULT_SECONDS
    if args.realtime_seconds <= 0:
        parser.error("--realtime-seconds must be positive")
    args.proc_repeat = args.repeat  # None: the process scenarios' own defaults
    if args.repeat is None:
        args.repeat = 1 if args.quick else DEFAULT_REPEAT
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def revision() -> str:
    """The commit of the checkout flowpipe is imported from, with "+changes" when its
    flowpipe/ differs from it (two revisions can be timed by the same runner)."""
    import flowpipe

    here = os.path.dirname(os.path.abspath(flowpipe.__file__))

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown (not a git checkout)"
    return commit + (" +changes in flowpipe/" if git("status", "--porcelain", ".") else "")


def header(argv: Sequence[str], repeat: int, quick: bool, throughput: bool = True) -> str:
    """The run's header; ``throughput=False`` (only the realtime scenario) leaves out repeats."""
    versions = ", ".join(f"{p} {version_of(p)}" for p in ("flowpipe", "pypeln", "mpire", "spdl"))
    repeats = f"; repeats: {repeat}" if throughput else ""
    lines = [
        "# flowpipe benchmarks",
        "",
        f"command: python -m benchmarks {shlex.join(argv)}".rstrip(),
        f"date: {time.strftime('%Y-%m-%d %H:%M')}{repeats}{' (quick)' if quick else ''}",
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        f"versions: {versions}; flowpipe revision {revision()}",
    ]
    if throughput:
        lines.append(
            "throughput = items through all 4 stages per second, wall time of the whole run "
            "(threads started and stopped included); ratios compare medians"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    named = args.scenario or []
    realtime, model = "realtime" in named, "model" in named
    procs = [n for n in named if is_proc_name(n)]
    others = [n for n in named if n not in ("realtime", "model") and not is_proc_name(n)]
    only_named = (realtime or procs or model) and not others
    scenarios = [] if only_named else select(build_scenarios(args.quick), others)
    peers = select_peers(args.peer, also_known=PROC_KEYS)
    print(header(argv, args.repeat, args.quick, throughput=bool(scenarios)), flush=True)
    real_sleep = None
    if any(s.sleep_s for s in scenarios):
        real_sleep = measured_sleep(SLEEP_SECONDS)
        print(
            f"time.sleep({SLEEP_SECONDS}) takes {real_sleep * 1e3:.3f} ms here (median of 200 calls)"
        )
    failed = False
    for scenario in scenarios:
        jobs, notes = prepare_all(scenario, peers)
        results = measure(scenario, jobs, args.repeat)
        print()
        print(ScenarioReport(scenario, results, real_sleep).render())
        for note in notes:
            print(f"note: {note}")
        for m in results:
            if m.error is not None:
                failed = True
                print(f"error: {m.peer.key} in {scenario.name}: {m.error}")
        sys.stdout.flush()
    if procs:
        proc_failed = run_family(procs, args.quick, args.proc_repeat, args.peer)
        failed = failed or proc_failed
    if realtime:
        report, realtime_failed = run_realtime(args.realtime_seconds)
        print()
        print(report, flush=True)
        failed = failed or realtime_failed
    if model:
        report, model_failed = run_model(args.quick, args.proc_repeat)
        print()
        print(report, flush=True)
        failed = failed or model_failed
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
