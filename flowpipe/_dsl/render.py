"""Pictures of a graph: the one-line ``print(pipe)`` form and a Mermaid flowchart."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pipeline import FanOut, Pipeline, Step


def _source_label(source: object) -> str:
    return f"source({type(source).__name__})"


def _describe_fan_out(step: FanOut) -> str:
    parts = [describe_pipeline(b) for b in step.branches]
    if step.merge:
        return f"merge({', '.join(parts)})"
    if step.keys is not None:
        return "{" + ", ".join(f"{k}: {p}" for k, p in zip(step.keys, parts)) + "}"
    return "(" + ", ".join(parts) + ")"


def describe_step(step: Step) -> str:
    from .pipeline import FanOut

    return _describe_fan_out(step) if isinstance(step, FanOut) else repr(step)


def describe_pipeline(pipe: Pipeline[Any, Any]) -> str:
    """``read | detect[x4] | (pose, track) | classify[batch=32]``."""
    parts = [describe_step(s) for s in pipe.steps]
    if pipe.source is not None:
        parts.insert(0, _source_label(pipe.source))
    return " | ".join(parts) if parts else "<empty pipeline>"


class _Mermaid:
    def __init__(self, notes: Mapping[str, str] | None = None) -> None:
        self.lines = ["flowchart LR"]
        self.count = 0
        self.notes = notes or {}
        self.seen: dict[str, int] = {}

    def label(self, name: str) -> str:
        """The stage's label in a run's stats: ``name``, then ``name#2``... (as the plan does)."""
        count = self.seen.get(name, 0) + 1
        self.seen[name] = count
        return name if count == 1 else f"{name}#{count}"

    def node(self, label: str, shape: str = "box") -> str:
        self.count += 1
        ident = f"n{self.count}"
        text = label.replace('"', "'")
        self.lines.append(
            f'    {ident}(("{text}"))' if shape == "circle" else f'    {ident}["{text}"]'
        )
        return ident

    def edges(self, sources: list[str], target: str) -> None:
        self.lines.extend(f"    {s} --> {target}" for s in sources)

    def steps(self, steps: tuple[Step, ...], inputs: list[str]) -> list[str]:
        from .pipeline import FanOut

        for step in steps:
            if isinstance(step, FanOut):
                ends: list[str] = []
                for branch in step.branches:
                    ends.extend(self.steps(branch.steps, inputs))
                if step.merge:
                    inputs = ends
                    continue
                joined = self.node("join" if step.keys is None else "join dict", "circle")
                self.edges(ends, joined)
                inputs = [joined]
            else:
                note = self.notes.get(self.label(step.name))
                ident = self.node(repr(step) if note is None else f"{step!r}<br/>{note}")
                self.edges(inputs, ident)
                inputs = [ident]
        return inputs


def pipeline_to_mermaid(pipe: Pipeline[Any, Any], notes: Mapping[str, str] | None = None) -> str:
    """A Mermaid flowchart; ``notes`` adds a line under stages, by label (a run's stats)."""
    chart = _Mermaid(notes)
    start = [chart.node(_source_label(pipe.source))] if pipe.source is not None else []
    chart.steps(pipe.steps, start)
    return "\n".join(chart.lines)
