"""Video analytics with flowpipe: read | detect | track | classify.

The example makes its own video (no download): the face from scikit-image's
bundled ``astronaut`` photo moves over a plain background -- right, pauses,
down, then left. A real detector finds it in every frame (OpenCV 4's bundled
Haar face cascade), an IoU tracker gives it an identity, and a classifier
looks at the last few positions of each track to say "moving left",
"moving right", "moving up", "moving down" or "still".

The same stages run twice: once as a plain sequential loop, once as a flowpipe
pipeline (the detector on several workers; OpenCV releases the GIL, so threads
run detections in parallel). The script prints some per-frame results, the
pipeline's statistics table, both timings, and writes an annotated video.

Run it (after ``pip install -e '.[examples]'``):

    python examples/video_analytics.py                 # 200 frames, threads
    python examples/video_analytics.py --frames 60 --workers 4 --out annotated.mp4

See docs/video-demo.md for a walk through the code and its output.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

try:
    import cv2
    import numpy as np
    from skimage import data as skdata
except ImportError as exc:  # pragma: no cover - depends on the environment
    sys.exit(
        f"this example needs OpenCV 4 and scikit-image ({exc.name} is missing): "
        "pip install -e '.[examples]' in the flowpipe checkout"
    )

from flowpipe import GraphError, MissingExtra, RunOptionError, stage

SIZE = 512  # frames are SIZE x SIZE pixels
FPS = 25
WINDOW = 8  # frames of track history the classifier looks at
# Frames travel inside dataclasses, whose size flowpipe cannot see, so the stages
# that receive them get an explicit buffer: at most 16 waiting frames (12 MB) each.
FRAMES = 16
CASCADE = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")  # type: ignore[attr-defined]
Image = Any  # a NumPy array of shape (SIZE, SIZE, 3), BGR


# -- the data that flows between stages ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int

    @property
    def center(self) -> tuple[float, float]:
        return (self.x + self.w / 2, self.y + self.h / 2)

    def iou(self, other: Box) -> float:
        """Intersection over union: 1.0 for the same box, 0.0 for disjoint boxes."""
        ix = max(0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        union = self.w * self.h + other.w * other.h - inter
        return inter / union if union else 0.0


@dataclasses.dataclass(frozen=True)
class Frame:
    index: int
    image: Image


@dataclasses.dataclass(frozen=True)
class Detections:
    frame: Frame
    boxes: tuple[Box, ...]


@dataclasses.dataclass(frozen=True)
class Tracked:
    frame: Frame
    tracks: tuple[tuple[int, Box], ...]  # (track id, box)


@dataclasses.dataclass(frozen=True)
class Result:
    frame: Frame
    tracks: tuple[tuple[int, Box, str], ...]  # (track id, box, label)


# -- the stages ---------------------------------------------------------------------


@stage
def read(path: str) -> Iterator[Frame]:
    """A generator stage: one video path in, one ``Frame`` out per frame."""
    video = cv2.VideoCapture(path)
    try:
        index = 0
        while True:
            ok, image = video.read()
            if not ok:
                return
            yield Frame(index, image)
            index += 1
    finally:
        video.release()


@stage(workers=2, buffer=FRAMES)  # main() sets the number of workers with --workers
class Detect:
    """Haar face detection. A class stage: each worker loads its own cascade, once."""

    def __init__(
        self, scale_factor: float = 1.1, min_neighbors: int = 5, opencv_threads: int = 1
    ) -> None:
        # Set here, in the worker: a worker process does not inherit the caller's setting.
        cv2.setNumThreads(opencv_threads)
        self.cascade = cv2.CascadeClassifier(CASCADE)
        if self.cascade.empty():
            raise RuntimeError(f"cannot load the Haar cascade {CASCADE}")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors

    def __call__(self, frame: Frame) -> Detections:
        gray = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)
        found = self.cascade.detectMultiScale(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(48, 48)
        )
        return Detections(frame, tuple(Box(*(int(v) for v in b)) for b in found))


@stage(buffer=FRAMES)  # one worker, in order: its state depends on seeing every frame in turn
class Track:
    """A greedy IoU tracker: a detection continues the track it overlaps most."""

    def __init__(self, min_iou: float = 0.2, max_missed: int = 5) -> None:
        self.min_iou = min_iou
        self.max_missed = max_missed
        self.tracks: dict[int, Box] = {}
        self.missed: dict[int, int] = {}
        self.next_id = 1

    def __call__(self, dets: Detections) -> Tracked:
        matched: list[tuple[int, Box]] = []
        free = dict(self.tracks)
        for box in sorted(dets.boxes, key=lambda b: -b.w * b.h):
            best = max(free, key=lambda t: free[t].iou(box), default=None)
            if best is not None and free[best].iou(box) >= self.min_iou:
                del free[best]
                track_id = best
            else:
                track_id, self.next_id = self.next_id, self.next_id + 1
            self.tracks[track_id], self.missed[track_id] = box, 0
            matched.append((track_id, box))
        for track_id in free:  # not seen in this frame
            self.missed[track_id] += 1
            if self.missed[track_id] > self.max_missed:
                del self.tracks[track_id], self.missed[track_id]
        return Tracked(dets.frame, tuple(sorted(matched)))


def motion_label(dx: float, dy: float, still_below: float = 1.0) -> str:
    """Name a per-frame displacement (pixels per frame) of a track's centre."""
    if max(abs(dx), abs(dy)) < still_below:
        return "still"
    if abs(dx) >= abs(dy):
        return "moving right" if dx > 0 else "moving left"
    return "moving down" if dy > 0 else "moving up"


@stage(window=WINDOW, buffer=FRAMES)
def classify(history: Sequence[Tracked]) -> Result:
    """A sliding-window stage: called with the last WINDOW tracked frames, newest last."""
    newest = history[-1]
    labelled = []
    for track_id, box in newest.tracks:
        seen = [(t.frame.index, b) for t in history for tid, b in t.tracks if tid == track_id]
        (first_index, first), (last_index, last) = seen[0], seen[-1]
        frames = last_index - first_index
        if frames == 0:
            label = "new"
        else:
            dx = (last.center[0] - first.center[0]) / frames
            dy = (last.center[1] - first.center[1]) / frames
            label = motion_label(dx, dy)
        labelled.append((track_id, box, label))
    return Result(newest.frame, tuple(labelled))


# -- making the input and writing the output ----------------------------------------


def face_sprite() -> Image:
    """The astronaut's head and shoulders, from the photo scikit-image ships, in BGR."""
    photo = skdata.astronaut()  # type: ignore[no-untyped-call]  # 512 x 512 RGB, shipped in the package
    return cv2.cvtColor(photo[20:200, 140:310], cv2.COLOR_RGB2BGR)


def path_of_face(t: float) -> tuple[int, int]:
    """Top-left corner of the face at time t in [0, 1]: right, pause, down, left."""
    left, right, top, bottom = 20, 320, 40, 300
    if t < 0.3:
        s = t / 0.3
        return round(left + s * (right - left)), top
    if t < 0.5:
        return right, top
    if t < 0.7:
        s = (t - 0.5) / 0.2
        return right, round(top + s * (bottom - top))
    s = (t - 0.7) / 0.3
    return round(right - s * (right - left)), bottom


def open_writer(path: Path) -> Any:
    codec = "MJPG" if path.suffix.lower() == ".avi" else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*codec), FPS, (SIZE, SIZE))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write a video to {path} (try an .avi or .mp4 name)")
    return writer


def make_video(path: Path, frames: int) -> None:
    """Write the input video: the face moving over a smooth colour gradient."""
    sprite = face_sprite()
    h, w = sprite.shape[:2]
    ramp = np.linspace(0, 1, SIZE, dtype=np.float32)
    background = np.empty((SIZE, SIZE, 3), np.uint8)
    background[..., 0] = (60 + 120 * ramp)[None, :]  # blue grows to the right
    background[..., 1] = (90 + 60 * ramp)[:, None]  # green grows downwards
    background[..., 2] = 70
    writer = open_writer(path)
    try:
        for i in range(frames):
            x, y = path_of_face(i / max(frames - 1, 1))
            image = background.copy()
            image[y : y + h, x : x + w] = sprite
            writer.write(image)
    finally:
        writer.release()


def annotate(result: Result) -> Image:
    image = result.frame.image.copy()
    for track_id, box, label in result.tracks:
        cv2.rectangle(image, (box.x, box.y), (box.x + box.w, box.y + box.h), (0, 255, 0), 2)
        text = f"#{track_id} {label}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.6, 2)
        x, y = min(box.x, SIZE - tw - 4), max(box.y - 8, th + 8)  # keep the label in the frame
        cv2.rectangle(image, (x - 2, y - th - 6), (x + tw + 2, y + 4), (0, 0, 0), -1)
        cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 0), 2)
    cv2.putText(
        image,
        f"frame {result.frame.index}",
        (10, SIZE - 12),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.6,
        (255, 255, 255),
        2,
    )
    return image


def describe(result: Result) -> str:
    found = ", ".join(
        f"face #{tid} at ({int(b.center[0])}, {int(b.center[1])}) {label}"
        for tid, b, label in result.tracks
    )
    return f"frame {result.frame.index:4d}: {found or 'no face'}"


# -- the two ways to run it ---------------------------------------------------------


def sequential(video: Path, out: Path) -> list[Result]:
    """The plain loop flowpipe replaces: the same stages, called one after another."""
    detect, track = Detect(), Track()  # called directly, a class stage builds one instance
    history: collections.deque[Tracked] = collections.deque(maxlen=WINDOW)
    results = []
    writer = open_writer(out)
    try:
        for frame in read(str(video)):
            history.append(track(detect(frame)))
            if len(history) == WINDOW:
                result = classify(tuple(history))
                writer.write(annotate(result))
                results.append(result)
    finally:
        writer.release()
    return results


def run_pipeline(pipe: Any, video: Path, out: Path, args: argparse.Namespace) -> list[Result]:
    """Run the pipeline over the video, write the annotated frames, print a few results."""
    try:
        run = pipe.iter([str(video)], backend=args.backend, progress=args.progress)
    except (GraphError, RunOptionError, MissingExtra) as exc:
        sys.exit(f"cannot run on backend {args.backend!r}: {exc}")

    results: list[Result] = []
    last_seen: dict[int, str] = {}
    writer = open_writer(out)
    try:
        with run:
            for result in run:
                writer.write(annotate(result))
                results.append(result)
                now = {tid: label for tid, _, label in result.tracks}
                if result.frame.index % args.every == 0 or now != last_seen:
                    print(describe(result))  # every Nth frame, and whenever a label changes
                last_seen = now
    finally:
        writer.release()
    print()
    print(run.stats)
    print()
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200, help="frames to make (default 200)")
    parser.add_argument("--backend", default="thread", help="flowpipe backend (default thread)")
    parser.add_argument(
        "--workers",
        type=int,
        default=max(2, min(8, os.cpu_count() or 2)),
        help="detector workers (default: the number of CPU cores, 2 to 8)",
    )
    parser.add_argument(
        "--opencv-threads",
        type=int,
        default=1,
        help="OpenCV's own threads per call, in the loop and the pipeline alike "
        "(default 1: flowpipe's workers give the parallelism; -1: OpenCV's default)",
    )
    parser.add_argument("--progress", action="store_true", help="show a live progress bar")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "flowpipe-video-demo.mp4",
        help="annotated video to write, .mp4 or .avi (default: in the temporary directory)",
    )
    parser.add_argument("--every", type=int, default=25, help="print every Nth frame's result")
    args = parser.parse_args(argv)
    if args.frames < WINDOW:
        parser.error(f"--frames must be at least {WINDOW} (the classifier's window)")

    # By default one OpenCV thread per call, in the loop and in the pipeline alike:
    # the parallelism comes from flowpipe's workers, which would otherwise compete
    # with OpenCV's own threads for the same cores (see docs/video-demo.md).
    cv2.setNumThreads(args.opencv_threads)

    # (mypy sees a decorated class as the class itself, not as the stage @stage made of it)
    detect = Detect(opencv_threads=args.opencv_threads).with_options(workers=args.workers)  # type: ignore[attr-defined]
    pipe = read | detect | Track() | classify

    with tempfile.TemporaryDirectory(prefix="flowpipe-video-") as tmp:
        video = Path(tmp) / "input.mp4"
        make_video(video, args.frames)
        print(f"made a video of {args.frames} frames, {SIZE}x{SIZE}")

        start = time.perf_counter()
        expected = sequential(video, Path(tmp) / "sequential.mp4")
        loop_time = time.perf_counter() - start

        print(f"pipeline: {pipe}")
        start = time.perf_counter()
        results = run_pipeline(pipe, video, args.out, args)
        pipe_time = time.perf_counter() - start

    labels = collections.Counter(label for r in results for _, _, label in r.tracks)
    with_face = sum(1 for r in results if r.tracks)
    counts = ", ".join(f"{label} {n}" for label, n in labels.most_common())
    print(f"frames with a face: {with_face}/{len(results)}; labels: {counts}")
    same = [describe(r) for r in results] == [describe(r) for r in expected]
    print(f"same results as the sequential loop: {'yes' if same else 'NO'}")
    print(
        f"sequential loop: {loop_time:.2f}s   flowpipe ({args.backend}, detect x{args.workers}): "
        f"{pipe_time:.2f}s   speed-up: x{loop_time / pipe_time:.2f}"
        f"   (OpenCV threads per call: {cv2.getNumThreads()}, CPU cores: {os.cpu_count()})"
    )
    print(f"annotated video: {args.out}")
    if not same:
        sys.exit("the pipeline's results differ from the sequential loop's")


if __name__ == "__main__":
    main()
