# pyright: strict, reportUnusedExpression=false
"""The mismatch shown in docs/types.md: both checkers report it at the ``|``."""

from __future__ import annotations

from collections.abc import Iterator

from flowpipe import stage


@stage
def half(n: int) -> float:
    return n / 2


@stage
def words(text: str) -> Iterator[str]:
    yield from text.split()


words | half  # E: operator | reportOperatorIssue
