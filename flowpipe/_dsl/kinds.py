"""What kind of callable a stage wraps: a function, a generator, a coroutine; a source.

Answered from the function's code flags and parameters directly, which is
what ``inspect`` reads too: importing ``inspect`` (and the ``ast``, ``dis``
and ``tokenize`` it pulls in) would cost every program that makes a stage a
few milliseconds. Callables that are not plain functions (a ``functools.wraps``
decorator, a builtin, an object with ``__signature__``) still go to
``inspect.signature``, imported then.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any, Literal

from .._errors import GraphError

CallKind = Literal["function", "generator", "async"]

# The code flags ``inspect`` tests (``inspect.CO_GENERATOR`` and friends).
_CO_VARARGS = 0x04
_CO_GENERATOR = 0x20
_CO_COROUTINE = 0x80
_CO_ASYNC_GENERATOR = 0x200


def _code_flags(fn: Any) -> int:
    """The code flags of a function, seen through bound methods and partials (as
    ``inspect.isgeneratorfunction`` sees them); 0 for anything else."""
    while True:
        if isinstance(fn, types.MethodType):
            fn = fn.__func__
        elif isinstance(fn, functools.partial):
            fn = fn.func  # pyright: ignore[reportUnknownMemberType]
        else:
            break
    return fn.__code__.co_flags if isinstance(fn, types.FunctionType) else 0


def name_of(fn: object) -> str:
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return "lambda" if name == "<lambda>" else str(name)


def call_kind(fn: Callable[..., Any]) -> CallKind:
    """How the stage is called: ``fn`` itself, or a class stage's ``__call__``."""
    target: Any = fn.__call__ if isinstance(fn, type) else fn
    if not isinstance(target, (types.FunctionType, types.MethodType)) and callable(target):
        target = getattr(target, "__call__", target)  # noqa: B004 - callable instances
    flags = _code_flags(target)
    if flags & _CO_ASYNC_GENERATOR:
        raise GraphError(f"stage {name_of(fn)!r}: async generator functions are not supported")
    if flags & _CO_COROUTINE:
        return "async"
    if flags & _CO_GENERATOR:
        return "generator"
    return "function"


def takes_no_argument(fn: Callable[..., Any]) -> bool:
    """True for ``def camera(): ...``: such a stage is the pipeline's source."""
    if isinstance(fn, type):
        return False
    if (
        type(fn) is types.FunctionType
        and not hasattr(fn, "__wrapped__")
        and not hasattr(fn, "__signature__")
    ):
        code = fn.__code__
        if code.co_flags & _CO_VARARGS:
            return False
        return code.co_argcount - len(fn.__defaults__ or ()) <= 0
    return _takes_no_argument_by_signature(fn)


def _takes_no_argument_by_signature(fn: Callable[..., Any]) -> bool:
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature take an argument
        return False
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    takes_items = any(
        (p.kind in kinds and p.default is p.empty) or p.kind is p.VAR_POSITIONAL for p in params
    )
    return not takes_items
