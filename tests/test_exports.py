"""The public surface: every name in __all__ exists, once, and nothing private leaks."""

from __future__ import annotations

import flowpipe


def test_all_names_exist() -> None:
    for name in flowpipe.__all__:
        assert hasattr(flowpipe, name), name


def test_all_has_no_duplicates_and_no_private_names() -> None:
    assert len(set(flowpipe.__all__)) == len(flowpipe.__all__)
    assert not [n for n in flowpipe.__all__ if n.startswith("_")]


def test_public_modules_do_not_export_extras() -> None:
    public = {n for n in vars(flowpipe) if not n.startswith("_")}
    # submodules imported as a side effect are not part of the API
    # (``flowpipe.compat`` is imported on purpose, as ``flowpipe.compat.parallelpipe``)
    public -= {"annotations", "logging", "compat"}
    assert public == set(flowpipe.__all__)
