"""How each edge of a run carries items, decided from what each backend can do.

Every backend declares its ``Capabilities`` (``backends/<name>``); this pass
reads them and the graph, and returns an ``EdgePlan``, plain data that the
runtime carries out. It never asks which backend a stage is on, only what
that backend can do. An edge carries one of:

- **items**: plain objects, in the caller's process (every edge, by default);
- **handles**: an edge through the caller's process may hold large outputs
  as handles (a shared-memory frame, an object reference) that the caller
  opens only where code of its own needs the value (``EdgePlan.handles``:
  some stage's backend ``returns_handles``);
- **sealed slices** (``EdgePlan.sealed_in``/``sealed_out``), between two
  stages of a backend that ``seals_slices``: the writer's worker seals its
  whole output slice into one entry, the caller forwards it without opening
  it, and the reader's worker opens it. The caller then pays per slice, not
  per item, so cheap stages are not held back by the caller's one interpreter.

An edge carries sealed slices when

- its reading stage takes plain slices: a function or generator stage without
  ``batch``, ``window`` or ``key`` (those need the items one by one in the
  caller), with the default buffer and ``overflow`` (a drop policy counts and
  drops single items); and
- every writer into it is a stage on the same backend that seals all of its
  outputs, so every entry of the channel is a sealed slice (a keyed stage
  never seals: it hands on each run's outputs under the run's number). A stage
  seals only if every edge it writes to carries sealed slices (a fan-out sends
  the same entry to every branch); the source, a join and the caller read or
  write items.

Such a channel holds ``SEALED_PER_WORKER`` entries per reading worker, at
least ``SEALED_MIN`` (each is a slice of the writer's, so far more work than a
brief preemption of either stage costs: two pipelined stages keep busy), but
only about ``buffer.AUTO_BYTES`` of large buffers; its offsets still count
items, so errors name the right input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from .plan import FanOutNode, Node, Plan, StageNode

SEALED_PER_WORKER = 8
SEALED_MIN = 16

_OTHER = -1  # a writer or reader that is not a stage: the source, a join, the caller


class Capabilities(NamedTuple):
    """What a backend can do, as far as planning a run is concerned."""

    in_caller: bool
    """Its workers run in the caller's process (they share its interpreter)."""
    on_this_machine: bool
    """Its workers run on this machine (its cores bound how many help)."""
    returns_handles: bool
    """Large outputs come back as handles, opened in the caller only where needed."""
    seals_slices: bool
    """Two of its stages can pass whole output slices sealed, past the caller."""


class EdgePlan(NamedTuple):
    """How a run's edges carry items (plain data; see the module docstring)."""

    handles: bool = False
    """Items in the caller's process may be handles: what runs there opens them."""
    sealed_in: frozenset[int] = frozenset()
    """Stages (by position) whose input edge carries sealed slices."""
    sealed_out: frozenset[int] = frozenset()
    """Stages (by position) that seal their output slices."""

    def sealed(self, position: int) -> tuple[bool, bool]:
        """Whether stage ``position``'s input and output edges carry sealed slices."""
        return position in self.sealed_in, position in self.sealed_out

    def describe(self) -> str:
        """One line per edge kind, for people (``print(plan.edges.describe())``)."""
        return (
            f"handles through the caller: {'yes' if self.handles else 'no'}; "
            f"sealed into stages {sorted(self.sealed_in)}, out of {sorted(self.sealed_out)}"
        )


def sealed_capacity(workers: int) -> int:
    """Entries a channel of sealed slices holds, for a reader with ``workers`` workers."""
    return max(SEALED_MIN, SEALED_PER_WORKER * workers)


class _Links:
    """Who writes into which stage's input, and where each stage writes (by position)."""

    def __init__(self) -> None:
        self.writers: dict[int, list[int]] = {}
        self.targets: dict[int, list[int]] = {}

    def wire(self, steps: tuple[Node, ...], downstream: list[int]) -> list[int]:
        """Walk ``steps`` right to left, as the run wires them; their entry readers."""
        for step in reversed(steps):
            downstream = self._step(step, downstream)
        return downstream

    def _step(self, step: Node, downstream: list[int]) -> list[int]:
        if isinstance(step, FanOutNode):
            if step.merge:  # every branch writes into the same readers
                return [e for branch in step.branches for e in self.wire(branch, downstream)]
            self.written_by(_OTHER, downstream)  # a join's rows
            return [e for branch in step.branches for e in self.wire(branch, [_OTHER])]
        self.targets[step.position] = downstream
        self.written_by(step.position, downstream)
        return [step.position]

    def written_by(self, writer: int, readers: list[int]) -> None:
        for r in readers:
            if r != _OTHER:
                self.writers.setdefault(r, []).append(writer)


def _reads_sealed(node: StageNode, caps: Capabilities) -> bool:
    opts = node.stage.options
    return (
        caps.seals_slices
        and node.stage.call_kind in ("function", "generator")
        and opts.batch is None
        and not opts.window
        and opts.buffer is None
        and opts.overflow == "block"
        and opts.timeout is None  # timed: one call per slice, which a sealed slice is not
        and not node.keyed  # its router computes keys in the caller: it needs items
    )


def plan_edges(plan: Plan, capabilities: Mapping[str, Capabilities]) -> Plan:
    """``plan`` with its ``EdgePlan``; ``capabilities``: of every backend the plan names."""
    links = _Links()
    for entry in links.wire(plan.wired_steps, [_OTHER]):
        links.written_by(_OTHER, [entry])  # the source's feeder, or a live run's put()
    nodes = {n.position: n for n in plan.stages}

    def carries(reader: int, writer: StageNode) -> bool:
        if reader == _OTHER:
            return False
        node = nodes[reader]
        return (
            node.backend == writer.backend
            and not writer.keyed  # a keyed worker hands each run's outputs on by itself
            and _reads_sealed(node, capabilities[node.backend])
            and _OTHER not in links.writers.get(reader, [])
        )

    sealing = {
        i
        for i, targets in links.targets.items()
        if targets and all(carries(t, nodes[i]) for t in targets)
    }
    # A stage that cannot seal spoils every edge it writes to, and so every
    # other writer of those edges: repeat until nothing changes.
    changed = True
    while changed:
        changed = False
        for i in sorted(sealing):
            if not all(w in sealing for t in links.targets[i] for w in links.writers[t]):
                sealing.discard(i)
                changed = True
    sealed_in = frozenset(t for i in sealing for t in links.targets[i])
    handles = any(capabilities[n.backend].returns_handles for n in plan.stages)
    edges = EdgePlan(handles, sealed_in, frozenset(sealing))
    return plan._replace(edges=edges)
