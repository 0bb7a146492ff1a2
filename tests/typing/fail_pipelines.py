# pyright: strict, reportUnusedExpression=false
"""Mistakes the checkers must report, each on the line marked ``# E: <mypy code> | <pyright rule>``.

Not run by pytest, and left out of the project's own mypy run (``tests/test_typing.py``
runs both checkers on this file and compares the errors with the marks).
"""

from __future__ import annotations

from collections.abc import Iterator

from flowpipe import Pipeline, merge, stage


@stage
def parse(line: str) -> int:
    return int(line)


@stage
def half(x: float) -> float:
    return x / 2


@stage
def shout(text: str) -> str:
    return text.upper()


@stage
def countdown() -> Iterator[int]:
    yield from (3, 2, 1)


@stage
def pair_up(row: tuple[int, int]) -> str:
    return str(row)


pipe = parse | half

# A stage whose input is not what the previous one gives: reported at the |.
parse | shout  # E: operator | reportOperatorIssue
pipe | shout  # E: operator | reportOperatorIssue
shout | (parse | half) | shout  # E: operator | reportOperatorIssue

# A fan-out branch that cannot take the items, a join the next stage cannot take.
shout | (parse, half)  # E: operator | reportOperatorIssue
shout | (shout, parse) | pair_up  # E: operator | reportOperatorIssue

# A source stage can only come first.
half | countdown  # E: operator | reportOperatorIssue

# Items of the wrong type, or a source given to a pipeline that has one.
pipe.run([1, 2])  # E: list-item | reportArgumentType
pipe.iter(range(3))  # E: arg-type | reportArgumentType
(countdown | half).run(["3"])  # E: list-item | reportArgumentType
(["1"] | pipe).run(["2"])  # E: list-item | reportArgumentType
pipe.start().put(1)  # E: arg-type | reportArgumentType

# Results used as the wrong type.
wrong: Pipeline[str, str] = parse | half  # E: assignment | reportAssignmentType
total: list[str] = pipe.run(["1"])  # E: assignment | reportAssignmentType
pushed: bytes = pipe.start().get()  # E: assignment | reportAssignmentType
mixed: Pipeline[str, int] = merge(parse, shout)  # E: assignment | reportAssignmentType

# A direct call keeps the function's signature.
parse(3)  # E: arg-type | reportArgumentType
