"""A Ray driver that runs flowpipe pipelines on a simulated multi-node cluster.

``test_cluster.py`` starts this script once per module, as a subprocess: it
starts a head node and worker nodes with ``ray.cluster_utils.Cluster`` (every
node a set of Ray processes on this machine, with its own resources), connects
to it the way a user's program does (``ray.init(address=cluster.address)``),
and then answers requests, one JSON line each on stdin: ``{"do": NAME, "args":
{...}}``, one JSON line back (starting with the prefix given as argument, on the stdout it was given;
whatever Ray or the stages print goes to stderr). Each request runs one
scenario below and reports what it saw; the test asserts on it.

Why a separate driver process: a process connects to one Ray at a time, and
the test session has its own local Ray (``conftest.ray_cluster``) that the
other Ray tests keep using; here the cluster and its driver live and die
together, apart from it. Ray's node processes are this driver's children, so
stopping it (``quit``, or killing its process group) leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import flowpipe
from flowpipe import WorkerCrashed, stage
from flowpipe._runtime.backends import ray as ray_backend
from flowpipe._transport.buffer import payload_bytes

# The nodes: a head with the camera, two "GPU boxes" (2 slots each), each also
# named by a resource of its own so that a stage can be pinned to one of them.
HEAD: dict[str, Any] = {"num_cpus": 1, "resources": {"camera": 1}}
BOXES: list[dict[str, Any]] = [
    {"num_cpus": 1, "resources": {"gpu_box": 2, "box_a": 1}},
    {"num_cpus": 1, "resources": {"gpu_box": 2, "box_b": 1}},
]
OBJECT_STORE = 100 << 20  # bytes per node: a few small frames at a time
FRAME_SHAPE = (512, 512, 3)  # 768 KiB: a large buffer (kept in the object store), cheap to make
WAIT = 60.0  # seconds the driver waits on its own helpers before giving up


def node_id() -> str:
    return str(ray.get_runtime_context().get_node_id())


def free(resource: str) -> float:
    """How much of ``resource`` the cluster has free now, as Ray sees it."""
    untyped: Any = ray  # ``available_resources`` has no annotations
    return float(untyped.available_resources().get(resource, 0.0))


class _Gate:
    """Holds the slices of one node (the first to reach it) until that node is gone.

    ``arrive(node)`` returns at once for any other node; the first caller's node
    is the one to remove, and ``doomed()`` says which, once it has items in flight.
    """

    def __init__(self) -> None:
        self.doomed_node: str | None = None
        self.chosen = asyncio.Event()

    async def arrive(self, node: str) -> None:
        if self.doomed_node is None:
            self.doomed_node = node
            self.chosen.set()
        if node == self.doomed_node:
            await asyncio.Event().wait()  # never set: this call ends with its node

    async def doomed(self) -> str:
        await self.chosen.wait()
        assert self.doomed_node is not None
        return self.doomed_node


Gate: Any = ray.remote(num_cpus=0)(_Gate)


class Driver:
    def __init__(self) -> None:
        cluster: Any = Cluster(
            initialize_head=True,
            head_node_args={**HEAD, "object_store_memory": OBJECT_STORE},
        )
        self.cluster = cluster
        self.boxes = [
            self.cluster.add_node(**spec, object_store_memory=OBJECT_STORE) for spec in BOXES
        ]
        self.cluster.wait_for_nodes()
        ray.init(address=self.cluster.address, log_to_driver=False)
        self.head = self.cluster.head_node.node_id

    def hello(self) -> dict[str, Any]:
        return {
            "address": self.cluster.address,
            "head": self.head,
            "boxes": [n.node_id for n in self.boxes],
        }

    def placement(self, journal: str) -> dict[str, Any]:
        """A camera stage on the head, then 4 detector workers of one gpu_box each."""

        def capture(x: int) -> tuple[int, str]:
            return x, node_id()

        class Detect:
            def __init__(self) -> None:  # once per worker (actor): it says where it is
                self.node = node_id()
                with open(journal, "a") as f:
                    f.write(self.node + "\n")

            def __call__(self, item: tuple[int, str]) -> tuple[int, str, str]:
                return (*item, self.node)

        pipe = stage(capture, resources={"camera": 1}) | stage(
            Detect, workers=4, resources={"gpu_box": 1}
        )
        out = pipe.run(range(16), backend="ray")
        with open(journal) as f:
            actors = f.read().split()
        return {
            "inputs": [x for x, _, _ in out],
            "capture_nodes": sorted({cam for _, cam, _ in out}),
            "detect_nodes_seen": sorted({det for _, _, det in out}),
            "detect_actors": actors,
        }

    def lost_node(self, retries: int, n: int) -> dict[str, Any]:
        """Workers on nodes of their own ("spot"); the node that first gets input #5 or
        later is killed (its processes, at once) while it holds that slice."""
        cluster = self.cluster
        spots = [
            cluster.add_node(num_cpus=1, resources={"spot": 2}, object_store_memory=OBJECT_STORE)
            for _ in range(2 if retries else 1)
        ]
        cluster.wait_for_nodes()
        on_head = NodeAffinitySchedulingStrategy(self.head, soft=False)
        gate = Gate.options(scheduling_strategy=on_head).remote()
        removed: dict[str, Any] = {}

        def work(x: int) -> int:
            # 20 ms a call keeps each slice to one input (Ray's slices aim at 10 ms):
            # a lost actor that held several inputs is first searched for the one
            # that killed it, on a fresh actor, which needs a node with "spot" (see
            # docs/scaling-out.md, "When a node dies").
            time.sleep(0.02)
            if x >= 5:
                ray.get(gate.arrive.remote(node_id()))
            return x * 10

        def remove() -> None:
            try:
                doomed = ray.get(gate.doomed.remote(), timeout=WAIT)
            except ray.exceptions.GetTimeoutError:
                return
            node = next(s for s in spots if s.node_id == doomed)
            cluster.remove_node(node, allow_graceful=False)  # a lost machine: no goodbye
            spots.remove(node)
            removed["node"] = doomed
            removed["at"] = time.monotonic()

        killer = threading.Thread(target=remove)
        killer.start()
        spot = stage(work, name="spot_work", workers=2, resources={"spot": 1}, retries=retries)
        result: dict[str, Any] = {}
        try:
            with spot.iter(range(n), backend="ray") as run:
                result["outputs"] = list(run)
            result["retries"] = run.stats["spot_work"].retries
        except WorkerCrashed as exc:
            result["error"] = type(exc).__name__
            result["stage"] = exc.stage
            result["message"] = str(exc)
        ended = time.monotonic()
        killer.join()
        result["removed"] = removed.get("node")
        result["seconds_after_removal"] = ended - removed["at"] if removed else None
        result["survivors"] = [s.node_id for s in spots]
        ray.kill(gate)
        for node in spots:
            cluster.remove_node(node)
        return result

    def keyed(self, n: int) -> dict[str, Any]:
        """A keyed class stage with two workers of a whole GPU box each: one per node."""

        class Track:
            def __init__(self) -> None:
                self.counts: dict[str, int] = {}
                self.actor = (node_id(), os.getpid())

            def __call__(self, item: tuple[str, int]) -> tuple[str, int, int, str, int]:
                cam, x = item
                self.counts[cam] = self.counts.get(cam, 0) + 1  # per-camera state
                return (cam, x, self.counts[cam], *self.actor)

        items = [(f"cam{x % 6}", x) for x in range(n)]
        track = stage(Track, workers=2, key=lambda item: item[0], resources={"gpu_box": 2})
        out = track.run(items, backend="ray")
        loop = Track()  # the sequential loop, one instance for every camera
        return {
            "outputs": [list(row[:3]) for row in out],
            "loop": [list(loop(item)[:3]) for item in items],
            "actors": [[cam, node, pid] for cam, _, _, node, pid in out],
        }

    def kept_lost_node(self) -> dict[str, Any]:
        """A ``keep_alive`` stage on one of two nodes: reused by the next run; that node is
        killed; the run after it works on a fresh actor; ``shutdown()`` frees its node."""
        cluster = self.cluster
        spots = [
            cluster.add_node(
                num_cpus=1, resources={"keep_spot": 1}, object_store_memory=OBJECT_STORE
            )
            for _ in range(2)
        ]
        cluster.wait_for_nodes()

        def where(x: int) -> tuple[int, str, int]:
            return x * 2, node_id(), os.getpid()

        kept = stage(where, name="kept", keep_alive=True, resources={"keep_spot": 1})
        seen: dict[str, Any] = {}
        try:
            seen["runs"] = [kept.run(range(4), backend="ray") for _ in range(2)]
            doomed = next(s for s in spots if s.node_id == seen["runs"][0][0][1])
            cluster.remove_node(doomed, allow_graceful=False)  # a lost machine: no goodbye
            spots.remove(doomed)
            # ... and everything on it: the node's worker processes notice the raylet's
            # end only later, and until then the actor would still answer its caller.
            with contextlib.suppress(ProcessLookupError):
                os.kill(seen["runs"][0][0][2], signal.SIGKILL)
            t0 = time.monotonic()
            seen["runs"].append(kept.run(range(4), backend="ray"))
            seen["seconds_after_removal"] = time.monotonic() - t0
            seen["held_while_kept"] = free("keep_spot")
        finally:
            flowpipe.shutdown()
        deadline = time.monotonic() + WAIT  # Ray frees a killed actor's resources soon after
        while free("keep_spot") < 1 and time.monotonic() < deadline:
            time.sleep(0.1)  # polling Ray's view of the cluster: there is nothing to wait on
        seen["free_after_shutdown"] = free("keep_spot")
        seen["removed"] = doomed.node_id
        for node in spots:
            cluster.remove_node(node)
        return seen

    def frames(self, n: int) -> dict[str, Any]:
        """make (camera, head) | brighten (box_a) | checksum (box_b): frames cross nodes."""
        unpacked: list[int] = []
        inline: list[int] = []  # large payloads that came back to the driver in a reply
        forwarded: list[int] = []
        original_unpack = ray_backend.RayHandle.unpack
        original_reply = ray_backend.RayWorker.reply
        original_lift = ray_backend.lift_handles

        def unpack(handle: Any) -> Any:
            unpacked.append(handle.nbytes)
            return original_unpack(handle)

        def reply(worker: Any, offset: int) -> Any:
            answer = original_reply(worker, offset)
            inline.extend(
                b
                for x in answer.outputs
                if not isinstance(x, ray_backend.RayHandle) and (b := payload_bytes(x)) >= 64 << 10
            )
            return answer

        def lift(items: list[Any]) -> tuple[list[Any], list[Any]]:
            lifted, refs = original_lift(items)
            forwarded.append(len(refs))
            return lifted, refs

        def make(x: int) -> Any:
            return np.full(FRAME_SHAPE, x % 200, dtype=np.uint8)

        def brighten(f: Any) -> Any:
            return f + 1

        def checksum(f: Any) -> int:
            return int(f[0, 0, 0]) + int(f[-1, -1, -1])

        pipe = (
            stage(make, resources={"camera": 1})
            | stage(brighten, resources={"box_a": 1})
            | stage(checksum, resources={"box_b": 1})
        )
        patches: list[tuple[Any, str, Callable[..., Any]]] = [
            (ray_backend.RayHandle, "unpack", unpack),
            (ray_backend.RayWorker, "reply", reply),
            (ray_backend, "lift_handles", lift),
        ]
        for owner, name, patched in patches:
            setattr(owner, name, patched)
        try:
            out = pipe.run(range(n), backend="ray")
        finally:
            ray_backend.RayHandle.unpack = original_unpack  # type: ignore[method-assign]
            ray_backend.RayWorker.reply = original_reply  # type: ignore[method-assign]
            ray_backend.lift_handles = original_lift
        return {
            "outputs": out,
            "unpacked": unpacked,
            "inline_large": inline,
            "handles_forwarded": sum(forwarded),
        }

    def same_as_local(self) -> dict[str, Any]:
        """A pipeline written for one machine, unchanged, on this connected cluster."""

        @stage(workers=2)
        def square(x: int) -> int:
            return x * x

        def where(x: int) -> tuple[int, str]:
            return x, node_id()

        pipe = square | stage(where, workers=3)
        out = pipe.run(range(30), backend="ray")
        return {
            "outputs": [x for x, _ in out],
            "local": [x for x, _ in pipe.run(range(30))],
            "connected_to": ray.get_runtime_context().gcs_address,
        }

    def run_script(self, code: str, timeout_s: float) -> dict[str, Any]:
        """``code`` in a fresh interpreter that joins this cluster by ``RAY_ADDRESS``."""
        env = {**os.environ, "RAY_ADDRESS": self.cluster.address}
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        return {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr[-3000:]}

    def quit(self) -> dict[str, Any]:
        ray_backend.pool.clear()
        ray.shutdown()
        self.cluster.shutdown()
        return {}


def main() -> None:
    prefix = sys.argv[1]  # how an answer line begins: the test reads only those
    answers = os.fdopen(os.dup(1), "w")  # the answers' own channel ...
    os.dup2(2, 1)  # ... and whatever else is printed goes to stderr
    driver = Driver()

    def answer(value: dict[str, Any]) -> None:
        answers.write(prefix + json.dumps(value) + "\n")
        answers.flush()

    answer(driver.hello())
    for line in sys.stdin:
        request = json.loads(line)
        name = request["do"]
        try:
            value = getattr(driver, name)(**request.get("args", {}))
        except BaseException as exc:  # reported to the test, which fails with it
            value = {"exception": f"{type(exc).__name__}: {exc}"}
        answer(value)
        if name == "quit":
            return


if __name__ == "__main__":
    main()
