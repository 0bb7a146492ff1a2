"""A class shipped by value (defined in a function, a notebook cell or a script run as
``__main__``) comes back as the caller's own class, on every backend."""

from __future__ import annotations

import dataclasses

from flowpipe import stage


def test_an_output_of_a_class_shipped_by_value_is_of_the_callers_class(backend: str) -> None:
    # On Ray an output crosses back through Ray's own serializer: the stage is shipped
    # with Ray's cloudpickle, so that it knows the class (``backends/ray_setup.py: dumps_for_ray``).

    @dataclasses.dataclass(frozen=True)
    class Point:  # local: cloudpickle ships it by value
        x: int

    make = stage(lambda i: Point(i), workers=2)

    out = make.run([1, 2, 3], backend=backend)

    assert [type(p) is Point for p in out] == [True, True, True]
    assert out == [Point(1), Point(2), Point(3)]
