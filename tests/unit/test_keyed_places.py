"""Which worker a key goes to: evenly, and the same in every run (no salted hash)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

from flowpipe._runtime.core.keyed import KeyPlaces, stable_hash


def places(keys: Sequence[object], workers: int) -> list[int]:
    chosen = KeyPlaces(workers)
    return [chosen.worker_of(k) for k in keys]


def test_numbered_keys_land_on_their_worker_in_any_order() -> None:
    assert places([3, 1, 0, 2], 4) == [3, 1, 0, 2]
    assert places([0, 1, 2, 3, 4, 5], 3) == [0, 1, 2, 0, 1, 2]


def test_up_to_one_key_per_worker_whatever_their_hashes() -> None:
    names = [f"cam{i}" for i in range(8)]
    assert sorted(places(names, 8)) == list(range(8))
    assert places(names + names, 8)[8:] == places(names, 8)  # a key never moves


def test_equal_keys_agree() -> None:
    chosen = KeyPlaces(5)
    for a, b in [(1, 1.0), (1, True), ((1, "a"), (1.0, "a"))]:
        assert chosen.worker_of(a) == chosen.worker_of(b)


def test_the_hash_of_a_string_is_the_same_in_another_process() -> None:
    code = "from flowpipe._runtime.core.keyed import stable_hash; print(stable_hash(('cam', 3)))"
    for seed in ("1", "2"):
        env = {"PYTHONHASHSEED": seed, "PATH": ""}
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        assert int(out.stdout) == stable_hash(("cam", 3))
