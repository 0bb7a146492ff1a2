# pyright: strict, reportUnusedExpression=false
"""Misused ``@stage``: each error on the line marked ``# E: <mypy code> | <pyright rule>``.

Not run by pytest, and left out of the project's own mypy run (see ``tests/test_typing.py``).
"""

from __future__ import annotations

from flowpipe import stage


def inc(x: int) -> int:
    return x + 1


def total(xs: list[int]) -> list[int]:
    return [sum(xs)] * len(xs)


# batch= needs a function of a list; window= a function of a tuple.
stage(inc, batch=8)  # E: arg-type | reportCallIssue
stage(inc, window=3)  # E: arg-type | reportCallIssue
stage(batch=8)(inc)  # E: arg-type | reportCallIssue

# Option values are typed.
stage(inc, workers="4")  # E: call-overload | reportCallIssue
stage(inc, bogus=True)  # E: call-overload | reportCallIssue
stage(total, batch=8, window=2)  # E: call-overload | reportCallIssue

# A batch stage takes items, not lists of them.
batched = stage(total, batch=8)
batched.run([[1, 2]])  # E: list-item | reportArgumentType
