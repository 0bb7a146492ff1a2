"""What stages and pipelines share: ``|`` and the running verbs.

Running is delegated to ``flowpipe._runtime`` through a lazy import, so the
graph layer never depends on a runtime at import time.

Typing: ``Composable[In, Out]`` takes ``In`` items and gives ``Out`` items, so
``In`` is contravariant and ``Out`` covariant. The overloads of ``|`` are what
type checkers see; they never change what ``|`` does at run time. A pipeline
whose input is ``Never`` needs no source: it starts with a source stage or has
one bound (``items | pipe``), so ``run()`` takes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, overload

from .._errors import GraphError
from .._typing import Never, TypeVar

if TYPE_CHECKING:
    from .._observe.stats import RunStats
    from .._runtime.core.live import LiveRun
    from .._runtime.core.run import Run
    from .pipeline import Pipeline
    from .signatures import CallsOne

In = TypeVar("In", contravariant=True)
Out = TypeVar("Out", covariant=True)
A = TypeVar("A")
T = TypeVar("T")
T1 = TypeVar("T1")
T2 = TypeVar("T2")
T3 = TypeVar("T3")
T4 = TypeVar("T4")

if TYPE_CHECKING:
    # What may stand for a stage in ``|``, a fan-out or ``merge``: A items in, T out.
    # ``type[CallsOne]`` is a decorated class as mypy sees it (it ignores what a
    # class decorator returns); pyright sees a ``StageClass``, which is ``Pipeable``.
    Piped: TypeAlias = "Pipeable[A, T] | type[CallsOne[A, T]]"
    # A plain callable too: only in fall-backs, as a stage is also callable (as its
    # function), which would make the output ambiguous.
    Branch: TypeAlias = "Piped[A, T] | Callable[[A], T]"
    # Any branch, nested fan-outs included: the fall-back when the precise overloads fail.
    AnyBranch: TypeAlias = "Branch[A, Any] | tuple[Any, ...] | Mapping[str, Any]"


class _NoSource:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<no source>"


NO_SOURCE: Any = _NoSource()


class Pipeable(Generic[In, Out]):
    """``|`` for stages, pipelines and stage classes: ``a | b`` is ``Pipeline(a, b)``."""

    __slots__ = ()

    def _as_pipeline(self) -> Pipeline[In, Out]:
        raise NotImplementedError

    @overload
    def __or__(self, other: Piped[Out, T], /) -> Pipeline[In, T]: ...
    @overload
    def __or__(
        self, other: tuple[Piped[Out, T1], Piped[Out, T2]], /
    ) -> Pipeline[In, tuple[T1, T2]]: ...
    @overload
    def __or__(
        self, other: tuple[Piped[Out, T1], Piped[Out, T2], Piped[Out, T3]], /
    ) -> Pipeline[In, tuple[T1, T2, T3]]: ...
    @overload
    def __or__(
        self,
        other: tuple[Piped[Out, T1], Piped[Out, T2], Piped[Out, T3], Piped[Out, T4]],
        /,
    ) -> Pipeline[In, tuple[T1, T2, T3, T4]]: ...
    @overload
    def __or__(self, other: tuple[AnyBranch[Out], ...], /) -> Pipeline[In, tuple[Any, ...]]: ...
    @overload
    def __or__(self, other: Mapping[str, AnyBranch[Out]], /) -> Pipeline[In, dict[str, Any]]: ...
    @overload
    def __or__(self, other: Callable[[Out], T], /) -> Pipeline[In, T]: ...
    def __or__(self, other: Any, /) -> Pipeline[In, Any]:
        from .pipeline import Pipeline, as_steps

        mine = self._as_pipeline()
        piped: Pipeline[In, Any] = Pipeline(mine.steps + as_steps(other, after=mine), mine.source)
        return piped._checked()  # pyright: ignore[reportPrivateUsage]  # a _dsl-internal hook

    @overload
    def __ror__(
        self: Pipeable[tuple[T1, T2], Out], other: tuple[Piped[A, T1], Piped[A, T2]], /
    ) -> Pipeline[A, Out]: ...
    @overload
    def __ror__(
        self: Pipeable[tuple[T1, T2, T3], Out],
        other: tuple[Piped[A, T1], Piped[A, T2], Piped[A, T3]],
        /,
    ) -> Pipeline[A, Out]: ...
    @overload
    def __ror__(
        self: Pipeable[tuple[Any, ...], Out], other: tuple[AnyBranch[A], ...], /
    ) -> Pipeline[A, Out]: ...
    @overload
    def __ror__(
        self: Pipeable[dict[str, Any], Out], other: Mapping[str, AnyBranch[A]], /
    ) -> Pipeline[A, Out]: ...
    @overload
    def __ror__(self, other: Callable[[A], In], /) -> Pipeline[A, Out]: ...
    @overload
    def __ror__(self, other: Iterable[In], /) -> Pipeline[Never, Out]: ...
    def __ror__(self, other: Any, /) -> Pipeline[Any, Out]:
        from .pipeline import Pipeline, as_steps, is_branches
        from .stage import is_iterable_source

        mine = self._as_pipeline()
        if is_iterable_source(other) and not is_branches(other):
            return mine.bind(other)
        piped: Pipeline[Any, Out] = Pipeline(as_steps(other, after=None) + mine.steps, None)
        return piped._checked()  # pyright: ignore[reportPrivateUsage]  # a _dsl-internal hook


class Composable(Pipeable[In, Out]):
    """Base of ``Stage`` and ``Pipeline``: composition with ``|`` and the run verbs."""

    __slots__ = ()
    # NumPy would otherwise apply ``|`` element-wise to ``array | stage``; this
    # makes it return NotImplemented so that ``__ror__`` binds the array as a source.
    __array_ufunc__ = None

    if not TYPE_CHECKING:  # hidden from type checkers, which would then allow any attribute

        def __setattr__(self, name: str, value: object) -> None:
            raise AttributeError(
                f"{type(self).__name__} is immutable: use | or .with_options(...) to make a new one"
            )

        def __delattr__(self, name: str) -> None:
            raise AttributeError(f"{type(self).__name__} is immutable")

    def run(
        self, source: Iterable[In] = NO_SOURCE, *, backend: str = "thread", **options: Any
    ) -> list[Out]:
        """Run to the end and return every output, in input order."""
        with self.iter(source, backend=backend, **options) as live:
            return live.collect()

    def iter(
        self, source: Iterable[In] = NO_SOURCE, *, backend: str = "thread", **options: Any
    ) -> Run[Out]:
        """Start a run and return it as a streaming iterator (bounded memory)."""
        from .._plan.compile import compile_plan
        from .._runtime.core.run import open_run

        pipe = self._as_pipeline()
        items: Iterable[Any] | None = source
        if source is NO_SOURCE:
            items = pipe.source
        elif pipe.source is not None:
            raise GraphError(f"{pipe} already has a source bound; call run() without one")
        return open_run(compile_plan(pipe, backend), items, **options)

    def start(self, *, backend: str = "thread", **options: Any) -> LiveRun[In, Out]:
        """Start a live run fed by ``put``: ``get``, iterate, ``close`` (drain), ``stats``."""
        from .._plan.compile import compile_plan
        from .._runtime.core.live import open_live

        pipe = self._as_pipeline()
        if pipe.source is not None:
            raise GraphError(f"{pipe} has a source bound; start() takes its items from put()")
        return open_live(compile_plan(pipe, backend), **options)

    def explain(self, *, backend: str = "thread") -> str:
        """How a run on ``backend`` would run the graph: one line per worker's stage, with
        its backend; stages fused into one worker (``fuse=True``) joined by ``+``."""
        from .._plan.compile import compile_plan

        return compile_plan(self._as_pipeline(), backend).explain()

    def to_mermaid(self, stats: RunStats | None = None) -> str:
        """A Mermaid flowchart of the graph, with each stage's options.

        With ``stats`` (a run's ``run.stats``), each stage also shows its
        throughput and busy share.
        """
        from .render import pipeline_to_mermaid

        notes = stats.stage_notes() if stats is not None else None
        return pipeline_to_mermaid(self._as_pipeline(), notes)

    def to_svg(self, stats: RunStats | None = None) -> str:
        """The graph as an SVG picture that flowpipe draws itself (what notebooks show).

        With ``stats`` (a run's ``run.stats``), each stage also shows its
        throughput and busy share.
        """
        from .render import pipeline_to_svg

        notes = stats.stage_notes() if stats is not None else None
        return pipeline_to_svg(self._as_pipeline(), notes)

    def _repr_markdown_(self) -> str:
        return f"```mermaid\n{self.to_mermaid()}\n```\n\n`{self!r}`"

    def _repr_html_(self) -> str:
        """Notebooks draw the graph: an inline SVG that flowpipe draws (no extra packages)."""
        from .render import pipeline_to_html

        return pipeline_to_html(self._as_pipeline())

    def __iter__(self) -> Iterator[Out]:
        """A pipeline with a bound source (``frames | detect``) or a source stage iterates."""
        return self.iter()
