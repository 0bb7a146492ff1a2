"""The examples run: each script is started as a user would start it, in a subprocess."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, (
        f"{name} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
    )
    return done


@pytest.mark.timeout(60)
def test_quickstart_runs() -> None:
    out = run_example("quickstart.py", timeout=50).stdout
    assert "pipeline: read | slow_square[x4] | (label[batch=8], lambda)" in out
    assert "bottleneck:" in out
    assert re.search(r"sequential loop: \d+\.\d+s +flowpipe: \d+\.\d+s", out)


@pytest.mark.timeout(120)
def test_video_analytics_detects_tracks_and_classifies(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2", reason='the video demo needs the "examples" extra')
    pytest.importorskip("skimage", reason='the video demo needs the "examples" extra')
    video = tmp_path / "annotated.avi"
    frames, window = 60, 8

    out = run_example(
        "video_analytics.py",
        *("--frames", str(frames), "--backend", "thread", "--out", str(video)),
        timeout=110,
    ).stdout

    # the pipeline and its statistics table
    assert "pipeline: read | Detect[x" in out
    assert re.search(r"^stage +workers +in +out", out, re.MULTILINE)
    for name in ("read", "Detect", "Track", "classify"):
        assert re.search(rf"^{name} +\d+ ", out, re.MULTILINE), f"no stats row for {name}"
    assert "bottleneck: Detect" in out  # the detector is the slow stage
    # the detector found the face in (nearly) every frame, and the tracker kept one identity
    found = re.search(r"frames with a face: (\d+)/(\d+)", out)
    assert found, out
    with_face, results = int(found[1]), int(found[2])
    assert results == frames - window + 1
    assert with_face >= 0.9 * results
    assert "face #1 at" in out
    assert "face #2" not in out
    # the face moves right, pauses, moves down, then left: the classifier saw each motion
    for label in ("moving right", "still", "moving down", "moving left"):
        assert re.search(rf"labels: .*{label} \d+", out), f"no {label!r} in the labels"
    assert "same results as the sequential loop: yes" in out
    assert re.search(r"sequential loop: \d+\.\d+s +flowpipe \(thread, detect x\d\): \d+\.\d+s", out)
    # the annotated video holds one frame per result
    assert video.stat().st_size > 0
    capture = cv2.VideoCapture(str(video))
    try:
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == results
        ok, image = capture.read()
        assert ok
        assert image.shape == (512, 512, 3)
    finally:
        capture.release()


@pytest.mark.timeout(60)
def test_video_analytics_progress_shows_a_bar(tmp_path: Path) -> None:
    pytest.importorskip("cv2", reason='the video demo needs the "examples" extra')
    pytest.importorskip("skimage", reason='the video demo needs the "examples" extra')
    pytest.importorskip("tqdm", reason='the "examples" extra brings tqdm')
    done = run_example(
        "video_analytics.py",
        *("--frames", "8", "--progress", "--out", str(tmp_path / "annotated.avi")),
        timeout=50,
    )
    assert re.search(r"flowpipe: .*items/s.*bottleneck: ", done.stderr), done.stderr
    assert "note:" not in done.stdout  # no fall-back: --progress shows the bar
