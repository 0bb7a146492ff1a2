# pyright: strict
"""What ``|``, fan-out, ``merge`` and the run verbs give: checked by mypy --strict and pyright.

Not run by pytest (``tests/test_typing.py`` runs the checkers on this file).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from typing_extensions import Never, assert_type

from flowpipe import LiveRun, Pipeline, Run, merge, stage


@stage
def parse(line: str) -> int:
    return int(line)


@stage(workers=4)
def half(x: float) -> float:
    return x / 2


@stage
def label(x: float) -> str:
    return f"{x:.1f}"


@stage
def words(line: str) -> Iterator[str]:
    yield from line.split()


@stage
def length(text: str) -> int:
    return len(text)


@stage
async def shout(text: str) -> str:
    return text.upper()


@stage
def countdown() -> Iterator[int]:
    yield from (3, 2, 1)


@stage(batch=16)
def embed(texts: list[str]) -> list[float]:
    return [float(len(t)) for t in texts]


@stage(window=2)
def delta(last2: tuple[float, ...]) -> float:
    return last2[-1] - last2[0]


@stage
def anything(x: object) -> str:
    return repr(x)


@stage
def summarize(row: tuple[int, str]) -> str:
    return f"{row[1]} ({row[0]})"


@stage
class Scale:
    def __init__(self, factor: float = 2.0) -> None:
        self.factor = factor

    def __call__(self, x: float) -> float:
        return x * self.factor


lines = ["1", "2", "3"]

# -- chains: Stage[A, B] | Stage[B, C] is Pipeline[A, C] ----------------------------------
pipe = parse | half | label
assert_type(parse | half, Pipeline[str, float])
assert_type(pipe, Pipeline[str, str])
assert_type(pipe | length, Pipeline[str, int])
assert_type((parse | half) | (label | length), Pipeline[str, int])
assert_type(words | embed | delta, Pipeline[str, float])
assert_type(parse | anything, Pipeline[str, str])  # a stage taking object takes anything
assert_type(label | shout, Pipeline[float, str])

# -- running ---------------------------------------------------------------------------
assert_type(pipe.run(lines), list[str])
assert_type(pipe.run(iter(lines), backend="thread"), list[str])
assert_type(pipe.iter(lines), Run[str])
assert_type(next(pipe.iter(lines)), str)
assert_type(parse.run(lines), list[int])
for text in pipe.iter(lines):
    assert_type(text, str)
with pipe.iter(lines) as live:
    assert_type(live.collect(), list[str])

# -- push mode: start() gives LiveRun[In, Out]: put(In), get() -> Out ------------------
assert_type(pipe.start(), LiveRun[str, str])
assert_type(parse.start(backend="process"), LiveRun[str, int])
with pipe.start() as pushed:
    assert_type(pushed, LiveRun[str, str])
    pushed.put("1")
    pushed.put("2", timeout=0.5)
    assert_type(pushed.get(), str)
    assert_type(pushed.get(timeout=1.0), str)
    assert_type(next(pushed), str)
    for text in pushed:
        assert_type(text, str)
    pushed.close()

# -- sources: a source stage, or a bound source, runs without one ----------------------
assert_type(countdown | half, Pipeline[Never, float])
assert_type((countdown | half).run(), list[float])
bound = lines | pipe
assert_type(bound, Pipeline[Never, str])
assert_type(bound.run(), list[str])
assert_type(list(bound), list[str])
assert_type(list(range(3) | half), list[float])
assert_type(bound | length, Pipeline[Never, int])

# -- fan-out: tuples of 2-4 branches give tuples, a dict gives a dict ------------------
assert_type(words | (length, shout), Pipeline[str, tuple[int, str]])
assert_type(words | (length, shout, anything), Pipeline[str, tuple[int, str, str]])
assert_type(
    words | (length, shout, anything, length | half), Pipeline[str, tuple[int, str, str, float]]
)
assert_type(words | (length, shout) | summarize, Pipeline[str, str])
assert_type(words | {"n": length, "loud": shout}, Pipeline[str, dict[str, Any]])
assert_type((length, shout) | summarize, Pipeline[str, str])

# -- merge: the union of the branches' outputs -----------------------------------------
assert_type(merge(length, shout), Pipeline[str, int | str])
assert_type(words | merge(length, shout, words), Pipeline[str, int | str])

# -- plain callables and class stages in | ---------------------------------------------
assert_type(parse | str, Pipeline[str, str])
assert_type(half | Scale, Pipeline[float, float])
assert_type(half | Scale(factor=3) | label, Pipeline[float, str])


def shape(rows: Iterable[str]) -> list[float]:
    return (parse | half).run(rows)
