"""The layering rules of ``docs/design.md``, checked on the code itself.

Each rule reads every module of ``flowpipe/`` with ``ast`` and resolves its
imports (relative ones too) to module names; imports under
``if TYPE_CHECKING:`` are for type checkers only and do not count. The last
rules run a program to see what it actually loads.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pytest

from flowpipe._dsl.options import BackendName
from flowpipe._runtime.backends.base import BACKENDS, REGISTRY

PACKAGE = Path(__file__).resolve().parent.parent / "flowpipe"
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk_run_time(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, except those under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.If) and _type_checking_only(child):
            for other in child.orelse:
                yield other
                yield from _walk_run_time(other)
            continue
        yield child
        yield from _walk_run_time(child)


def imports(path: Path) -> set[str]:
    """The modules ``path`` imports at run time (``from x import y`` counts ``x`` and ``x.y``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _walk_run_time(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def offenders(where: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    bad = []
    for path in modules():
        name = module_name(path)
        if not under(name, where):
            continue
        for imported in imports(path):
            if any(under(imported, f) for f in forbidden) and not any(
                under(imported, a) for a in allowed
            ):
                bad.append(f"{name} imports {imported}")
    return sorted(set(bad))


def test_the_import_resolver_sees_relative_and_absolute_imports() -> None:
    found = imports(PACKAGE / "_runtime" / "core" / "run.py")
    assert "flowpipe._runtime.core.loop" in found
    assert "flowpipe._plan.edges" in found
    assert "flowpipe._runtime.backends.base.load_backend" in found
    assert "logging" in found


# -- rule 1: backend names live in the registry ------------------------------------------


def test_backend_names_are_compared_only_by_the_registry_and_option_checks() -> None:
    """Code decides from capabilities, never from ``backend == "process"``."""
    allowed = {"flowpipe._runtime.backends.base", "flowpipe._dsl.options", "flowpipe._plan.compile"}
    bad = []
    for path in modules():
        if module_name(path) in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            for side in [node.left, *node.comparators]:
                elts = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                for e in elts:
                    if isinstance(e, ast.Constant) and e.value in BACKENDS:
                        bad.append(f"{module_name(path)}:{node.lineno} compares with {e.value!r}")
    assert bad == []


def test_the_registry_is_the_one_list_of_backends() -> None:
    assert tuple(REGISTRY) == BACKENDS
    assert get_args(BackendName) == BACKENDS  # the static type spells the same names


# -- rule 2: the core is the same for every backend ---------------------------------------


def test_the_core_imports_no_backend_and_no_shared_memory_transport() -> None:
    assert (
        offenders(
            "flowpipe._runtime.core",
            (
                "flowpipe._runtime.backends",
                "flowpipe._runtime.remote",
                "flowpipe._transport.wire",
                "flowpipe._transport.recycle",
                "flowpipe._transport.segments",
                "cloudpickle",
                "multiprocessing",
            ),
            allowed=("flowpipe._runtime.backends.base",),
        )
        == []
    )


# -- rule 3: backends are plug-ins --------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_backend_imports_another(backend: str) -> None:
    own = "flowpipe._runtime.backends." + REGISTRY[backend].split(".")[0]
    others = tuple(
        "flowpipe._runtime.backends." + REGISTRY[b].split(".")[0] for b in BACKENDS if b != backend
    )
    assert offenders(own, others) == []


def test_the_shared_machinery_imports_no_backend() -> None:
    backends = tuple("flowpipe._runtime.backends." + m.split(".")[0] for m in REGISTRY.values())
    assert offenders("flowpipe._runtime.remote", backends) == []
    assert offenders("flowpipe._runtime.backends.base", backends) == []


# -- rule 4: the runtime works from the plan alone; no import cycles in transport ----------


def test_the_runtime_never_imports_the_graph_layer() -> None:
    assert offenders("flowpipe._runtime", ("flowpipe._dsl",)) == []


def test_wire_and_recycle_do_not_import_each_other() -> None:
    assert offenders("flowpipe._transport.recycle", ("flowpipe._transport.wire",)) == []
    assert (
        offenders(
            "flowpipe._transport.segments",
            ("flowpipe._transport",),
            allowed=("flowpipe._transport.segments",),
        )
        == []
    )


# -- rule 5: a thread-only program stays light --------------------------------------------

HEAVY = ("cloudpickle", "multiprocessing", "numpy", "ray", "tqdm", "difflib", "dataclasses")
if sys.version_info >= (3, 11):  # typing has Never and Unpack; ``_typing`` stands in for the rest
    HEAVY += ("typing_extensions",)


def test_a_thread_only_program_never_imports_the_heavy_modules() -> None:
    code = f"""
import sys
from flowpipe import merge, stage

@stage(workers=2)
def inc(x):
    return x + 1

@stage
def gen(x):
    yield x
    yield -x

pipe = inc | gen | (stage(abs), stage(repr)) | merge(stage(lambda t: t), stage(lambda t: t))
assert len(pipe.run(range(100))) == 400
with pipe.start() as live:
    live.put(1)
    live.close()
    list(live)
print(",".join(m for m in {HEAVY!r} if m in sys.modules))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "", f"a thread-only run imported: {done.stdout.strip()}"


def test_generic_stages_subscript_with_their_default_without_typing_extensions() -> None:
    """``Stage[str, int]`` leaves ``Fn`` to its default at run time too (``_typing.padded``)."""
    from collections.abc import Callable
    from typing import Any

    from flowpipe import Stage
    from flowpipe._dsl.stage import StageClass

    assert get_args(Stage[str, int])[:2] == (str, int)
    if sys.version_info >= (3, 11):  # 3.10's typing_extensions leaves the default out of __args__
        assert Stage[str, int] == Stage[str, int, Callable[..., Any]]
        assert StageClass[str, int] == StageClass[str, int, Callable[..., Any]]
    assert get_args(Stage[str, int, Callable[[str], int]])[2] == Callable[[str], int]
    with pytest.raises(TypeError):
        Stage[str]  # type: ignore[misc]  # In and Out have no default


def test_a_process_run_imports_what_it_needs() -> None:
    """The check above would pass if nothing were ever imported: here they are. A
    process run talks over flowpipe's own frames (``_transport/conn.py``), so it
    needs no ``multiprocessing`` either."""
    code = """
import sys
from flowpipe import stage
assert stage(abs).run([-1, 2], backend="process") == [1, 2]
print("cloudpickle" in sys.modules, "flowpipe._transport.conn" in sys.modules)
print("multiprocessing" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["True", "True", "False"]


# -- size -----------------------------------------------------------------------------------


def test_no_module_is_longer_than_the_limit() -> None:
    long = {
        module_name(p): n for p in modules() if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
