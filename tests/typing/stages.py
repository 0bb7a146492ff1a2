# pyright: strict
"""What ``@stage`` gives for each kind of function: checked by mypy --strict and pyright strict.

Not run by pytest (``tests/test_typing.py`` runs the checkers on this file).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from typing import Any

from typing_extensions import Never, assert_type

from flowpipe import Pipeline, Stage, StageClass, stage


@stage
def parse(line: str) -> int:
    return int(line)


@stage(workers=4, ordered=False, name="halve", overflow="drop_oldest", on_error="skip")
def half(x: float) -> float:
    return x / 2


def shout(text: str) -> str:
    return text.upper() + "!"


loud = stage(shout, retries=2)


@stage
def words(line: str) -> Iterator[str]:
    yield from line.split()


@stage(workers=8)
async def lookup(key: str) -> bytes:
    return key.encode()


@stage
def countdown() -> Iterator[int]:
    yield from (3, 2, 1)


@stage(name="numbers")
def numbers() -> list[int]:
    return [1, 2, 3]


@stage(batch=32)
def embed(texts: list[str]) -> list[float]:
    return [float(len(t)) for t in texts]


@stage(batch=True, batch_timeout=0.1)
def store(rows: Sequence[bytes]) -> Iterator[int]:
    yield from (len(r) for r in rows)


@stage(window=3)
def moving_sum(last3: tuple[int, ...]) -> int:
    return sum(last3)


@stage(window=2, stride=2)
def pairs(last2: tuple[str, ...]) -> Iterator[str]:
    yield "".join(last2)


@stage(workers=2)
class Scale:
    def __init__(self, factor: float = 2.0) -> None:
        self.factor = factor

    def __call__(self, x: float) -> float:
        return x * self.factor


@stage(batch=8)
class Tokenize:
    def __call__(self, texts: list[str]) -> list[list[str]]:
        return [t.split() for t in texts]


# -- each kind of function gives Stage[In, Out] ----------------------------------------
assert_type(parse, Stage[str, int, Callable[[str], int]])
assert_type(half, Stage[float, float, Callable[[float], float]])
assert_type(loud, Stage[str, str, Callable[[str], str]])
assert_type(words, Stage[str, str, Callable[[str], Iterator[str]]])
assert_type(lookup, Stage[str, bytes, Callable[[str], Coroutine[Any, Any, bytes]]])
assert_type(countdown, Stage[Never, int, Callable[[], Iterable[int]]])
assert_type(numbers, Stage[Never, int, Callable[[], Iterable[int]]])
assert_type(embed, Stage[str, float, Callable[[list[str]], list[float]]])
assert_type(store, Stage[bytes, int, Callable[[list[bytes]], Iterable[int]]])
assert_type(moving_sum, Stage[int, int, Callable[[tuple[int, ...]], int]])
assert_type(pairs, Stage[str, str, Callable[[tuple[str, ...]], Iterator[str]]])

# A stage is also a Stage[In, Out] (the third parameter is the direct call's type).
as_declared: Stage[str, int] = parse
wider: Stage[str, object] = parse  # outputs are covariant

# -- direct calls keep the function's signature ----------------------------------------
assert_type(parse("3"), int)
assert_type(loud("hi"), str)
assert_type(words("a b"), Iterator[str])
assert_type(embed(["a"]), list[float])
assert_type(moving_sum((1, 2, 3)), int)
assert_type(Scale(factor=3)(2.0), float)
assert_type(half.with_options(workers=2), Stage[float, float, Callable[[float], float]])

# -- decorators made ahead ------------------------------------------------------------
per_item = stage(workers=2)
in_batches = stage(batch=4)
in_windows = stage(window=2)
assert_type(per_item(shout), Stage[str, str, Callable[[str], str]])


def lengths(texts: list[str]) -> list[int]:
    return [len(t) for t in texts]


def spread(last2: tuple[float, ...]) -> float:
    return max(last2) - min(last2)


assert_type(in_batches(lengths), Stage[str, int, Callable[[list[str]], list[int]]])
assert_type(in_windows(spread), Stage[float, float, Callable[[tuple[float, ...]], float]])

# -- class stages ----------------------------------------------------------------------
# mypy ignores what a class *decorator* returns (the name stays the class), so the
# call form is what both checkers see alike; `x | DecoratedClass` is typed either way.


class _Scale:
    def __init__(self, factor: float = 2.0) -> None:
        self.factor = factor

    def __call__(self, x: float) -> float:
        return x * self.factor


class _Pairs:
    def __call__(self, x: int) -> Iterator[int]:
        yield from (x, -x)


class _Client:
    async def __call__(self, key: str) -> bytes:
        return key.encode()


Scaled = stage(_Scale, workers=2)
assert_type(Scaled, StageClass[float, float, Callable[[float], float]])
assert_type(Scaled(factor=3), Stage[float, float, Callable[[float], float]])
assert_type(Scaled(factor=3)(2.0), float)
assert_type(Scaled.with_options(workers=4), StageClass[float, float, Callable[[float], float]])
assert_type(stage(_Pairs), StageClass[int, int, Callable[[int], Iterator[int]]])
assert_type(
    stage(_Client, workers=4),
    StageClass[str, bytes, Callable[[str], Coroutine[Any, Any, bytes]]],
)
assert_type(half | Scale, Pipeline[float, float])
assert_type(half | Scale(factor=3), Pipeline[float, float])
assert_type(half | Scaled | Scaled(), Pipeline[float, float])
