"""Test helpers shared by the suites (``tests/`` is on the import path: see pyproject).

Kept in a module of its own, not in a test file, so that worker processes and
Ray actors can import it by name when a stage that holds a gate is shipped.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from flowpipe import stage

GATE_TIMEOUT = 10.0  # seconds a gate waits before failing the test (never reached when it works)


class Journal:
    """Lines appended by stages or handlers wherever they run (thread, process, actor);
    one ``write`` is one atomic append."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def write(self, line: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def lines(self, prefix: str = "") -> list[str]:
        """The lines written so far that start with ``prefix``, without it."""
        try:
            text = Path(self.path).read_text()
        except FileNotFoundError:
            return []
        return [line[len(prefix) :] for line in text.splitlines() if line.startswith(prefix)]


class FileGate:
    """A gate the test opens and stages wait on, wherever they run (thread, process, actor).

    Only a path travels to the worker. ``wait`` polls for the file: the poll is a
    condition check, not a guess at how long anything takes.
    """

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def open(self) -> None:
        Path(self.path).touch()

    def wait(self, timeout: float = GATE_TIMEOUT) -> bool:
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.path):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True


def dropping_run(backend: str, overflow: str, gate: FileGate, n: int) -> tuple[list[int], int]:
    """Run a stage "held" (``buffer=2``, ``overflow``) whose first call waits until
    the whole source of ``n`` items was offered to it; return its outputs and drops."""

    def offered() -> Iterator[int]:
        yield from range(n)
        gate.open()  # every item was put (or dropped): now let the stage go on

    class HeldFirst:
        def __init__(self) -> None:
            self.first = True

        def __call__(self, x: int) -> int:
            if self.first:
                self.first = False
                gate.wait()
            return x

    with stage(HeldFirst, buffer=2, overflow=overflow, name="held")().iter(
        offered(), backend=backend
    ) as run:
        out = list(run)
    return out, run.stats["held"].dropped


def crash_once(marker: Path, bad: int) -> Callable[[int], int]:
    """A stage function that kills its worker process the first time it meets ``bad``
    (the marker file remembers across processes), and returns ``x * 10``."""

    def fn(x: int) -> int:
        if x == bad and not marker.exists():
            marker.write_text("crashed")
            os._exit(9)
        return x * 10

    return fn


class FileBarrier:
    """Each stage instance's first call waits here until ``parties`` instances have
    made theirs, wherever they run: so ``parties`` workers surely share the input."""

    def __init__(self, folder: Path, parties: int) -> None:
        self.folder = str(folder)
        self.parties = parties

    def arrive(self) -> None:
        Path(self.folder).mkdir(exist_ok=True)
        fd, _ = tempfile.mkstemp(dir=self.folder)
        os.close(fd)
        deadline = time.monotonic() + GATE_TIMEOUT
        while len(os.listdir(self.folder)) < self.parties:
            if time.monotonic() > deadline:
                raise TimeoutError("the other workers never arrived")
            time.sleep(0.001)


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (one not yet reaped has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
