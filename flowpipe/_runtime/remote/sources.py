"""Source lines for code shipped by value, so a worker's traceback names the user's lines.

cloudpickle ships functions and classes defined in ``__main__``, a notebook cell
or a module registered by value as code objects whose file is
``"<dynamic-code>"``: a worker's traceback would say ``File "<dynamic-code>",
line 11, in grade`` with no source line. The caller, which has the real file
(a script, or a cell that IPython put in ``linecache``), collects the code the
stage reaches and its source lines (``shipped``); they travel with the stage
(``LoadStage.sources``), the worker registers them (``register``) and names
each such frame by its real file, line and text (``traceback_text``).
"""

from __future__ import annotations

import linecache
import sys
import traceback
import types
from collections.abc import Iterator
from typing import Any, NamedTuple, cast

import cloudpickle

from ..._errors import hide_internal_frames

DYNAMIC = "<dynamic-code>"
MAX_CODES = 500  # code objects collected at most (a huge notebook)


class Sources(NamedTuple):
    """``codes``: (name, first line, last line, file) of each code object shipped by
    value; ``files``: the lines of each of those files."""

    codes: list[tuple[str, int, int, str]]
    files: dict[str, list[str]]


def _by_value(obj: Any) -> bool:
    """Whether cloudpickle ships ``obj`` by value: defined in ``__main__`` (a script, a
    notebook), in a module registered by value, or where no import finds it (a local
    function, a lambda)."""
    module = getattr(obj, "__module__", None)
    by_value: set[str] = cloudpickle.list_registry_pickle_by_value()
    local = "<" in getattr(obj, "__qualname__", "<")  # "f.<locals>.g", "<lambda>"
    return module == "__main__" or module in by_value or module not in sys.modules or local


def _code_of(obj: Any) -> Iterator[types.CodeType]:
    """The code objects of a function, or of a class's methods."""
    if isinstance(obj, (staticmethod, classmethod)):
        obj = cast("Any", obj).__func__
    if isinstance(obj, property):
        for f in (obj.fget, obj.fset, obj.fdel):
            yield from _code_of(f)
    elif isinstance(obj, types.FunctionType):
        yield obj.__code__
    elif isinstance(obj, type):
        for value in vars(obj).values():
            yield from _code_of(value)


def _nested(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _nested(const)


def shipped(target: Any) -> Sources | None:
    """The source lines of the code shipped by value that ``target`` (a stage's
    function or class) reaches through its globals; ``None`` when there is none."""
    codes: list[tuple[str, int, int, str]] = []
    files: dict[str, list[str]] = {}
    todo, seen = [target], set[int]()
    while todo and len(codes) < MAX_CODES:
        obj = todo.pop()
        if id(obj) in seen or not _by_value(obj):
            continue
        seen.add(id(obj))
        for top in _code_of(obj):
            globals_: dict[str, Any] | None = getattr(obj, "__globals__", None)
            for code in _nested(top):
                lines = [n for _, _, n in code.co_lines() if n is not None]
                name = code.co_filename
                if lines and name not in files:
                    files[name] = linecache.getlines(name)
                if lines and files[name]:
                    codes.append((code.co_name, min(lines), max(lines), name))
                if globals_ is not None:  # what it calls: functions, classes
                    todo.extend(
                        g
                        for n in code.co_names
                        if isinstance(g := globals_.get(n), (types.FunctionType, type))
                    )
        if isinstance(obj, type):  # a class's methods reach their module's globals
            todo.extend(v for v in vars(obj).values() if isinstance(v, types.FunctionType))
    files = {name: lines for name, lines in files.items() if lines}
    return Sources(codes, files) if codes else None


_codes: dict[str, list[tuple[int, int, str]]] = {}  # by code name: its lines and file


def register(sources: Sources | None) -> None:
    """In the worker: keep where each shipped code object came from, and its lines."""
    if sources is None:
        return
    for name, lines in sources.files.items():
        linecache.cache[name] = (sum(map(len, lines)), None, lines, name)  # no file here
    for name, first, last, filename in sources.codes:
        _codes.setdefault(name, []).append((first, last, filename))


def _real_file(frame: traceback.FrameSummary) -> str | None:
    for first, last, filename in _codes.get(frame.name, ()):
        if frame.lineno is not None and first <= frame.lineno <= last:
            return filename
    return None


def _name_frames(te: traceback.TracebackException, seen: set[int]) -> None:
    if id(te) in seen:
        return
    seen.add(id(te))
    for frame in te.stack:
        if frame.filename == DYNAMIC:
            real = _real_file(frame)
            if real is not None:
                frame.filename = real
    for chained in (te.__cause__, te.__context__):
        if chained is not None:
            _name_frames(chained, seen)


def traceback_text(exc: BaseException) -> str:
    """``exc``'s traceback as text, from the user's code on, its shipped frames named
    by their real file with their source line."""
    hide_internal_frames(exc)
    te = traceback.TracebackException(
        type(exc), exc, exc.__traceback__, lookup_lines=False, compact=True
    )
    _name_frames(te, set())
    return "".join(te.format())
