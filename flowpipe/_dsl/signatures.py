"""What type checkers see of ``@stage``: the options and the shapes of decorated callables.

Nothing here runs: ``stage.py`` imports this module only for type checking. The
decorator's overloads pick a shape from the options given and the function's
signature, and give ``Stage[In, Out, Fn]``, where ``Fn`` is what a direct call
(``parse("3")``) accepts and returns:

=================================  ======================  ===================
decorated                          options                 ``Stage[In, Out]``
=================================  ======================  ===================
``(A) -> B``                       -                       ``Stage[A, B]``
``(A) -> Iterator[B]`` (generator)  -                       ``Stage[A, B]``
``async (A) -> B``                 -                       ``Stage[A, B]``
``() -> Iterable[B]`` (source)     -                       ``Stage[Never, B]``
``(list[A]) -> list[B]``           ``batch=``              ``Stage[A, B]``
``(tuple[A, ...]) -> B``           ``window=``             ``Stage[A, B]``
a class, ``__call__(A) -> B``      any of the above        ``StageClass[A, B]``
=================================  ======================  ===================
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Hashable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, overload

from .._typing import Never, TypeVar
from .options import BackendName, OnError, Overflow

if TYPE_CHECKING:
    from .stage import Stage, StageClass

A = TypeVar("A", default=Any)  # unsolved (an untyped lambda): Any, not Never
B = TypeVar("B", default=Any)
A_contra = TypeVar("A_contra", contravariant=True)
B_co = TypeVar("B_co", covariant=True)


class StageKwargs(TypedDict, total=False):
    """The options every kind of stage takes (``batch``/``window`` pick the kind)."""

    workers: int
    ordered: bool
    buffer: int | None
    # ``| str``: editors still offer the literals; a str from a config file is
    # accepted and checked when the stage is made.
    overflow: Overflow | str
    backend: BackendName | str | None
    retries: int
    on_error: OnError
    name: str | None
    resources: Mapping[str, float] | None
    keep_alive: bool | float
    timeout: float | None
    key: Callable[[Any], Hashable] | None
    fuse: bool


class CallsOne(Protocol[A_contra, B_co]):
    """An instance of a class stage: called with one input (an item, a batch, a window)."""

    def __call__(self, item: A_contra, /) -> B_co: ...


Async = Coroutine[Any, Any, B]


class ItemDecorator(Protocol):
    """``@stage(...)`` without ``batch=``/``window=``: one call per item."""

    @overload  # a class is also a callable: classes come first
    def __call__(  # type: ignore[overload-overlap]
        self, fn: type[CallsOne[A, Async[B]]], /
    ) -> StageClass[A, B, Callable[[A], Async[B]]]: ...
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: type[CallsOne[A, Iterator[B]]], /
    ) -> StageClass[A, B, Callable[[A], Iterator[B]]]: ...
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: type[CallsOne[A, B]], /
    ) -> StageClass[A, B, Callable[[A], B]]: ...
    @overload
    def __call__(
        self, fn: Callable[[], Iterable[B]], /
    ) -> Stage[Never, B, Callable[[], Iterable[B]]]: ...
    @overload
    def __call__(self, fn: Callable[[A], Async[B]], /) -> Stage[A, B, Callable[[A], Async[B]]]: ...
    @overload
    def __call__(
        self, fn: Callable[[A], Iterator[B]], /
    ) -> Stage[A, B, Callable[[A], Iterator[B]]]: ...
    @overload
    def __call__(self, fn: Callable[[A], B], /) -> Stage[A, B, Callable[[A], B]]: ...


class BatchDecorator(Protocol):
    """``@stage(batch=...)``: called with a list of items, returns one output per item."""

    @overload
    def __call__(
        self, fn: type[CallsOne[list[A], Iterable[B]]], /
    ) -> StageClass[A, B, Callable[[list[A]], Iterable[B]]]: ...
    @overload
    def __call__(
        self, fn: Callable[[list[A]], list[B]], /
    ) -> Stage[A, B, Callable[[list[A]], list[B]]]: ...
    @overload
    def __call__(
        self, fn: Callable[[list[A]], Iterable[B]], /
    ) -> Stage[A, B, Callable[[list[A]], Iterable[B]]]: ...


class WindowDecorator(Protocol):
    """``@stage(window=...)``: called with a tuple of the last ``window`` items."""

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: type[CallsOne[tuple[A, ...], Iterator[B]]], /
    ) -> StageClass[A, B, Callable[[tuple[A, ...]], Iterator[B]]]: ...
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: type[CallsOne[tuple[A, ...], B]], /
    ) -> StageClass[A, B, Callable[[tuple[A, ...]], B]]: ...
    @overload
    def __call__(
        self, fn: Callable[[tuple[A, ...]], Async[B]], /
    ) -> Stage[A, B, Callable[[tuple[A, ...]], Async[B]]]: ...
    @overload
    def __call__(
        self, fn: Callable[[tuple[A, ...]], Iterator[B]], /
    ) -> Stage[A, B, Callable[[tuple[A, ...]], Iterator[B]]]: ...
    @overload
    def __call__(
        self, fn: Callable[[tuple[A, ...]], B], /
    ) -> Stage[A, B, Callable[[tuple[A, ...]], B]]: ...
