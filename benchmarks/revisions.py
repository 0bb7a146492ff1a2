"""Two (or more) checkouts of flowpipe timed side by side, in one run.

``python -m benchmarks.revisions --tree OLD --tree NEW [--rounds N] -- BENCHMARK ARGS``

Each round runs ``python -m benchmarks BENCHMARK ARGS --repeat 1`` once per
tree, in turn (so drift of the machine spreads over both), with that tree's
``flowpipe/`` first on the import path and this checkout's benchmark code for
both. The wall times of every table row (``s median``, and on ``proc-startup``
the first-result and total times) are collected per tree, and the medians are
printed side by side with their ratio: ``speed`` above 1.00 means the later
tree is faster than the first.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = ("s median", "first result median", "total median")
_UNITS = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6}


def seconds(cell: str) -> float | None:
    m = re.fullmatch(r"([0-9.]+)\s*(s|ms|µs|us)?", cell.strip())
    if m is None:
        return None
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def parse(report: str) -> dict[tuple[str, str, str], float]:
    """(scenario, row, column) -> seconds, from the runner's Markdown."""
    found: dict[tuple[str, str, str], float] = {}
    scenario, header = "", list[str]()
    for line in report.splitlines():
        if line.startswith("## "):
            scenario, header = line[3:].split(":")[0], []
        elif line.startswith("| implementation"):
            header = [c.strip() for c in line.strip("|").split("|")]
        elif line.startswith("|") and header and not line.startswith("|--"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            for name, cell in zip(header, cells):
                if name in COLUMNS and (value := seconds(cell)) is not None:
                    found[(scenario, cells[0], name)] = value
    return found


def run_once(tree: Path, args: Sequence[str], home: Path) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *args, "--repeat", "1"],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-2000:])
    return done.stdout


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks.revisions")
    parser.add_argument("--tree", action="append", required=True, metavar="PATH")
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args(own)
    trees = [Path(t).resolve() for t in opts.tree]
    times: dict[tuple[str, str, str], dict[Path, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    with tempfile.TemporaryDirectory() as home:
        (Path(home) / "benchmarks").symlink_to(HERE)  # the same runner for every tree
        for r in range(opts.rounds):
            for tree in trees:
                print(f"round {r + 1}/{opts.rounds}: {tree.name}", file=sys.stderr, flush=True)
                for key, value in parse(run_once(tree, rest, Path(home))).items():
                    times[key][tree].append(value)
    names = [t.name for t in trees]
    print(f"command: python -m benchmarks {' '.join(rest)} (x{opts.rounds} rounds, alternated)")
    print(f"| scenario | row | time | {' | '.join(names)} | speed {names[-1]} / {names[0]} |")
    print(f"|---|---|---|{'---:|' * len(trees)}---:|")
    for (scenario, row, column), per_tree in times.items():
        medians = [statistics.median(per_tree[t]) if per_tree[t] else float("nan") for t in trees]
        cells = []
        for t, m in zip(trees, medians):
            spread = f" ({min(per_tree[t]):.3g}-{max(per_tree[t]):.3g})" if per_tree[t] else ""
            cells.append(f"{m:.3g} s{spread}")
        speed = medians[0] / medians[-1] if medians[-1] else float("nan")
        print(f"| {scenario} | {row} | {column} | {' | '.join(cells)} | {speed:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
