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
    public -= {"annotations", "compat"}
    assert public == set(flowpipe.__all__)


def test_dir_lists_each_public_name_once() -> None:
    flowpipe.stage  # noqa: B018 - a lazy name looked up lands in the module's globals
    listed = dir(flowpipe)
    assert len(listed) == len(set(listed)), sorted(n for n in listed if listed.count(n) > 1)
    public = {n for n in listed if not n.startswith("_")}
    assert "annotations" not in public
    assert "logging" not in public
    # ``compat`` is a subpackage, listed once something imported it
    assert public - {"compat"} == set(flowpipe.__all__)
