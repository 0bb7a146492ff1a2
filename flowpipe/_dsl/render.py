"""Pictures of a graph: the one-line ``print(pipe)`` form and a Mermaid flowchart."""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Callable, Mapping
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


# -- an SVG picture, for notebooks (no extra packages, no JavaScript) -----------------
#
# Left to right: a chain of steps is a row; a fan-out stacks its branches, and a
# join ends in a small circle. The graph is first turned into boxes and fans
# (so stats labels are counted once, in graph order), then sized, then drawn.

CHAR_W = 7.2  # px per character of 12 px monospace (10 px notes: 6 px)
BOX_H, NOTE_H = 26, 14  # a stage's box, and one more line for a note
GAP_X, GAP_Y, PAD, JOIN_R = 28, 12, 8, 5
Point = tuple[float, float]


@dataclasses.dataclass
class _Box:
    label: str
    note: str | None

    def size(self) -> Point:
        width = max(len(self.label) * CHAR_W, len(self.note or "") * CHAR_W * 5 / 6)
        return width + 2 * PAD, BOX_H + (NOTE_H if self.note else 0)


@dataclasses.dataclass
class _Fan:
    branches: list[list[_Box | _Fan]]
    join: str | None  # "join", "join dict", or None for a merge

    def size(self) -> Point:
        sizes = [_row_size(b) for b in self.branches]
        width = max(w for w, _ in sizes) + (GAP_X + 2 * JOIN_R if self.join else 0)
        return width, sum(h for _, h in sizes) + GAP_Y * (len(sizes) - 1)


def _row_size(row: list[_Box | _Fan]) -> Point:
    sizes = [item.size() for item in row]
    return sum(w for w, _ in sizes) + GAP_X * (len(sizes) - 1), max(h for _, h in sizes)


def _as_row(steps: tuple[Step, ...], note: Callable[[str], str | None]) -> list[_Box | _Fan]:
    from .pipeline import FanOut

    row: list[_Box | _Fan] = []
    for step in steps:
        if isinstance(step, FanOut):
            join = None if step.merge else "join" if step.keys is None else "join dict"
            row.append(_Fan([_as_row(b.steps, note) for b in step.branches], join))
        else:
            row.append(_Box(repr(step), note(step.name)))
    return row


class _Drawing:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def row(self, row: list[_Box | _Fan], x: float, y: float, ins: list[Point]) -> list[Point]:
        """Draw ``row`` from ``x`` with its middle at ``y``, fed from ``ins``; return its ends."""
        for item in row:
            w, h = item.size()
            if isinstance(item, _Box):
                self.box(x, y - h / 2, item)
                self.edges(ins, (x, y))
                ins = [(x + w, y)]
            else:
                ins = self.fan(item, x, y, ins)
            x += w + GAP_X
        return ins

    def fan(self, fan: _Fan, x: float, y: float, ins: list[Point]) -> list[Point]:
        top = y - fan.size()[1] / 2
        ends: list[Point] = []
        for branch in fan.branches:
            h = _row_size(branch)[1]
            ends.extend(self.row(branch, x, top + h / 2, ins))
            top += h + GAP_Y
        if fan.join is None:  # a merge: every branch's outputs go on as they are
            return ends
        cx = x + fan.size()[0] - JOIN_R
        self.edges(ends, (cx - JOIN_R, y))
        self.parts.append(
            f'<circle cx="{cx:.1f}" cy="{y:.1f}" r="{JOIN_R}" fill="#555">'
            f"<title>{fan.join}</title></circle>"
        )
        return [(cx + JOIN_R, y)]

    def box(self, x: float, y: float, box: _Box) -> None:
        w, h = box.size()
        self.parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="4" '
            'fill="#eef3fb" stroke="#4a6fa5"/>'
            f'<text x="{x + PAD:.1f}" y="{y + 17:.1f}" font-size="12">{html.escape(box.label)}</text>'
        )
        if box.note:
            self.parts.append(
                f'<text x="{x + PAD:.1f}" y="{y + 17 + NOTE_H:.1f}" font-size="10" '
                f'fill="#555">{html.escape(box.note)}</text>'
            )

    def edges(self, sources: list[Point], target: Point) -> None:
        tx, ty = target
        # Right, then up or down in the gap just before the target (every step is
        # GAP_X after the one before it, so that gap is empty), then an arrowhead.
        mid = tx - GAP_X / 2
        for sx, sy in sources:
            self.parts.append(
                f'<path d="M{sx:.1f},{sy:.1f} H{mid:.1f} V{ty:.1f} H{tx - 5:.1f}" '
                'fill="none" stroke="#777"/>'
                f'<path d="M{tx - 6:.1f},{ty - 4:.1f} L{tx:.1f},{ty:.1f} L{tx - 6:.1f},{ty + 4:.1f} z" '
                'fill="#777"/>'
            )


def pipeline_to_svg(pipe: Pipeline[Any, Any], notes: Mapping[str, str] | None = None) -> str:
    """The graph as an inline SVG picture; ``notes`` as for ``pipeline_to_mermaid``."""
    labels = _Mermaid(notes)  # counts repeated names as the stats do: name, name#2
    row = _as_row(pipe.steps, lambda name: labels.notes.get(labels.label(name)))
    if pipe.source is not None:
        row.insert(0, _Box(_source_label(pipe.source), None))
    drawing = _Drawing()
    width, height = _row_size(row) if row else (0.0, 0.0)
    drawing.row(row, PAD, PAD + height / 2, [])
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 2 * PAD:.0f}" '
        f'height="{height + 2 * PAD:.0f}" font-family="monospace" role="img">'
        f"<title>{html.escape(describe_pipeline(pipe))}</title>{''.join(drawing.parts)}</svg>"
    )


def pipeline_to_html(pipe: Pipeline[Any, Any], notes: Mapping[str, str] | None = None) -> str:
    """A notebook's rich display of a graph: the SVG picture, the one-line form, and
    the Mermaid source (folded) for pages that draw Mermaid."""
    mermaid = html.escape(pipeline_to_mermaid(pipe, notes))
    return (
        f'<div class="flowpipe-graph">{pipeline_to_svg(pipe, notes)}'
        f"<pre>{html.escape(describe_pipeline(pipe))}</pre>"
        f"<details><summary>Mermaid</summary><pre>{mermaid}</pre></details></div>"
    )
