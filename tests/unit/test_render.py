"""``print(pipe)``, ``to_mermaid()`` and the notebook display."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator

from flowpipe import merge, stage
from flowpipe._dsl.render import pipeline_to_svg


@stage
def read(path: str) -> Iterator[int]:
    yield len(path)


@stage(workers=4)
def detect(x: int) -> int:
    return x


@stage
def pose(x: int) -> int:
    return x


@stage
def track(x: int) -> int:
    return x


@stage(batch=32)
def classify(xs: list[object]) -> list[object]:
    return xs


def log_error(item: object, exc: BaseException) -> None:
    """An on_error handler; never called here."""


def test_print_shows_the_spec_example() -> None:
    pipe = read | detect | (pose, track) | classify
    assert str(pipe) == "read | detect[x4] | (pose, track) | classify[batch=32]"
    assert repr(pipe) == str(pipe)


def test_a_stage_prints_its_name_and_options() -> None:
    assert str(pose) == "pose"
    assert str(detect) == "detect[x4]"
    assert repr(classify) == "classify[batch=32]"


def test_print_shows_non_default_options() -> None:
    s = stage(
        pose.target,
        name="big",
        workers=2,
        ordered=False,
        batch=4,
        batch_timeout=0.1,
        buffer=8,
        overflow="drop_oldest",
        retries=3,
        on_error=log_error,
        resources={"num_gpus": 1},
    )
    text = str(s)
    assert text.startswith("big[x2,")
    for part in (
        "ordered=False",
        "batch=4",
        "batch_timeout=0.1",
        "buffer=8",
        "drop_oldest",
        "retries=3",
        "on_error=log_error",
        "num_gpus",
    ):
        assert part in text, (part, text)


def test_print_shows_a_dict_join() -> None:
    pipe = read | {"boxes": detect, "pose": pose | track} | classify
    assert str(pipe) == "read | {boxes: detect[x4], pose: pose | track} | classify[batch=32]"


def test_print_shows_a_merge() -> None:
    pipe = read | merge(pose, detect | track) | classify
    assert str(pipe) == "read | merge(pose, detect[x4] | track) | classify[batch=32]"


def test_print_shows_a_nested_fan_out() -> None:
    pipe = read | (pose, (track, detect))
    assert str(pipe) == "read | (pose, (track, detect[x4]))"


def test_print_shows_a_bound_source() -> None:
    assert str([1, 2] | detect) == "source(list) | detect[x4]"


def test_repeated_stage_names_are_all_printed() -> None:
    assert str(pose | pose | pose) == "pose | pose | pose"


def _nodes_and_edges(chart: str) -> tuple[dict[str, str], set[tuple[str, str]]]:
    nodes = {m[0]: m[1] for m in re.findall(r'^\s+(n\d+)\[?\(?\(?"([^"]*)"', chart, re.M)}
    edges = set(re.findall(r"^\s+(n\d+) --> (n\d+)$", chart, re.M))
    return nodes, edges


def test_mermaid_draws_a_chain_with_options() -> None:
    chart = (read | detect | classify).to_mermaid()
    assert chart.splitlines()[0] == "flowchart LR"
    nodes, edges = _nodes_and_edges(chart)
    ids = {label: ident for ident, label in nodes.items()}
    assert set(ids) == {"read", "detect[x4]", "classify[batch=32]"}
    assert edges == {
        (ids["read"], ids["detect[x4]"]),
        (ids["detect[x4]"], ids["classify[batch=32]"]),
    }


def test_mermaid_draws_a_join() -> None:
    chart = (read | (pose, track) | classify).to_mermaid()
    nodes, edges = _nodes_and_edges(chart)
    ids = {label: ident for ident, label in nodes.items()}
    assert "join" in ids
    assert (ids["read"], ids["pose"]) in edges
    assert (ids["read"], ids["track"]) in edges
    assert (ids["pose"], ids["join"]) in edges
    assert (ids["track"], ids["join"]) in edges
    assert (ids["join"], ids["classify[batch=32]"]) in edges


def test_mermaid_draws_a_merge_without_a_join_node() -> None:
    chart = (read | merge(pose, track) | classify).to_mermaid()
    nodes, edges = _nodes_and_edges(chart)
    ids = {label: ident for ident, label in nodes.items()}
    assert "join" not in ids
    assert (ids["pose"], ids["classify[batch=32]"]) in edges
    assert (ids["track"], ids["classify[batch=32]"]) in edges


def test_mermaid_gives_a_repeated_stage_one_node_per_use() -> None:
    nodes, edges = _nodes_and_edges((pose | pose).to_mermaid())
    assert len(nodes) == 2
    assert len(edges) == 1


def test_mermaid_of_a_single_stage() -> None:
    chart = detect.to_mermaid()
    assert chart == 'flowchart LR\n    n1["detect[x4]"]'


def test_mermaid_keeps_labels_inside_quotes() -> None:
    s = stage(pose.target, overflow="drop_oldest")
    chart = s.to_mermaid()
    assert '"' not in chart.split('["', 1)[1].rsplit('"]', 1)[0]
    assert "drop_oldest" in chart


def test_markdown_display_for_notebooks() -> None:
    pipe = read | detect | (pose, track)
    text = pipe._repr_markdown_()
    assert text.startswith("```mermaid\n")
    assert pipe.to_mermaid() in text
    assert str(pipe) in text
    assert detect._repr_markdown_().startswith("```mermaid\n")


# -- the SVG picture a notebook shows ---------------------------------------------------


def _boxes(svg: str) -> dict[str, list[tuple[float, float]]]:
    """Each stage label's box corners (x, y), from the picture."""
    root = ET.fromstring(svg)
    rects = root.findall(f"{SVG}rect")
    texts = [t for t in root.findall(f"{SVG}text") if t.get("font-size") == "12"]
    found: dict[str, list[tuple[float, float]]] = {}
    for rect, text in zip(rects, texts):
        found.setdefault(text.text or "", []).append(
            (float(rect.get("x", 0)), float(rect.get("y", 0)))
        )
    return found


SVG = "{http://www.w3.org/2000/svg}"


def test_a_pipeline_draws_itself_left_to_right_with_branches_stacked() -> None:
    pipe = read | detect | (pose, track) | classify
    boxes = _boxes(
        pipe._repr_html_().split("<pre>")[0].removeprefix('<div class="flowpipe-graph">')
    )
    assert list(boxes) == ["read", "detect[x4]", "pose", "track", "classify[batch=32]"]
    (read_at,), (detect_at,), (pose_at,), (track_at,), (classify_at,) = boxes.values()
    assert read_at[0] < detect_at[0] < pose_at[0] == track_at[0] < classify_at[0]
    assert pose_at[1] < track_at[1]  # the branches one above the other
    root = ET.fromstring(pipeline_to_svg(pipe))
    assert root.find(f"{SVG}circle/{SVG}title").text == "join"  # type: ignore[union-attr]
    assert root.find(f"{SVG}title").text == str(pipe)  # type: ignore[union-attr]


def test_the_notebook_display_has_the_picture_the_text_and_the_mermaid_source() -> None:
    pipe = read | detect
    page = pipe._repr_html_()
    assert page.startswith('<div class="flowpipe-graph"><svg ')
    assert "<pre>read | detect[x4]</pre>" in page
    assert "<summary>Mermaid</summary><pre>flowchart LR" in page
    ET.fromstring(page)  # one well-formed element
    assert detect._repr_html_().count("<rect ") == 1  # a stage draws as a one-stage pipeline


def test_a_merge_has_no_join_and_a_bound_source_is_drawn_first() -> None:
    pipe = [1, 2] | merge(pose, track) | classify
    svg = pipeline_to_svg(pipe)
    assert "<circle" not in svg
    boxes = _boxes(svg)
    assert list(boxes) == ["source(list)", "pose", "track", "classify[batch=32]"]


def test_the_picture_escapes_names_and_shows_stats_notes_by_label() -> None:
    odd = stage(lambda x: x, name="a<b&c")
    pipe = odd | odd
    svg = pipeline_to_svg(pipe, {"a<b&c": "first", "a<b&c#2": "second"})
    root = ET.fromstring(svg)
    notes = [t.text for t in root.findall(f"{SVG}text") if t.get("font-size") == "10"]
    assert notes == ["first", "second"]
    assert list(_boxes(svg)) == ["a<b&c"]
    assert len(_boxes(svg)["a<b&c"]) == 2
