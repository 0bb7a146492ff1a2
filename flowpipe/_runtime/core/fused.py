"""A fused group's calls: several stages called in turn on one slice, in one worker.

::

    slice ──► first stage's SliceCaller ──► each fused stage's SliceCaller, in turn ──► outputs

The plan (``_plan/fuse.py``) makes a chain of ``fuse=True`` stages one step:
the first stage's ``StageNode`` with the others in ``fused``. Every stage keeps
its own ``SliceCaller``, so an error names that stage and the input it was
called with; the stages of a group give one output per input and never skip
(``_dsl/options.py`` refuses ``retries``/``on_error`` with ``fuse=True``), so
input ``i`` of the group is input ``i`` of every stage in it, and each stage's
items in and out are the group's. The group's time is its worker's: it is
counted on the first stage's row; the others count their items (``count_fused``).
Used by a worker thread (``loop.LocalCaller``) and by a worker elsewhere
(``remote.server.SliceServer``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..._observe.counters import WorkerCounters
from .invoke import Part, SliceCaller, close_callable
from .release import Releaser
from .release import releaser as process_releaser

if TYPE_CHECKING:
    from ..._plan.plan import StageNode


class FusedCaller(SliceCaller):
    """The first stage's ``SliceCaller`` that then calls the fused stages on its outputs."""

    __slots__ = ("followers",)

    def __init__(
        self,
        node: StageNode,
        fn: Callable[..., Any],
        counters: WorkerCounters,
        followers: list[WorkerCounters] | None = None,
        releaser: Releaser = process_releaser,
    ) -> None:
        super().__init__(node, fn, counters, releaser)
        self.followers: list[SliceCaller] = []
        try:
            for k, f in enumerate(node.fused):
                fc = followers[k] if followers is not None else WorkerCounters()
                self.followers.append(SliceCaller(f, f.stage.make_callable(), fc, releaser))
        except BaseException:
            self.close_fused()
            raise

    def call(
        self, items: list[Any], offset: int, part: Part | None = None, skip: int = 0
    ) -> list[Any]:
        """The group's outputs; nothing leaves before the slice ends (``part`` unused)."""
        out = super().call(items, offset)
        for follower in self.followers:
            out = follower.call(out, offset)
        self.left_to_skip = max(0, skip - len(out))
        return out[skip:] if skip else out

    def close_fused(self) -> None:
        """Close the fused stages' instances (class stages' ``close()``), each once."""
        errors: list[BaseException] = []
        for follower in self.followers:
            try:
                close_callable(follower.fn)
            except BaseException as exc:
                errors.append(exc)
        self.followers = []
        if errors:
            raise errors[0]


def slice_caller(
    node: StageNode,
    fn: Callable[..., Any],
    counters: WorkerCounters,
    followers: list[WorkerCounters] | None = None,
    releaser: Releaser | None = None,
) -> SliceCaller:
    """The caller of ``node``'s slices: a ``FusedCaller`` for a fused group."""
    if releaser is None:
        releaser = process_releaser
    if node.fused:
        return FusedCaller(node, fn, counters, followers, releaser)
    return SliceCaller(node, fn, counters, releaser)


def count_fused(followers: list[WorkerCounters], n_in: int, n_out: int) -> None:
    """A fused group's slice, in the rows of its fused stages: each took and gave as many
    items as the group (the last gave the group's outputs); their time is the first's."""
    for k, c in enumerate(followers):
        c.items_in += n_in
        c.items_out += n_out if k == len(followers) - 1 else n_in
        c.calls += n_in
