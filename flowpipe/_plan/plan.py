"""The plan: a frozen, backend-resolved lowering of a ``Pipeline`` that a runtime wires up.

A plan is plain data. It holds the stages as the graph layer made them
(``StageNode.stage``: their options, how to call them), each with a unique
label and its backend, and, once ``edges.plan_edges`` has read the backends'
capabilities, how each edge carries items (``EdgePlan``). The runtime works
from the plan alone; it never imports the graph layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .._dsl.stage import Stage
    from .edges import EdgePlan


class StageNode(NamedTuple):
    """One stage as it will run: a unique label (for stats and errors) and its backend."""

    position: int  # in the plan's stages
    label: str
    stage: Stage[Any, Any]
    backend: str
    # Stages that run in this stage's worker, in turn, after it (``fuse.py``): its
    # outputs are theirs to call; the last one's outputs leave the worker.
    fused: tuple[StageNode, ...] = ()

    @property
    def keyed(self) -> bool:
        """Whether a router sends each item to its key's worker (``key=`` on several
        workers): then every worker has an input channel of its own."""
        opts = self.stage.options
        return opts.key is not None and opts.workers > 1 and self.stage.call_kind != "async"


class FanOutNode(NamedTuple):
    """A fan-out: its branches, joined into tuples (or dicts, with ``keys``) or merged."""

    branches: tuple[tuple[Node, ...], ...]
    keys: tuple[str, ...] | None
    merge: bool


Node = StageNode | FanOutNode  # a step of a plan


class Plan(NamedTuple):
    """A run's stages as they will run (records are NamedTuples: cheap to make and pickle)."""

    steps: tuple[Node, ...]
    stages: tuple[StageNode, ...]
    backend: str = ""  # the run's default backend (``run(..., backend=...)``)
    # The pipeline the plan came from, for pictures of a run (``Run.to_mermaid``).
    pipeline: Any = None
    edges: EdgePlan | None = None  # set by ``edges.plan_edges``

    @property
    def description(self) -> str:
        """The pipeline as ``print(pipe)`` shows it (log lines); made when asked for."""
        return str(self.pipeline) if self.pipeline is not None else "a pipeline"

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

    def explain(self) -> str:
        """One line per stage as it will run: its backend, and the stages fused into one
        worker (``fuse=True``) joined by ``+``."""
        lines: list[str] = []

        def walk(steps: tuple[Node, ...], indent: str) -> None:
            for step in steps:
                if isinstance(step, FanOutNode):
                    lines.append(f"{indent}{'merge' if step.merge else 'join'} of:")
                    for k, branch in enumerate(step.branches):
                        lines.append(f"{indent}  branch {k}:")
                        walk(branch, indent + "    ")
                elif step.fused:
                    names = " + ".join([step.label, *(f.label for f in step.fused)])
                    lines.append(f"{indent}{names} on {step.backend}: fused, one worker")
                else:
                    lines.append(f"{indent}{step.label} on {step.backend}")

        walk(self.steps, "")
        return "\n".join(lines)
