"""A function stage's slice on Ray answered in parts: outputs leave before a slow call ends.

::

    the Ray driver: RayWorker (``ray.py``)               the actor: _StageActor.call_parts
    ───────────────────────────────────────               ───────────────────────────────────
    call_parts.remote(items) ── a streaming call ──────►  CallingThread: SliceServer.call(items, part)
    Parts.answers (ObjectRefGenerator)                       │ the actor's releaser (``core/release.py``):
      next(): [large outputs], PartOutputs  ◄── yield ────  part(outputs computed before a slow call)
      ...                                                    │
      next(): [large outputs], SliceOutputs ◄── yield ────  the slice's last answer (or a Failure)

An actor runs one method at a time, so a slice whose answers came in parts
through ``more`` calls (a generator stage's) leaves no room for the next slice
in flight. A Ray streaming generator (``num_returns="streaming"``) answers in
parts within one call: the next slice, sent meanwhile, waits in the actor's
queue and starts as soon as this call returns, as a plain call's would. The
slice itself runs in the actor's calling thread, so that the method's own
thread can yield each answer as it comes.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..._observe.usage import ThreadClock
from ..remote.messages import Failure, PartOutputs, SliceOutputs
from ..remote.server import SliceServer, failure

Answer = PartOutputs | SliceOutputs | Failure


class Parts:
    """The caller's side: a slice sent to ``call_parts``, its answers still to read."""

    __slots__ = ("answers",)

    def __init__(self, answers: Any) -> None:
        self.answers = answers  # a Ray ObjectRefGenerator: two references per answer

    def next_answer(self, ray: Any, wait: Callable[[Any, Any], Any]) -> tuple[Any, Any]:
        """The next answer, and the reference of its large outputs' list; ``wait(ref,
        get)`` returns ``get()`` once ``ref`` is ready, as the caller waits for any answer."""
        gen = self.answers
        large = wait(gen, lambda: next(gen))

        def reply() -> Any:
            try:
                ref = next(gen)
            except StopIteration:  # the call failed (its actor died): the error took the
                ray.get(large)  # list's place, and raises here
                raise RuntimeError("a streaming call ended without its answer") from None
            return ray.get(ref)

        return wait(gen, reply), large


class CallingThread:
    """The actor's thread that calls slices answered in parts, timed by its own clock."""

    def __init__(self) -> None:
        self.clock: ThreadClock | None = None
        self.executor = ThreadPoolExecutor(1, "flowpipe-actor-calls", self._start_clock)

    def _start_clock(self) -> None:
        self.clock = ThreadClock()  # a clock times the thread it was made in

    def answers(
        self,
        server: SliceServer,
        items: list[Any],
        offset: int,
        split: Callable[[Answer], tuple[Any, Any]],
    ) -> Iterator[Any]:
        """Call the slice; yield each answer as ``split`` makes it two objects: the list
        of its large outputs first, then the reply (ready together with its list)."""
        answers: queue.SimpleQueue[Answer] = queue.SimpleQueue()

        def part(outputs: list[Any]) -> None:  # from the releaser's thread
            answers.put(server.part_outputs(outputs))

        def run() -> None:
            try:
                answers.put(server.call(items, offset, part, clock=self.clock))
            except BaseException as exc:  # whatever happens, the caller gets an answer
                answers.put(failure(server.label, None, None, exc))

        self.executor.submit(run)
        while True:
            answer = answers.get()
            reply, large = split(answer)
            yield large
            yield reply
            if not isinstance(answer, PartOutputs):
                return

    def close(self) -> None:
        """End the thread (no slice is running: an actor runs one method at a time)."""
        self.executor.submit(self._stop_clock).result()
        self.executor.shutdown()

    def _stop_clock(self) -> None:
        if self.clock is not None:
            self.clock.close()
            self.clock = None
