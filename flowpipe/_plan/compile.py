"""Lowering a ``Pipeline`` to a ``Plan``: unique labels, one backend per stage, checks."""

from __future__ import annotations

from typing import Any

from .._dsl.pipeline import FanOut, Pipeline
from .._errors import GraphError, RunOptionError
from .._runtime.backends.base import BACKENDS
from .fuse import fuse_steps
from .plan import FanOutNode, Node, Plan, StageNode


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
    steps = fuse_steps(lowering.lower(pipe))
    return Plan(steps, tuple(lowering.stages), backend, pipe)
