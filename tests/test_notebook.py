"""examples/quickstart.ipynb runs top to bottom in a real Jupyter kernel, as a user would run it.

The notebook is executed with nbclient in a fresh IPython kernel (ipykernel), in
the examples folder; every cell must run without an error, and the outputs a
reader relies on (the graph, the progress bar, the stats table, the advice, the
annotated picture, the process-backend results) must be there. The stored
notebook itself carries no outputs, so that its diffs stay readable.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOK = EXAMPLES / "quickstart.ipynb"
KERNEL = "flowpipe-test"  # a kernel spec of our own: this interpreter, whatever else is installed


def test_stored_notebook_has_no_outputs() -> None:
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code
    for cell in code:
        assert cell["outputs"] == [], f"cell {cell.get('id')!r} was committed with outputs"
        assert cell["execution_count"] is None, f"cell {cell.get('id')!r} has an execution count"
    assert "widgets" not in nb["metadata"], "widget state was committed"


def kernel_spec_dir(tmp_path: Path) -> Path:
    """A Jupyter data folder with one kernel spec: ipykernel in this very interpreter."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "flowpipe test", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel), encoding="utf-8")
    return tmp_path / "jupyter"


def texts(cell: Any) -> dict[str, str]:
    """A code cell's outputs by kind, text joined: ``stdout``, ``stderr``, the cell's value
    by MIME type (``text/plain``, ``text/markdown``), and ``display:`` + MIME type for
    what the cell displayed on the way (a progress widget)."""
    found: dict[str, str] = {}
    for out in cell["outputs"]:
        if out["output_type"] == "stream":
            found[out["name"]] = found.get(out["name"], "") + out["text"]
        elif out["output_type"] in ("execute_result", "display_data"):
            prefix = "display:" if out["output_type"] == "display_data" else ""
            for mime, value in out["data"].items():
                text = value if isinstance(value, str) else json.dumps(value)
                found[prefix + mime] = found.get(prefix + mime, "") + text
    return found


@pytest.mark.timeout(120)
def test_notebook_runs_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reason = "running the notebook needs nbclient, nbformat and ipykernel (the dev extra)"
    nbformat = pytest.importorskip("nbformat", reason=reason)
    nbclient = pytest.importorskip("nbclient", reason=reason)
    pytest.importorskip("ipykernel", reason=reason)
    pytest.importorskip("tqdm", reason="the notebook shows a progress bar: flowpipe[progress]")
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_spec_dir(tmp_path)))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's own paths, no warning

    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=60,  # seconds per cell
        resources={"metadata": {"path": str(EXAMPLES)}},  # the kernel's working folder
    )
    # execute() starts the kernel, runs every cell (raising CellExecutionError at
    # the first cell that raises), then shuts the kernel down and waits for it.
    client.execute()
    assert client.km is None or not client.km.has_kernel, "the kernel was left running"

    cells = {c["id"]: c for c in nb.cells if c["cell_type"] == "code"}
    for cell_id, cell in cells.items():
        errors = [o for o in cell["outputs"] if o["output_type"] == "error"]
        assert not errors, f"cell {cell_id!r} raised: {errors}"
        assert cell["execution_count"] is not None, f"cell {cell_id!r} did not run"
    out = {cell_id: texts(cell) for cell_id, cell in cells.items()}

    # a pipeline as a cell's value draws its graph
    graph = out["stages"]["text/markdown"]
    assert graph.startswith("```mermaid\nflowchart LR\n"), graph
    for name in ("parse", "enrich", "label"):
        assert f'["{name}"]' in graph
    assert out["print-pipe"]["stdout"] == "parse | enrich | label\n"
    drawn = out["stages"]["text/html"]  # the picture front ends show: flowpipe's own SVG
    assert drawn.startswith('<div class="flowpipe-graph"><svg '), drawn
    assert all(f">{name}</text>" in drawn for name in ("parse", "enrich", "label"))

    # the run with progress=True: the results, and a bar: a widget where the progress
    # extra is installed (ipywidgets: the dev install has it), never tqdm's warning
    progress = out["run-progress"]
    assert progress["text/plain"] == "['0 is even', '1 is odd', '4 is even', '9 is odd']"
    widget = "display:application/vnd.jupyter.widget-view+json" in progress
    if importlib.util.find_spec("ipywidgets") is not None:
        assert widget, progress
        assert "IProgress not found" not in progress.get("stderr", ""), progress
    else:
        assert widget or "60/60" in progress.get("stderr", ""), progress

    # the stats table, the bottleneck and the advice
    table = out["stats"]["text/markdown"]
    assert table.startswith("| stage | workers | in | out | skipped |"), table
    assert "| enrich | 1 | 60 | 60 |" in table
    assert out["stats"]["text/plain"].startswith("stage "), out["stats"]  # the table, as text
    assert "<tr>" in out["stats"]["text/html"]
    advice = out["advice"]["stdout"]
    assert "bottleneck: enrich (busy " in advice
    assert re.search(r"advice: `enrich` is busy \d+% .*try `workers=\d+`", advice), advice
    assert re.fullmatch(r"workers=1: \d+\.\d\ds   workers=4: \d+\.\d\ds\n", out["faster"]["stdout"])

    # the picture after a run: annotated graph, then the table
    picture = out["run-display"]["text/markdown"]
    assert picture.startswith("```mermaid\nflowchart LR\n"), picture
    assert re.search(r'\["enrich\[x4\]<br/>[\d,.]+[kM]? items/s, busy \d+%"\]', picture), picture
    assert "| stage | workers | in | out |" in picture
    shown = out["run-display"]["text/html"]
    assert shown.startswith("<div><p><code>&lt;flowpipe.Run "), shown
    for part in ("<svg ", "items/s, busy", "<table>"):
        assert part in shown, shown
    mermaid = out["mermaid-text"]["stdout"]
    assert mermaid.startswith("flowchart LR\n"), mermaid
    assert "items/s, busy" in mermaid

    # a class stage, and functions defined in the notebook on the process backend
    assert out["class-stage"]["text/plain"] == "[2, 0, -1, 1]"
    assert out["process"]["text/plain"] == "[0, 10, 70, 20, 50, 80, 160, 30, 190, 60]"
