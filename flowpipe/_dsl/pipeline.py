"""``Pipeline``: an immutable chain of steps (stages and fan-outs), maybe with a bound source."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sized
from typing import TYPE_CHECKING, Any, TypeGuard, cast, overload

from .._errors import GraphError
from .._record import record
from .._typing import Never
from .compose import T1, T2, T3, T4, A, Composable, In, Out
from .stage import Stage, StageClass, as_stage, is_iterable_source

if TYPE_CHECKING:
    from .compose import Branch, Piped


@record  # a frozen dataclass, without importing dataclasses (_record.py)
class FanOut:
    """Each input goes to every branch; a join zips the results, a merge interleaves them."""

    branches: tuple[Pipeline[Any, Any], ...]
    keys: tuple[str, ...] | None = None  # a dict join: the branch names
    merge: bool = False


Step = Stage[Any, Any] | FanOut


def is_branches(obj: object) -> TypeGuard[tuple[Any, ...] | Mapping[Any, Any]]:
    """A tuple/dict whose members are all stages, pipelines or callables is a fan-out."""
    # isinstance leaves the members' type unknown: they are checked one by one below
    if isinstance(obj, tuple):
        members: Iterable[object] = cast("tuple[object, ...]", obj)
    elif isinstance(obj, Mapping):
        members = cast("Mapping[object, object]", obj).values()
    else:
        return False
    members = list(members)
    return bool(members) and all(
        isinstance(m, (Composable, StageClass, tuple, Mapping)) or callable(m) for m in members
    )


# isinstance, with the item types Any: pyright's isinstance leaves them unknown.
def _is_pipeline(obj: object) -> TypeGuard[Pipeline[Any, Any]]:
    return isinstance(obj, Pipeline)


def _is_composable(obj: object) -> TypeGuard[Composable[Any, Any]]:
    return isinstance(obj, Composable)


def as_pipeline(obj: Any) -> Pipeline[Any, Any]:
    if _is_pipeline(obj):
        return obj
    pipe: Pipeline[Any, Any] = Pipeline(as_steps(obj, after=None))
    return pipe._checked()  # pyright: ignore[reportPrivateUsage]  # a _dsl-internal hook


def not_one_to_one(pipe: Pipeline[Any, Any]) -> str | None:
    """Why a pipeline may not give exactly one output per input, in order, or None."""
    if pipe.source is not None:
        return "it has a bound source"
    for step in pipe.steps:
        if isinstance(step, FanOut):
            if step.merge:
                return "it contains a merge, which gives one output per branch"
            continue
        o = step.options
        if step.is_source:
            return f"stage {step.name!r} takes no argument (a source)"
        if step.call_kind == "generator":
            return f"stage {step.name!r} is a generator function (0..n outputs per input)"
        if o.window is not None:
            return f"stage {step.name!r} has window= (one output per {o.stride} inputs)"
        if o.on_error != "raise":
            return f"stage {step.name!r} has on_error={o.on_error!r}, which can skip items"
        if o.overflow != "block":
            return f"stage {step.name!r} has overflow={o.overflow!r}, which can drop items"
        if not o.ordered:
            return f"stage {step.name!r} has ordered=False"
    return None


def _fan_out(obj: tuple[Any, ...] | Mapping[Any, Any]) -> FanOut:
    if isinstance(obj, Mapping):
        keys = tuple(obj)
        if not all(isinstance(k, str) for k in keys):
            raise GraphError(f"fan-out dict keys must be strings, got {keys!r}")
        branches = tuple(as_pipeline(v) for v in obj.values())
    else:
        keys, branches = None, tuple(as_pipeline(v) for v in obj)
    for label, branch in zip(keys or range(len(branches)), branches):
        reason = not_one_to_one(branch)
        if reason:
            raise GraphError(
                f"join branch {label!r} ({branch}) must give exactly one output per input, "
                f"in order, but {reason}; use flowpipe.merge(...) to interleave outputs instead"
            )
    return FanOut(branches, keys)


def _empty_fan_out(obj: object) -> str | None:
    """``"tuple"`` or ``"dict"`` when ``obj`` is an empty one: a fan-out with no branch."""
    if isinstance(obj, (tuple, Mapping)) and not cast("Sized", obj):
        return "tuple" if isinstance(obj, tuple) else "dict"
    return None


def as_steps(obj: Any, *, after: Pipeline[Any, Any] | None) -> tuple[Step, ...]:
    """Turn the right-hand side of ``|`` into steps; raise GraphError naming what is wrong."""
    if _is_composable(obj):
        # _as_pipeline: a hook shared by the _dsl modules, kept out of the public API
        other = obj._as_pipeline()  # pyright: ignore[reportPrivateUsage]
        if other.source is not None:
            raise GraphError(f"{other} already has a source bound and cannot follow another step")
        return other.steps
    if is_branches(obj):  # a tuple or a mapping
        return (_fan_out(obj),)
    if isinstance(obj, StageClass) or callable(obj):
        return (as_stage(obj),)
    where = f"after {after}" if after is not None else "in a pipeline"
    kind = _empty_fan_out(obj)
    if kind is not None:
        raise GraphError(
            f"cannot compose an empty {kind} {where}: a fan-out needs at least one branch, "
            "as in a | (b, c)"
        )
    raise GraphError(
        f"cannot compose {obj!r} ({type(obj).__name__}) {where}: expected a stage, a pipeline, "
        "a callable, or a tuple/dict of branches"
    )


class Pipeline(Composable[In, Out]):
    """An immutable chain of steps. Building one never runs user code or starts anything."""

    __slots__ = ("source", "steps")

    def __init__(self, steps: tuple[Step, ...], source: Iterable[Any] | None = None) -> None:
        object.__setattr__(self, "steps", steps)  # a Pipeline is immutable once made
        object.__setattr__(self, "source", source)

    steps: tuple[Step, ...]
    source: Iterable[Any] | None

    def _as_pipeline(self) -> Pipeline[In, Out]:
        return self

    def _checked(self) -> Pipeline[In, Out]:
        for i, step in enumerate(self.steps):
            if i and isinstance(step, Stage) and step.is_source:
                raise GraphError(
                    f"stage {step.name!r} takes no argument, so it can only be the first stage"
                )
        return self

    def bind(self, source: Iterable[In]) -> Pipeline[Never, Out]:
        """This pipeline with ``source`` as its input (what ``source | pipe`` does)."""
        if not is_iterable_source(source):
            raise GraphError(f"a source must be iterable, got {type(source).__name__}")
        return Pipeline(self.steps, source)

    @property
    def stages(self) -> tuple[Stage[Any, Any], ...]:
        """Every stage, in graph order (branches included)."""
        found: list[Stage[Any, Any]] = []
        for step in self.steps:
            if isinstance(step, FanOut):
                for branch in step.branches:
                    found.extend(branch.stages)
            else:
                found.append(step)
        return tuple(found)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pipeline):
            return NotImplemented
        return self.steps == other.steps and self.source is other.source

    def __hash__(self) -> int:
        return hash((self.steps, id(self.source)))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Pipeline, (self.steps, self.source))

    def __repr__(self) -> str:
        from .render import describe_pipeline

        return describe_pipeline(self)


@overload
def merge(b1: Piped[A, T1], b2: Piped[A, T2], /) -> Pipeline[A, T1 | T2]: ...
@overload
def merge(b1: Piped[A, T1], b2: Piped[A, T2], b3: Piped[A, T3], /) -> Pipeline[A, T1 | T2 | T3]: ...
@overload
def merge(
    b1: Piped[A, T1], b2: Piped[A, T2], b3: Piped[A, T3], b4: Piped[A, T4], /
) -> Pipeline[A, T1 | T2 | T3 | T4]: ...
@overload
def merge(*branches: Branch[A, Any]) -> Pipeline[A, object]: ...
def merge(*branches: Any) -> Pipeline[Any, Any]:
    """Fan-out whose outputs are interleaved as separate items, not joined.

    Each input goes to every branch; every output of every branch goes on, each
    branch's outputs in order, the branches interleaved as they finish.
    Branches may be any pipelines (generators and filters included).
    """
    if len(branches) < 2:
        raise GraphError(f"merge needs at least two branches, got {len(branches)}")
    return Pipeline((FanOut(tuple(as_pipeline(b) for b in branches), None, merge=True),))
