"""examples/behaviour_recognition.py: the same pipeline code with a stand-in model on every
backend, the script as a user starts it, and the real model when its extra is installed."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("cv2", reason='the behaviour example needs the "examples" extra')
pytest.importorskip("skimage", reason='the behaviour example needs the "examples" extra')

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "behaviour_recognition.py"
PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
NO_NETWORK = dict.fromkeys(PROXIES, "http://127.0.0.1:9")  # a dead port: downloads would fail


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    """The example imported as a module; its classes travel to workers by value, as from a script."""
    import cloudpickle

    spec = importlib.util.spec_from_file_location("behaviour_recognition", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    cloudpickle.register_pickle_by_value(module)
    try:
        yield module
    finally:
        cloudpickle.unregister_pickle_by_value(module)
        del sys.modules[spec.name]


def run_script(*args: str, env: dict[str, str] | None = None, timeout: float) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, f"exited with {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


def by_camera(results: dict[tuple[str, int], Any]) -> dict[str, list[Any]]:
    cameras: dict[str, list[Any]] = {}
    for (camera, index), result in sorted(results.items()):
        cameras.setdefault(camera, []).append((index, [t.id for t, _ in result.tracks]))
    return cameras


@pytest.mark.timeout(120)
def test_the_pipeline_with_a_stand_in_model_gives_the_loops_results(
    example: ModuleType, backend: str
) -> None:
    cameras, frames = example.CAMERAS[:3], 12
    expected = example.sequential(cameras, frames, example.StandInPose)
    pipe = example.build_pipeline(example.StandInPose, workers=2)
    feeds = example.camera_feeds(cameras, frames)

    run = pipe.iter(feeds, backend=backend)
    out = list(run)

    results = {(r.frame.camera, r.frame.index): r for r in out}
    every = {(c.name, i) for c in cameras for i in range(frames)}
    # Every frame once; on failure, say which are missing and where (frames were once lost
    # here under load: a keyed slice's parts, see test_keyed.py, "turning slow").
    assert (len(out), sorted(every - set(results)), feeds.dropped) == (
        3 * frames,
        [],
        {c.name: 0 for c in cameras},
    ), run.stats  # each stage's items in and out: where frames went missing
    assert feeds.dropped == {c.name: 0 for c in cameras}
    assert example.summaries(results) == example.summaries(expected)
    # every camera served, each with its own tracker: one person, track 1, as in the loop
    tracks = by_camera(results)
    assert tracks == by_camera(expected)
    assert sorted(tracks) == ["cam0", "cam1", "cam2"]
    assert all(len(seen) == frames for seen in tracks.values())
    ids = [found for seen in tracks.values() for _, found in seen]
    assert ids == [[1]] * (3 * frames)  # the stand-in finds the person in every frame


@pytest.mark.timeout(120)
def test_the_model_stage_on_processes_too(example: ModuleType) -> None:
    cameras, frames = example.CAMERAS[3:5], 10
    expected = example.sequential(cameras, frames, example.StandInPose)
    pipe = example.build_pipeline(example.StandInPose, workers=2, model_backend="process")

    out = pipe.run(example.camera_feeds(cameras, frames), backend="thread")

    assert example.summaries({(r.frame.camera, r.frame.index): r for r in out}) == (
        example.summaries(expected)
    )


@pytest.mark.timeout(120)
def test_a_kept_model_serves_the_next_run_without_loading_again(example: ModuleType) -> None:
    """As in a notebook cell run twice: the model stage with keep_alive=True."""
    import flowpipe

    loads: list[int] = []

    class CountedStandIn(example.StandInPose):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            loads.append(1)
            super().__init__()

    cameras, frames = example.CAMERAS[:4], 6
    expected = example.summaries(example.sequential(cameras, frames, example.StandInPose))
    model = example.DetectPose(CountedStandIn).with_options(workers=2, keep_alive=True)
    pipe = example.capture | model | example.TrackPeople | example.classify
    try:
        for _ in range(2):
            out = pipe.run(example.camera_feeds(cameras, frames))
            assert example.summaries({(r.frame.camera, r.frame.index): r for r in out}) == expected
    finally:
        flowpipe.shutdown()
    assert len(loads) == 2  # one model per worker, loaded in the first run only


def test_actions_are_named_from_the_shoulders_and_the_pose(example: ModuleType) -> None:
    rgb = example.shoot(example.CAMERAS[0], 0, 1)[..., ::-1]  # a camera gives BGR
    lm = example.StandInPose()(rgb)

    def track(*spots: tuple[int, float, float, float], landmarks: Any = lm) -> Any:
        history = tuple(example.Spot(*s) for s in spots)
        return example.Track(1, example.Box(0, 0, 10, 10), history, landmarks)

    assert example.action(track((0, 50, 50, 40))) == "new"
    assert example.action(track((0, 50, 50, 40), (5, 50.5, 50, 40))) == "still"
    assert example.action(track((0, 50, 50, 40), (5, 40, 51, 40))) == "moving left"
    assert example.action(track((0, 50, 50, 40), (5, 60, 49, 40))) == "moving right"
    assert example.action(track((0, 50, 50, 40), (5, 50, 60, 40))) == "moving down"
    assert example.action(track((0, 50, 50, 40), (5, 50, 40, 40))) == "moving up"
    assert example.action(track((0, 50, 50, 40), (5, 50, 50, 48))) == "coming closer"
    assert example.action(track((0, 50, 50, 40), (5, 50, 50, 32))) == "moving away"
    raised = lm.copy()
    raised[[15, 16], 1] = lm[[11, 12], 1].min() - 20  # both wrists above the shoulders
    assert example.action(track((0, 50, 50, 40), landmarks=raised)) == "arms raised"


@pytest.mark.timeout(120)
def test_the_script_checks_itself_and_writes_the_video_and_a_frame(tmp_path: Path) -> None:
    import cv2

    video, png = tmp_path / "annotated.avi", tmp_path / "frame.png"
    out = run_script(
        *("--model", "standin", "--cameras", "4", "--frames", "16", "--model-backend", "process"),
        *("--out", str(video), "--png", str(png)),
        timeout=110,
    )

    assert "pipeline: capture[buffer=16] | DetectPose[x2,buffer=16,backend='process'" in out
    for name in ("sources", "capture", "DetectPose", "TrackPeople", "classify"):
        assert re.search(rf"^{name} +\d+ ", out, re.MULTILINE), f"no stats row for {name}"
    for camera in ("cam0", "cam1", "cam2", "cam3"):
        assert re.search(rf"^  {camera}: 16 frames, tracks \[1\]", out, re.MULTILINE), out
    assert "same results as the sequential loop: yes" in out
    assert re.search(r"sequential loop: \d+\.\d+s +flowpipe \(thread, model x2 on process\)", out)
    capture = cv2.VideoCapture(str(video))
    try:
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 16  # one 2x2 mosaic per frame
        ok, image = capture.read()
        assert ok
        assert image.shape == (640, 640, 3)
    finally:
        capture.release()
    picture = cv2.imread(str(png))
    assert picture is not None
    assert picture.shape == (640, 640, 3)


@pytest.mark.timeout(300)
def test_the_real_model_runs_offline_and_sees_the_motion(tmp_path: Path) -> None:
    if importlib.util.find_spec("mediapipe") is None:
        pytest.skip('needs the "pose" extra (mediapipe, about 1 GB with jax): not part of dev')
    out = run_script(
        *("--cameras", "2", "--frames", "30", "--out", str(tmp_path / "annotated.avi")),
        env=NO_NETWORK,
        timeout=280,
    )

    assert "model: mediapipe" in out
    assert "same results as the sequential loop: yes" in out
    assert re.search(r"^  cam0: 30 frames, tracks \[1\]; mostly .*moving right", out, re.MULTILINE)
    assert re.search(r"^  cam1: 30 frames, tracks \[1\]; mostly .*moving left", out, re.MULTILINE)
