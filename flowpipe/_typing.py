"""The typing names flowpipe needs beyond ``typing``: ``TypeVar`` with a default, ``Never``, ``Unpack``.

Type checkers read them from ``typing_extensions``. At run time, a Python
that has them in ``typing`` gets those, so a program never imports
``typing_extensions`` (and the ``inspect``, ``ast`` and ``dis`` it loads: a
third of the time to a first result, issue 17) only to declare type
variables. Before 3.13, ``typing.TypeVar`` takes no ``default``: this
``TypeVar`` keeps it on the variable (``__default__``) and ``padded`` fills
in the defaulted parameters a subscript leaves out (``Stage[str, int]``).
Python 3.10 uses ``typing_extensions`` for all three.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

# Whether ``padded`` adds defaults: only where ``TypeVar`` below is the stand-in
# (``typing_extensions``' and 3.13's ``Generic`` add them themselves).
PADS = not TYPE_CHECKING and (3, 11) <= sys.version_info < (3, 13)

if TYPE_CHECKING or sys.version_info < (3, 11):
    from typing_extensions import Never, TypeVar, Unpack
elif sys.version_info >= (3, 13):
    from typing import Never, TypeVar, Unpack
else:
    import typing
    from typing import Never, Unpack

    def TypeVar(  # it stands in for the class
        name: str,
        *constraints: Any,
        bound: Any = None,
        covariant: bool = False,
        contravariant: bool = False,
        default: Any = None,
    ) -> Any:
        var = typing.TypeVar(
            name, *constraints, bound=bound, covariant=covariant, contravariant=contravariant
        )
        if default is not None:
            var.__default__ = default  # read by ``padded``
        return var


__all__ = ["Never", "TypeVar", "Unpack", "padded"]


def padded(parameters: tuple[Any, ...], given: tuple[Any, ...]) -> tuple[Any, ...]:
    """The arguments ``given`` to a subscript of a generic class with type ``parameters``,
    with the defaults of those left out added (where the running ``typing`` does not)."""
    missing = parameters[len(given) :]
    defaults = tuple(getattr(p, "__default__", None) for p in missing)
    if not PADS or not missing or None in defaults:
        return given
    return (*given, *defaults)
