"""Frames across the nodes of a Ray cluster simulated on this machine: flowpipe vs Ray by hand.

``python -m benchmarks.cluster [--frames N] [--repeat R]``

A head node and two worker nodes (``ray.cluster_utils.Cluster``: each node a
set of Ray processes with its own object store), each named by a custom
resource: ``camera`` (the head), ``box_a``, ``box_b``. Three stages, one per
node: make a 1080p RGB frame from its number (camera), brighten it (box_a),
reduce it to a checksum (box_b), so both edges carry frames between nodes.

- ``flowpipe/ray``: ``(make | brighten | checksum).run(range(N), backend="ray")``,
  each stage pinned by ``resources={"<node>": 1}``.
- ``flowpipe/ray kept``: the same pipeline with ``keep_alive=True`` on every
  stage, so its actors are made once (in the warm-up round) and serve every
  timed run, as the hand-written chain's are; ``flowpipe.shutdown()`` ends them.
- ``ray``: the hand-written chain of the ``frames`` scenario with the same
  placement: one actor per stage (``num_cpus=0`` and the same resource), each
  frame's three calls chained by object reference, ``RAY_WINDOW`` frames in
  flight; the actors are made once, before the clock (flowpipe's are made in
  every run: its own start-up is in its time).

Rounds alternate the two (round-robin), every output is checked against the
plain loop's; the table gives frames per second (median, min-max) and the
ratio of the medians. Ray's files go to a temporary directory of their own,
so the cluster is not found by ``ray.init()`` elsewhere on the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .process_peers import RAY_WINDOW, copy_readonly
from .scenarios import FRAME_SHAPE, brighten, checksum, make_frame

NODES: list[tuple[str, int]] = [("camera", 1), ("box_a", 1), ("box_b", 1)]  # (resource, CPUs)
SLOTS = 3  # of each node's resource: one for the hand-written actor, one per flowpipe row
OBJECT_STORE = 400 << 20  # bytes per node: RAY_WINDOW frames of 6 MB with room to spare
STAGES: list[Callable[[Any], Any]] = [make_frame, brighten, checksum]


class _Call:
    """One stage of the hand-written chain, as a Ray actor."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def call(self, x: Any) -> Any:
        return self.fn(copy_readonly(x))


def hand_chain(ray: Any, actors: Sequence[Any], n: int) -> Iterator[Any]:
    for start in range(0, n, RAY_WINDOW):
        refs = []
        for x in range(start, min(n, start + RAY_WINDOW)):
            ref: Any = x
            for actor in actors:
                ref = actor.call.remote(ref)
            refs.append(ref)
        yield from ray.get(refs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--repeat", type=int, default=5)
    opts = parser.parse_args(argv)
    n = opts.frames

    ray_tmp = tempfile.mkdtemp(prefix="fpbench")
    os.environ["RAY_TMPDIR"] = ray_tmp
    import ray
    from ray.cluster_utils import Cluster

    import flowpipe
    from flowpipe import stage

    log = sys.stderr
    (head_res, head_cpus), *others = NODES
    cluster: Any = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": head_cpus,
            "resources": {head_res: SLOTS},
            "object_store_memory": OBJECT_STORE,
        },
    )
    try:
        for res, cpus in others:
            cluster.add_node(
                num_cpus=cpus, resources={res: SLOTS}, object_store_memory=OBJECT_STORE
            )
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        print(f"cluster up: {len(NODES)} nodes", file=log, flush=True)

        pipe: Any = None
        kept: Any = None
        for fn, (res, _) in zip(STAGES, NODES):
            s = stage(fn, resources={res: 1})
            pipe = s if pipe is None else pipe | s
            k = stage(fn, resources={res: 1}, keep_alive=True)
            kept = k if kept is None else kept | k
        assert pipe is not None
        actor_class = ray.remote(num_cpus=0)(_Call)
        actors = [
            actor_class.options(resources={res: 1}).remote(fn)
            for fn, (res, _) in zip(STAGES, NODES)
        ]
        want = [checksum(brighten(make_frame(x))) for x in range(n)]
        jobs: dict[str, Callable[[], list[Any]]] = {
            "ray": lambda: list(hand_chain(ray, actors, n)),
            "flowpipe/ray": lambda: pipe.run(range(n), backend="ray"),
            "flowpipe/ray kept": lambda: kept.run(range(n), backend="ray"),
        }
        for job in jobs.values():  # warm-up: actors up, code imported (not timed)
            assert job() == want
        times: dict[str, list[float]] = {k: [] for k in jobs}
        for r in range(opts.repeat):
            for key, job in jobs.items():
                t0 = time.perf_counter()
                out = job()
                dt = time.perf_counter() - t0
                if out != want:
                    print(f"{key}: WRONG OUTPUT", file=log)
                    return 1
                times[key].append(dt)
            print(
                f"  round {r + 1}/{opts.repeat}: "
                + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items()),
                file=log,
                flush=True,
            )
    finally:
        from flowpipe._runtime.backends import ray as ray_backend

        flowpipe.shutdown()  # the kept row's actors
        ray_backend.pool.clear()
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)

    load = os.getloadavg()
    print(f"command: python -m benchmarks.cluster --frames {n} --repeat {opts.repeat}")
    print(
        f"python {platform.python_version()}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs; ray {ray.__version__}; load average at the end "
        f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}"
    )
    print(
        f"3 nodes ({', '.join(r for r, _ in NODES)}), one stage on each: "
        f"{n} frames of {FRAME_SHAPE}, frames cross 2 node boundaries"
    )
    print()
    print("| implementation | frames/s median | min-max | s median | vs ray |")
    print("|---|---:|---:|---:|---:|")
    base = statistics.median(times["ray"])
    for key, secs in times.items():
        med = statistics.median(secs)
        print(
            f"| {key} | {n / med:.1f} | {n / max(secs):.1f}-{n / min(secs):.1f} "
            f"| {med:.3f} | {base / med:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
