"""The plan: a frozen, backend-resolved lowering of a ``Pipeline`` that a runtime wires up."""

from __future__ import annotations

import dataclasses
from typing import Any

from .._dsl.pipeline import FanOut, Pipeline
from .._dsl.stage import Stage
from .._errors import GraphError, RunOptionError

BACKENDS = ("thread", "process", "ray")


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

    @property
    def source_stage(self) -> StageNode | None:
        """The first stage when it takes no argument: it produces the items itself."""
        first = self.steps[0] if self.steps else None
        if isinstance(first, StageNode) and first.stage.is_source:
            return first
        return None

    @property
    def backends(self) -> frozenset[str]:
        return frozenset(n.backend for n in self.stages)


class _Lowering:
    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.stages: list[StageNode] = []
        self.seen: dict[str, int] = {}

    def label(self, name: str) -> str:
        count = self.seen.get(name, 0) + 1
        self.seen[name] = count
        return name if count == 1 else f"{name}#{count}"

    def lower(self, pipe: Pipeline[Any, Any]) -> tuple[Node, ...]:
        nodes: list[Node] = []
        for step in pipe.steps:
            if isinstance(step, FanOut):
                branches = tuple(self.lower(b) for b in step.branches)
                nodes.append(FanOutNode(branches, step.keys, step.merge))
            else:
                backend = step.options.backend or self.backend
                node = StageNode(len(self.stages), self.label(step.name), step, backend)
                self.stages.append(node)
                nodes.append(node)
        return tuple(nodes)


def compile_plan(pipe: Pipeline[Any, Any], backend: str) -> Plan:
    """Lower ``pipe`` for a run whose default backend is ``backend``."""
    if backend not in BACKENDS:
        choices = ", ".join(repr(b) for b in BACKENDS)
        raise RunOptionError(f"backend={backend!r}: expected one of {choices}")
    if not pipe.steps:
        raise GraphError("cannot run an empty pipeline")
    lowering = _Lowering(backend)
    steps = lowering.lower(pipe)
    return Plan(steps, tuple(lowering.stages))
