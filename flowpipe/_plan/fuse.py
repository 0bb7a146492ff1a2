"""Fusing adjacent cheap stages into one worker (``fuse=True``).

A chain ``a | b | c`` whose stages all say ``fuse=True`` (and run on one
backend) becomes one step: ``a``'s ``StageNode`` with ``fused=(b, c)``. Its
worker calls ``a`` on a slice, then ``b`` on ``a``'s outputs, then ``c``
(``_runtime/core/fused.py``), so the items cross no channel and no process
boundary between them; each stage keeps its label, its own error naming and
its own row in the stats.

Fusing pays only where a stage's work per item is small against a hand-off
(about a microsecond per item between threads, more between processes);
for costly stages it would take away the pipelining over cores, so nothing
is fused unless the user asks, stage by stage. What a fused stage may not have
(``workers`` > 1, ``batch``, ``retries``, ...) is refused when the stage is made
(``_dsl/options.py``); what only the plan knows is checked here: the stage
must be a plain function (or class) stage, not a source, a generator or async.
"""

from __future__ import annotations

from .._errors import StageOptionError
from .plan import FanOutNode, Node, StageNode


def _fusable(node: StageNode) -> bool:
    """Whether ``node`` said ``fuse=True``; refuses a kind of stage that cannot be fused."""
    if not node.stage.options.fuse:
        return False
    kind = node.stage.call_kind
    if kind != "function" or node.stage.is_source:
        what = "a source" if node.stage.is_source else f"a {kind} stage"
        raise StageOptionError(
            node.label, "fuse", f"True: {what} cannot be fused (only one output per input can)"
        )
    return True


def fuse_steps(steps: tuple[Node, ...]) -> tuple[Node, ...]:
    """``steps`` with every chain of adjacent fusable stages of one backend as one step."""
    out: list[Node] = []
    for step in steps:
        if isinstance(step, FanOutNode):
            branches = tuple(fuse_steps(b) for b in step.branches)
            out.append(step._replace(branches=branches))
            continue
        last = out[-1] if out else None
        if (
            isinstance(last, StageNode)
            and _fusable(step)
            and _fusable(last)
            and last.backend == step.backend
        ):
            out[-1] = last._replace(fused=(*last.fused, step))
        else:
            _fusable(step)  # a kind that cannot be fused is refused even alone
            out.append(step)
    return tuple(out)
