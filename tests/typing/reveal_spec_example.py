# pyright: strict
"""SPEC section 7: ``reveal_type((parse | half | label).run(lines))`` is ``list[str]``.

Checked by ``tests/test_typing.py``; left out of the project's own mypy run, which
would print the revealed type as a note.
"""

from __future__ import annotations

from typing_extensions import reveal_type

from flowpipe import stage


@stage(workers=4)
def parse(line: str) -> int:
    return int(line)


@stage
def half(n: int) -> float:
    return n / 2


@stage
def label(x: float) -> str:
    return f"{x:.1f}"


lines = ["1", "2", "3"]
reveal_type((parse | half | label).run(lines))  # list[str]
