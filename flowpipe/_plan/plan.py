"""The plan: a frozen, backend-resolved lowering of a ``Pipeline`` that a runtime wires up.

A plan is plain data. It holds the stages as the graph layer made them
(``StageNode.stage``: their options, how to call them), each with a unique
label and its backend, and, once ``edges.plan_edges`` has read the backends'
capabilities, how each edge carries items (``EdgePlan``). The runtime works
from the plan alone; it never imports the graph layer.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._dsl.stage import Stage
    from .edges import EdgePlan


@dataclasses.dataclass(frozen=True)
class StageNode:
    """One stage as it will run: a unique label (for stats and errors) and its backend."""

    index: int
    label: str
    stage: Stage[Any, Any]
    backend: str


@dataclasses.dataclass(frozen=True)
class FanOutNode:
    branches: tuple[tuple[Node, ...], ...]
    keys: tuple[str, ...] | None
    merge: bool


Node = StageNode | FanOutNode


@dataclasses.dataclass(frozen=True)
class Plan:
    steps: tuple[Node, ...]
    stages: tuple[StageNode, ...]
    description: str = ""  # the pipeline as ``print(pipe)`` shows it (log lines)
    backend: str = ""  # the run's default backend (``run(..., backend=...)``)
    # The pipeline the plan came from, for pictures of a run (``Run.to_mermaid``).
    pipeline: Any = dataclasses.field(default=None, compare=False, repr=False)
    edges: EdgePlan | None = None  # set by ``edges.plan_edges``

    @property
    def source_stage(self) -> StageNode | None:
        """The first stage when it takes no argument: it produces the items itself."""
        first = self.steps[0] if self.steps else None
        if isinstance(first, StageNode) and first.stage.is_source:
            return first
        return None

    @property
    def wired_steps(self) -> tuple[Node, ...]:
        """The steps that run as stages: all but a source stage (a feeder thread reads it)."""
        return self.steps[1:] if self.source_stage is not None else self.steps

    @property
    def backends(self) -> frozenset[str]:
        return frozenset(n.backend for n in self.stages)
