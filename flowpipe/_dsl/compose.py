"""What stages and pipelines share: ``|`` and the running verbs.

Running is delegated to ``flowpipe._runtime`` through a lazy import, so the
graph layer never depends on a runtime at import time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from .._runtime.run import Run
    from .pipeline import Pipeline

In = TypeVar("In")
Out = TypeVar("Out")


class _NoSource:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<no source>"


NO_SOURCE: Any = _NoSource()


class Composable(Generic[In, Out]):
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

    def _as_pipeline(self) -> Pipeline[In, Out]:
        raise NotImplementedError

    def __or__(self, other: Any) -> Pipeline[In, Any]:
        from .pipeline import Pipeline, as_steps

        mine = self._as_pipeline()
        return Pipeline(mine.steps + as_steps(other, after=mine), mine.source)._checked()

    def __ror__(self, other: Any) -> Pipeline[Any, Out]:
        from .pipeline import Pipeline, as_steps, is_branches
        from .stage import is_iterable_source

        mine = self._as_pipeline()
        if is_iterable_source(other) and not is_branches(other):
            return mine.bind(other)
        return Pipeline(as_steps(other, after=None) + mine.steps, None)._checked()

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
        from .._runtime.run import open_run

        return open_run(self._as_pipeline(), source, backend=backend, **options)

    def to_mermaid(self) -> str:
        """A Mermaid flowchart of the graph, with each stage's options."""
        from .render import pipeline_to_mermaid

        return pipeline_to_mermaid(self._as_pipeline())

    def _repr_markdown_(self) -> str:
        return f"```mermaid\n{self.to_mermaid()}\n```\n\n`{self!r}`"

    def __iter__(self) -> Iterator[Out]:
        """A pipeline with a bound source (``frames | detect``) or a source stage iterates."""
        return self.iter()
