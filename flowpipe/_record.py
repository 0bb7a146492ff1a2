"""Frozen records that ``dataclasses`` reads as its own, without importing it at start-up.

``import dataclasses`` imports ``inspect``, and with it ``ast`` and ``dis``:
about 7 ms of the 20 ms to a thread run's first result after ``import flowpipe``
(issue 17; ``benchmarks/first_result.py``). The records every run builds,
``StageOptions`` and ``FanOut``, are declared as a frozen dataclass would be
(annotated fields, defaults after the fields without one) and made by
``@record``, which adds what ``@dataclass(frozen=True)`` adds: ``__init__``,
``__repr__``, ``__eq__``, ``__hash__`` (unless the class writes its own),
``__match_args__``, and assignment that raises
``dataclasses.FrozenInstanceError``.

``dataclasses.fields``, ``asdict``, ``astuple``, ``replace`` and
``is_dataclass`` accept a record: its ``__dataclass_fields__`` is made the
first time something reads it, by having ``dataclasses`` build a frozen twin
with the same fields and lending the twin's table. Whoever reads it has
imported ``dataclasses`` already, so that costs a program nothing it did not
ask for. Pickling and ``copy`` need nothing: the state is the instance's
``__dict__``, restored without ``__setattr__``, as for a frozen dataclass.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:  # only type checkers read it; at run time the decorator is this no-op

    def dataclass_transform(**_: Any) -> Any:
        return lambda decorated: decorated


R = TypeVar("R", bound=type)


def field_names(cls: type) -> tuple[str, ...]:
    """A record's fields, in declaration order (``dataclasses.fields`` without the import)."""
    return cast("tuple[str, ...]", cls.__record_fields__)  # type: ignore[attr-defined]


def field_defaults(cls: type) -> dict[str, object]:
    """A record's defaults, by field name; a field without one is absent."""
    return cast("dict[str, object]", cls.__record_defaults__)  # type: ignore[attr-defined]


@dataclass_transform(frozen_default=True)
def record(cls: R) -> R:
    """Make ``cls`` a frozen record of its annotated fields (see the module docstring)."""
    names = tuple(cls.__annotations__)  # its own: a record has no record base
    defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}
    for before, after in itertools.pairwise(names):
        if before in defaults and after not in defaults:
            raise TypeError(
                f"{cls.__qualname__}: field {after!r} without a default follows one with"
            )
    cls.__record_fields__ = names  # type: ignore[attr-defined]
    cls.__record_defaults__ = defaults  # type: ignore[attr-defined]
    cls.__match_args__ = names  # type: ignore[attr-defined,misc]
    cls.__init__ = _init  # type: ignore[misc]
    cls.__repr__ = _repr  # type: ignore[assignment,method-assign]
    cls.__eq__ = _eq  # type: ignore[assignment,method-assign]
    if "__hash__" not in cls.__dict__:
        cls.__hash__ = _hash  # type: ignore[assignment,method-assign]
    cls.__setattr__ = _refuse_assignment  # type: ignore[assignment,method-assign]
    cls.__delattr__ = _refuse_deletion  # type: ignore[assignment,method-assign]
    cls.__dataclass_fields__ = _LazyFields()  # type: ignore[attr-defined]
    return cls


def _init(self: object, *args: object, **kwargs: object) -> None:
    cls = type(self)
    names = field_names(cls)
    if len(args) > len(names):
        raise TypeError(
            f"{cls.__qualname__}() takes {len(names)} positional arguments, {len(args)} given"
        )
    values = dict(zip(names, args))
    for name, value in kwargs.items():
        if name not in names:
            raise TypeError(f"{cls.__qualname__}() got an unexpected keyword argument {name!r}")
        if name in values:
            raise TypeError(f"{cls.__qualname__}() got multiple values for argument {name!r}")
        values[name] = value
    defaults = field_defaults(cls)
    missing = [n for n in names if n not in values and n not in defaults]
    if missing:
        raise TypeError(f"{cls.__qualname__}() missing required arguments: {', '.join(missing)}")
    self.__dict__.update({n: values[n] if n in values else defaults[n] for n in names})


def _values(self: object) -> tuple[object, ...]:
    return tuple(self.__dict__[n] for n in field_names(type(self)))


def _repr(self: object) -> str:
    shown = ", ".join(f"{n}={self.__dict__[n]!r}" for n in field_names(type(self)))
    return f"{type(self).__qualname__}({shown})"


def _eq(self: object, other: object) -> bool:
    if other.__class__ is not self.__class__:
        return NotImplemented  # type: ignore[no-any-return]  # Python then asks ``other``
    return _values(self) == _values(other)


def _hash(self: object) -> int:
    return hash(_values(self))


def _refuse_assignment(self: object, name: str, value: object) -> None:
    import dataclasses

    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _refuse_deletion(self: object, name: str) -> None:
    import dataclasses

    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


class _LazyFields:
    """A record's ``__dataclass_fields__``, built on the first read and then kept on the class."""

    def __get__(self, instance: object, owner: type) -> dict[str, Any]:
        import dataclasses

        defaults = field_defaults(owner)
        specs = [
            (n, owner.__annotations__[n], dataclasses.field(default=defaults[n]))
            if n in defaults
            else (n, owner.__annotations__[n])
            for n in field_names(owner)
        ]
        twin: Any = dataclasses.make_dataclass(owner.__name__, specs, frozen=True)
        table: dict[str, Any] = twin.__dataclass_fields__
        type.__setattr__(owner, "__dataclass_fields__", table)
        return table
