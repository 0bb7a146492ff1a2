"""What makes a stage look like the function it wraps to ``help()``, ``inspect`` and pydoc.

``Stage`` and ``StageClass`` keep their own module, qualname and docstring as
classes (so they pickle by reference), while each stage answers with its
function's, as ``functools.wraps`` would make it.
"""

from __future__ import annotations

from typing import Any


class FromWrapped:
    """A class attribute that, read on a stage, is its function's (what ``functools.wraps``
    copies); read on the class, the class's own (``Stage.__doc__`` is this module's docstring).
    """

    __slots__ = ("attr", "on_class")

    def __init__(self, attr: str, on_class: str | None) -> None:
        self.attr = attr
        self.on_class = on_class

    def __get__(self, obj: object, owner: type | None = None) -> str | None:
        if obj is None:
            return self.on_class
        return getattr(getattr(obj, "__wrapped__", None), self.attr, None)


class WrapperType(type):
    """The type of ``Stage`` and ``StageClass``, so that ``FromWrapped`` can be ``__module__``.

    ``type`` hands a class's ``__module__`` out exactly as stored (pickle would
    see the descriptor); with a metaclass, ``Stage.__module__`` finds this
    class's plain string first and then asks the descriptor, which answers with
    a string. (``__doc__`` needs no help: ``type`` asks a descriptor for it.)
    """


def forwarded(obj: object, name: str) -> Any:
    """``__getattr__`` of stages: ``__qualname__`` (``type`` takes it out of the class body)."""
    if name in ("__qualname__", "__type_params__"):
        return getattr(object.__getattribute__(obj, "__wrapped__"), name)
    raise AttributeError(f"{type(obj).__name__!r} object has no attribute {name!r}")
