"""``@stage`` and the ``Stage`` value.

A ``Stage`` wraps a plain callable (function, generator function, ``async def``)
or a class whose instances are built once per worker, plus validated options.
It is an immutable value: it never runs anything until a pipeline runs, except
when called directly (``detect(frame)``), which runs the plain function.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, Literal, cast, overload

from .._errors import GraphError, StageOptionError
from .._typing import Never, TypeVar, Unpack, padded
from .compose import Composable, In, Out
from .kinds import CallKind
from .kinds import call_kind as _call_kind
from .kinds import name_of as _name_of
from .kinds import takes_no_argument as _takes_no_argument
from .options import StageOptions, check_name, make_options
from .wrapping import FromWrapped as _FromWrapped
from .wrapping import WrapperType as _WrapperType
from .wrapping import forwarded as _forwarded

if TYPE_CHECKING:
    from .pipeline import Pipeline
    from .signatures import (
        BatchDecorator,
        CallsOne,
        ItemDecorator,
        StageKwargs,
        WindowDecorator,
    )


def _given(params: Any) -> tuple[Any, ...]:
    """A subscript's arguments as a tuple (``Stage[int]`` passes ``int`` alone)."""
    return params if isinstance(params, tuple) else (params,)  # pyright: ignore[reportUnknownVariableType]


# What a direct call of the stage accepts and returns (``parse("3")``).
Fn = TypeVar("Fn", bound=Callable[..., Any], covariant=True, default=Callable[..., Any])
A = TypeVar("A", default=Any)  # unsolved (an untyped lambda): Any, not Never
B = TypeVar("B", default=Any)
Async = Coroutine[Any, Any, B]


class Stage(Composable[In, Out], Generic[In, Out, Fn], metaclass=_WrapperType):
    """One step of a pipeline: a callable plus its options. Immutable and picklable.

    ``Stage[In, Out]`` takes ``In`` items and gives ``Out`` items; the third
    parameter, ``Fn``, is the decorated function's type, which direct calls keep.
    """

    __slots__ = ("_args", "_direct", "_kwargs", "_target", "call_kind", "is_class", "options")

    if not TYPE_CHECKING:  # help(stage), inspect and pydoc see the function (functools.wraps)
        __doc__ = _FromWrapped("__doc__", __doc__)
        __module__ = _FromWrapped("__module__", __module__)
        __getattr__ = _forwarded

        def __class_getitem__(cls, params):  # ``Stage[str, int]``: ``Fn`` by default
            return super().__class_getitem__(padded(cls.__parameters__, _given(params)))
    else:
        __qualname__: str  # the function's (_forwarded)

    def __init__(
        self,
        target: Callable[..., Any],
        options: StageOptions,
        *,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        is_class: bool = False,
    ) -> None:
        init = object.__setattr__  # a Stage is immutable once made
        init(self, "_target", target)
        init(self, "_args", args)
        init(self, "_kwargs", dict(kwargs or {}))
        init(self, "_direct", None)
        init(self, "options", options)
        init(self, "is_class", is_class)
        init(self, "call_kind", _call_kind(target))

    _target: Callable[..., Any]
    _args: tuple[Any, ...]
    _kwargs: dict[str, Any]
    _direct: Any
    options: StageOptions
    is_class: bool
    call_kind: CallKind

    # -- identity -----------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.options.name

    @property
    def __name__(self) -> str:
        """The function's name (``name`` is the stage's, which ``name=`` may change)."""
        return str(getattr(self._target, "__name__", self.options.name))

    @property
    def __wrapped__(self) -> Callable[..., Any]:
        return self._target

    @property
    def target(self) -> Callable[..., Any]:
        """The decorated function or class."""
        return self._target

    @property
    def is_source(self) -> bool:
        """True when the function takes no argument: it produces the pipeline's items."""
        return _takes_no_argument(self._target)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Stage):
            return NotImplemented
        return (self._target, self._args, self._kwargs, self.options) == (
            other._target,
            other._args,
            other._kwargs,
            other.options,
        )

    def __hash__(self) -> int:
        return hash((self._target, self._args, self.options))

    def __reduce__(self) -> tuple[Any, ...]:
        target = _for_pickle(self._target)
        return (_rebuild, (target, self.options, self._args, self._kwargs, self.is_class))

    def __repr__(self) -> str:
        described = self.options.describe()
        return f"{self.name}[{described}]" if described else self.name

    # -- building -----------------------------------------------------------------
    def with_options(self, **changes: Any) -> Stage[In, Out, Fn]:
        """A copy of this stage with some options changed: ``detect.with_options(workers=3)``."""
        return Stage(
            self._target,
            self.options.replace(**changes),
            args=self._args,
            kwargs=self._kwargs,
            is_class=self.is_class,
        )

    def make_callable(self) -> Callable[..., Any]:
        """What a worker calls per item (or per batch/window): builds a class stage's instance.

        Called once per worker, inside the worker; the instance is never pickled.
        """
        if self.is_class:
            return self._target(*self._args, **self._kwargs)  # type: ignore[no-any-return]
        return self._target

    def _call_directly(self, *args: Any, **kwargs: Any) -> Any:
        """Run the plain function on one item (tests and notebooks rely on this).

        For a class stage the instance is built on the first direct call and kept.
        """
        if self.is_class:
            direct = self._direct
            if direct is None:  # a cache, not state: built on the first direct call
                direct = self.make_callable()
                object.__setattr__(self, "_direct", direct)
            return direct(*args, **kwargs)
        return self._target(*args, **kwargs)

    if TYPE_CHECKING:  # a direct call has the decorated function's signature

        @property
        def __call__(self) -> Fn: ...

    else:
        __call__ = _call_directly

    def _as_pipeline(self) -> Pipeline[In, Out]:
        from .pipeline import Pipeline

        return Pipeline((self,))


class _ByName:
    """A decorated function or class, pickled as a reference to its module-level name.

    ``@stage`` rebinds the function's name to the stage, so ``pickle`` cannot
    find the function under its own name; this reference looks the name up
    when unpickled and unwraps the stage found there.
    """

    __slots__ = ("module", "qualname")

    def __init__(self, module: str, qualname: str) -> None:
        self.module = module
        self.qualname = qualname

    def __reduce__(self) -> tuple[Any, ...]:
        return (_resolve_by_name, (self.module, self.qualname))


def _lookup(root: object, qualname: str) -> object:
    obj = root
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj


def _unwrap(obj: object) -> object:
    if isinstance(obj, Stage):
        return obj.target
    if isinstance(obj, StageClass):
        return obj._cls  # pyright: ignore[reportPrivateUsage]  # StageClass has no public accessor
    return obj


def _resolve_by_name(module: str, qualname: str) -> object:
    return _unwrap(_lookup(importlib.import_module(module), qualname))


def _for_pickle(target: Any) -> Any:
    """``target``, or a ``_ByName`` when ``@stage`` hid it behind its own module-level name.

    ``__main__`` targets stay as they are: cloudpickle ships those by value, as
    it does those of a module registered with ``cloudpickle.register_pickle_by_value``
    (one the workers cannot import).
    """
    module_name = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    module = sys.modules.get(module_name) if isinstance(module_name, str) else None
    if module is None or module_name in ("__main__", "__mp_main__") or not qualname:
        return target
    if _pickled_by_value(module.__name__):
        return target
    if "<locals>" in qualname:
        return target
    found = _lookup(module, qualname)
    if found is not target and _unwrap(found) is target:
        return _ByName(module.__name__, qualname)
    return target


def _pickled_by_value(module_name: str) -> bool:
    """Whether cloudpickle ships ``module_name``'s functions by value: it, or a package
    above it, was registered with ``cloudpickle.register_pickle_by_value``."""
    import cloudpickle  # only when pickling: building stages needs no cloudpickle

    registered = cloudpickle.list_registry_pickle_by_value()
    parts = module_name.split(".")
    return any(".".join(parts[:n]) in registered for n in range(1, len(parts) + 1))


def _rebuild(
    target: Callable[..., Any],
    options: StageOptions,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    is_class: bool,
) -> Stage[Any, Any]:
    return Stage(target, options, args=args, kwargs=kwargs, is_class=is_class)


class StageClass(Composable[In, Out], Generic[In, Out, Fn], metaclass=_WrapperType):
    """What ``@stage`` returns for a class: calling it records constructor arguments.

    ``Classify(threshold=0.7)`` returns a ``Stage``; nothing is constructed until a
    worker starts. Used bare (in ``|``, or ``Classify.run(items)``), the class is
    built with no arguments.
    """

    __slots__ = ("_cls", "_options")

    if not TYPE_CHECKING:  # help(StageClass) and inspect see the class (functools.wraps)
        __doc__ = _FromWrapped("__doc__", __doc__)
        __module__ = _FromWrapped("__module__", __module__)
        __getattr__ = _forwarded

        def __class_getitem__(cls, params):  # ``StageClass[str, int]``: ``Fn`` by default
            return super().__class_getitem__(padded(cls.__parameters__, _given(params)))
    else:
        __qualname__: str  # the class's (_forwarded)

    def __init__(self, cls: type[Any], options: StageOptions) -> None:
        object.__setattr__(self, "_cls", cls)
        object.__setattr__(self, "_options", options)

    _cls: type[Any]
    _options: StageOptions

    if not TYPE_CHECKING:  # hidden from type checkers, which would then allow any attribute

        def __setattr__(self, name: str, value: object) -> None:
            raise AttributeError(f"{self!r} is immutable")

        def __delattr__(self, name: str) -> None:
            raise AttributeError(f"{self!r} is immutable")

    def __call__(self, *args: Any, **kwargs: Any) -> Stage[In, Out, Fn]:
        return Stage(self._cls, self._options, args=args, kwargs=kwargs, is_class=True)

    def with_options(self, **changes: Any) -> StageClass[In, Out, Fn]:
        """This stage class with some options changed, before any instance is configured.

        ``Classify.with_options(workers=3)`` is used bare or called with the
        constructor's arguments, like ``Classify``; nothing is constructed.
        """
        return StageClass(self._cls, self._options.replace(**changes))

    def _as_pipeline(self) -> Pipeline[In, Out]:
        # used bare in ``|``: built with no arguments (_as_pipeline: a _dsl-internal hook)
        return self()._as_pipeline()  # pyright: ignore[reportPrivateUsage]

    @property
    def __name__(self) -> str:
        return self._cls.__name__

    @property
    def __wrapped__(self) -> type[Any]:
        return self._cls

    def __repr__(self) -> str:
        return f"<stage class {self._options.name}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StageClass):
            return NotImplemented
        return (self._cls, self._options) == (other._cls, other._options)

    def __hash__(self) -> int:
        return hash((self._cls, self._options))

    def __reduce__(self) -> tuple[Any, ...]:
        return (StageClass, (_for_pickle(self._cls), self._options))


def make_stage(fn: Any, options: dict[str, Any]) -> Any:
    if isinstance(fn, (Stage, StageClass)):
        raise GraphError(f"{fn!r} is already a stage: use .with_options(...) to change options")
    if not callable(fn):
        raise GraphError(f"@stage needs a function or a class, got {fn!r}")
    name = options.pop("name", None)  # None: the function's
    opts = make_options(
        name=_name_of(fn) if name is None else check_name(_name_of(fn), name), **options
    )
    if isinstance(fn, type):
        kind = _call_kind(fn)  # validates __call__ now, at build time
        if opts.key is not None and kind == "async":
            raise StageOptionError(
                opts.name,
                "key",
                f"{opts.key!r:.40}: an async stage has one worker (workers= is calls in flight)",
            )
        made_class: StageClass[Any, Any] = StageClass(fn, opts)
        return made_class
    made: Stage[Any, Any] = Stage(fn, opts)
    _check_key(opts, made.call_kind)
    if made.is_source and (
        opts.workers != 1
        or opts.batch is not None
        or opts.window is not None
        or opts.timeout is not None
    ):
        raise GraphError(
            f"stage {opts.name!r} takes no argument, so it is a source: "
            "workers=, batch=, window= and timeout= do not apply to it"
        )
    return made


def _check_key(opts: StageOptions, kind: CallKind) -> None:
    if opts.key is not None and kind == "async":
        raise StageOptionError(
            opts.name,
            "key",
            f"{opts.key!r:.40}: an async stage has one worker (workers= is calls in flight)",
        )


def as_stage(obj: Any) -> Stage[Any, Any]:
    """Wrap a plain callable met in ``|`` as a stage with default options."""
    # isinstance leaves the types unknown; here they are Any
    if isinstance(obj, Stage):
        return cast("Stage[Any, Any]", obj)
    if isinstance(obj, StageClass):
        return cast("StageClass[Any, Any]", obj)()
    if callable(obj):
        return Stage(obj, make_options(name=_name_of(obj)))
    raise GraphError(f"cannot use {obj!r} ({type(obj).__name__}) as a stage")


# -- the decorator ------------------------------------------------------------------
# Overloads, for type checkers only (``signatures.py`` maps shapes to types): the
# options pick the call shape (per item, ``batch=``, ``window=``), then the
# function's signature picks the kind. Bare ``@stage`` is the per-item form.
NoBatch = Literal[False] | None


@overload
def stage(  # type: ignore[overload-overlap]
    fn: type[CallsOne[A, Async[B]]],
    /,
    *,
    batch: NoBatch = ...,
    window: None = ...,
    **options: Unpack[StageKwargs],
) -> StageClass[A, B, Callable[[A], Async[B]]]: ...
@overload
def stage(  # type: ignore[overload-overlap]
    fn: type[CallsOne[A, Iterator[B]]],
    /,
    *,
    batch: NoBatch = ...,
    window: None = ...,
    **options: Unpack[StageKwargs],
) -> StageClass[A, B, Callable[[A], Iterator[B]]]: ...
@overload
def stage(  # type: ignore[overload-overlap]
    fn: type[CallsOne[A, B]],
    /,
    *,
    batch: NoBatch = ...,
    window: None = ...,
    **options: Unpack[StageKwargs],
) -> StageClass[A, B, Callable[[A], B]]: ...
@overload
def stage(
    fn: Callable[[], Iterable[B]],
    /,
    *,
    batch: NoBatch = ...,
    window: None = ...,
    **options: Unpack[StageKwargs],
) -> Stage[Never, B, Callable[[], Iterable[B]]]: ...
@overload
def stage(
    fn: Callable[[A], Async[B]],
    /,
    *,
    batch: NoBatch = ...,
    window: None = ...,
    **options: Unpack[StageKwargs],
) -> Stage[A, B, Callable[[A], Async[B]]]: ...
@overload
def stage(
    fn: Callable[[A], Iterator[B]],
    /,
    *,
    batch: NoBatch = ...,
    window: None = ...,
    **options: Unpack[StageKwargs],
) -> Stage[A, B, Callable[[A], Iterator[B]]]: ...
@overload
def stage(  # type: ignore[overload-overlap]
    fn: Callable[[A], B],
    /,
    *,
    batch: NoBatch = ...,
    window: None = ...,
    **options: Unpack[StageKwargs],
) -> Stage[A, B, Callable[[A], B]]: ...
@overload
def stage(
    fn: type[CallsOne[list[A], Iterable[B]]],
    /,
    *,
    batch: int,
    batch_timeout: float | None = ...,
    **options: Unpack[StageKwargs],
) -> StageClass[A, B, Callable[[list[A]], Iterable[B]]]: ...
@overload
def stage(
    fn: Callable[[list[A]], list[B]],
    /,
    *,
    batch: int,
    batch_timeout: float | None = ...,
    **options: Unpack[StageKwargs],
) -> Stage[A, B, Callable[[list[A]], list[B]]]: ...
@overload
def stage(
    fn: Callable[[list[A]], Iterable[B]],
    /,
    *,
    batch: int,
    batch_timeout: float | None = ...,
    **options: Unpack[StageKwargs],
) -> Stage[A, B, Callable[[list[A]], Iterable[B]]]: ...
@overload
def stage(  # type: ignore[overload-overlap]
    fn: type[CallsOne[tuple[A, ...], Iterator[B]]],
    /,
    *,
    window: int,
    stride: int = ...,
    **options: Unpack[StageKwargs],
) -> StageClass[A, B, Callable[[tuple[A, ...]], Iterator[B]]]: ...
@overload
def stage(  # type: ignore[overload-overlap]
    fn: type[CallsOne[tuple[A, ...], B]],
    /,
    *,
    window: int,
    stride: int = ...,
    **options: Unpack[StageKwargs],
) -> StageClass[A, B, Callable[[tuple[A, ...]], B]]: ...
@overload
def stage(
    fn: Callable[[tuple[A, ...]], Async[B]],
    /,
    *,
    window: int,
    stride: int = ...,
    **options: Unpack[StageKwargs],
) -> Stage[A, B, Callable[[tuple[A, ...]], Async[B]]]: ...
@overload
def stage(
    fn: Callable[[tuple[A, ...]], Iterator[B]],
    /,
    *,
    window: int,
    stride: int = ...,
    **options: Unpack[StageKwargs],
) -> Stage[A, B, Callable[[tuple[A, ...]], Iterator[B]]]: ...
@overload
def stage(
    fn: Callable[[tuple[A, ...]], B],
    /,
    *,
    window: int,
    stride: int = ...,
    **options: Unpack[StageKwargs],
) -> Stage[A, B, Callable[[tuple[A, ...]], B]]: ...
@overload
def stage(  # type: ignore[overload-overlap]
    fn: None = None,
    /,
    *,
    batch: NoBatch = ...,
    window: None = ...,
    **options: Unpack[StageKwargs],
) -> ItemDecorator: ...
@overload
def stage(
    fn: None = None,
    /,
    *,
    batch: int,
    batch_timeout: float | None = ...,
    **options: Unpack[StageKwargs],
) -> BatchDecorator: ...
@overload
def stage(
    fn: None = None,
    /,
    *,
    window: int,
    stride: int = ...,
    **options: Unpack[StageKwargs],
) -> WindowDecorator: ...
def stage(fn: Any = None, /, **options: Any) -> Any:
    """Make a stage from a function or class; usable bare (``@stage``) or called.

    ``@stage``, ``@stage(workers=4)`` and ``stage(fn, workers=4)`` all work, on
    lambdas and closures too. Options are validated now: a bad value raises
    ``ValueError`` naming the option and the stage.
    """
    if fn is None:

        def decorate(f: Any) -> Any:
            return make_stage(f, dict(options))

        return decorate
    return make_stage(fn, dict(options))


def is_iterable_source(obj: object) -> bool:
    return isinstance(obj, Iterable) and not isinstance(obj, (Composable, StageClass))
