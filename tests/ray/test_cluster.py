"""The Ray backend on a multi-node cluster, simulated on this machine (``ray.cluster_utils``).

One cluster for the module: a head node with a "camera" and two "GPU boxes"
(``cluster_driver.py`` says which resources each node has), started with its
own driver in a subprocess, which runs each scenario and reports what it saw.
The test session's local Ray (``conftest.ray_cluster``) is left alone: a
process joins one Ray at a time, and the other Ray tests go on using it.
Deselect with ``-m "not cluster"``.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

DRIVER = Path(__file__).with_name("cluster_driver.py")
START_SECONDS = 150.0  # the head and two nodes, on a loaded machine
ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "scaling-out.md"
ANSWER = "flowpipe-cluster-driver: "  # how the driver's answer lines begin (its first argument)


class ClusterDriver:
    """The driver subprocess: ``ask`` sends one request and returns its answer."""

    def __init__(self, log: Path) -> None:
        self.log = log
        # Ray's files in a directory of their own (short: it holds sockets), so that
        # ``ray.init()`` elsewhere on this machine never finds this cluster as "current".
        self.ray_tmp = tempfile.mkdtemp(prefix="fpray")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
            "RAY_TMPDIR": self.ray_tmp,
        }
        with open(log, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(DRIVER), ANSWER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
                start_new_session=True,  # its Ray processes are in its process group
            )
        self.broken: str | None = None
        self.hello = self._answer(START_SECONDS)

    def ask(self, do: str, timeout: float = 60.0, **args: Any) -> dict[str, Any]:
        if self.broken:
            pytest.fail(f"the cluster driver is unusable: {self.broken}")
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"do": do, "args": args}) + "\n")
        self.proc.stdin.flush()
        answer = self._answer(timeout)
        if "exception" in answer:
            pytest.fail(f"{do}: the driver raised {answer['exception']}\n{self.tail()}")
        return answer

    def _answer(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.broken = f"no answer within {timeout:g} s"
                    pytest.fail(f"{self.broken}\n{self.tail()}")
                line = self.proc.stdout.readline()
                if not line:
                    self.broken = f"it exited ({self.proc.poll()})"
                    pytest.fail(f"{self.broken}\n{self.tail()}")
                if line.startswith(ANSWER):
                    answer: dict[str, Any] = json.loads(line[len(ANSWER) :])
                    return answer

    def tail(self) -> str:
        return "--- driver stderr (tail) ---\n" + self.log.read_text()[-4000:]

    def stop(self) -> None:
        """``quit`` (Ray and the cluster shut down), then end whatever is left of the
        driver's process group (all of it, if it hung or broke)."""
        try:
            if not self.broken and self.proc.poll() is None:
                self.ask("quit", timeout=60.0)
                self.proc.wait(timeout=30.0)
        finally:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own group: only its processes
            except ProcessLookupError:
                pass
            self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    pipe.close()
            shutil.rmtree(self.ray_tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterDriver]:
    started = ClusterDriver(tmp_path_factory.mktemp("cluster") / "driver.log")
    yield started
    started.stop()


def test_stages_are_placed_by_their_resources(driver: ClusterDriver, tmp_path: Path) -> None:
    seen = driver.ask("placement", journal=str(tmp_path / "actors.txt"))
    head, boxes = driver.hello["head"], driver.hello["boxes"]
    assert seen["inputs"] == list(range(16))
    assert seen["capture_nodes"] == [head]  # the only node with a camera
    # 4 detector workers of one gpu_box each, over two nodes of 2: two on each, none on the head
    assert Counter(seen["detect_actors"]) == {boxes[0]: 2, boxes[1]: 2}
    assert head not in seen["detect_nodes_seen"]


def test_a_lost_node_with_retries_loses_and_duplicates_nothing(driver: ClusterDriver) -> None:
    seen = driver.ask("lost_node", timeout=120.0, retries=1, n=40)
    assert seen["removed"] is not None, "the node was not removed while it held items"
    assert "error" not in seen, seen.get("message")
    assert seen["outputs"] == [x * 10 for x in range(40)]  # nothing lost, nothing twice, in order
    assert seen["retries"] >= 1
    assert seen["removed"] not in seen["survivors"]


def test_a_lost_node_without_retries_raises_worker_crashed_quickly(driver: ClusterDriver) -> None:
    seen = driver.ask("lost_node", timeout=120.0, retries=0, n=40)
    assert seen["removed"] is not None, "the node was not removed while it held items"
    assert seen.get("error") == "WorkerCrashed", seen
    assert seen["stage"] == "spot_work"
    assert "spot_work" in seen["message"]
    # the actor that held an input died, or (a worker whose actor was still starting)
    # a fresh actor had no node left to run on: either way the run fails, naming it
    died = "Ray actor died" in seen["message"]
    assert died or "no node of the Ray cluster can take it" in seen["message"], seen
    # The actor held several inputs, but a lost node is no input's fault: no fresh
    # actor is waited for to search for one (``WorkerDied.blameless``; before, that
    # wait lasted until Ray's health checks declared the node dead, about 15 s).
    # About 2 s here; the bound leaves room for a loaded machine.
    assert seen["seconds_after_removal"] < 12.0


def test_a_keyed_stage_keeps_every_key_on_one_actor_across_nodes(driver: ClusterDriver) -> None:
    seen = driver.ask("keyed", n=60)
    assert seen["outputs"] == seen["loop"]  # per-camera counts as the sequential loop has them
    actors: dict[str, set[tuple[str, int]]] = {}
    for cam, node, pid in seen["actors"]:
        actors.setdefault(cam, set()).add((node, pid))
    assert all(len(held) == 1 for held in actors.values()), actors  # one actor per key
    nodes = {node for held in actors.values() for node, _ in held}
    assert nodes == set(driver.hello["boxes"])  # one worker on each GPU box


def test_a_kept_actor_is_reused_and_replaced_once_its_node_is_lost(driver: ClusterDriver) -> None:
    seen = driver.ask("kept_lost_node", timeout=120.0)
    first, second, third = ({(node, pid) for _, node, pid in run} for run in seen["runs"])
    assert [x for x, _, _ in seen["runs"][2]] == [x * 2 for x in range(4)]
    assert len(first) == 1
    assert second == first  # the kept actor served the next run
    [(node, _)] = first
    assert node == seen["removed"]
    assert len(third) == 1
    assert third.pop()[0] != node  # a fresh actor, on the node that is left
    assert seen["held_while_kept"] == 0.0  # between runs the kept actor holds its slot
    assert seen["free_after_shutdown"] == 1.0  # flowpipe.shutdown() ended it
    assert seen["seconds_after_removal"] < 40.0


def test_frames_cross_nodes_without_the_driver_downloading_them(driver: ClusterDriver) -> None:
    seen = driver.ask("frames", n=12)
    assert seen["outputs"] == [2 * (x % 200 + 1) for x in range(12)]
    assert seen["handles_forwarded"] >= 24  # every frame, on both edges, as a reference
    assert seen["unpacked"] == []  # the driver never fetched a frame ...
    assert seen["inline_large"] == []  # ... nor got one back in an answer


def test_a_driver_connected_by_address_runs_the_pipeline_unchanged(driver: ClusterDriver) -> None:
    seen = driver.ask("same_as_local")
    assert seen["outputs"] == seen["local"] == [x * x for x in range(30)]
    assert seen["connected_to"] == driver.hello["address"]


def docs_cluster_example() -> tuple[str, str]:
    """The code and printed output of the docs' cluster example (the block marked as run here)."""
    text = DOCS.read_text(encoding="utf-8")
    found = re.search(
        r"<!-- skip: needs a cluster; tests/ray/test_cluster.py runs this block.*?-->\n"
        r"```python\n(?P<code>.*?)```\n\s*```text\n(?P<out>.*?)```",
        text,
        flags=re.DOTALL,
    )
    assert found, f"{DOCS.name}: the cluster example is not marked as run by this module"
    return found["code"], found["out"]


def test_the_docs_cluster_example_runs_in_a_driver_that_joins_by_ray_address(
    driver: ClusterDriver,
) -> None:
    code, printed = docs_cluster_example()
    seen = driver.ask("run_script", timeout=120.0, code=code, timeout_s=100.0)
    assert seen["returncode"] == 0, seen["stderr"]
    assert seen["stdout"] == printed
