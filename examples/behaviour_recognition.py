"""Behaviour recognition on several cameras: capture | pose | track | classify.

A real pretrained pose model finds a person's 33 body landmarks in each frame
(MediaPipe Pose, whose model files ship inside the ``mediapipe`` wheel:
nothing is downloaded), a tracker per camera follows the person from frame to
frame, and a classifier names what the track does: "moving left", "moving
right", "moving up", "moving down", "coming closer", "moving away", "still",
or, from the pose itself, "arms raised".

The cameras are synthetic, made from the astronaut photo that scikit-image
ships: each camera pans or zooms over it its own way, so the person moves
differently in each. ``flowpipe.sources`` reads the cameras fairly, each in
a thread of its own; the tracker is a class stage on 2 workers with
``key=`` the camera, so every frame of a camera reaches the same instance, in
order. The script runs the same stages as a plain sequential loop too, checks
that both give the same results, prints the run's statistics and both
timings, and writes an annotated video (all cameras in one mosaic).

The model is a parameter: ``--model standin`` runs the same pipeline with a
tiny NumPy stand-in (it puts a fixed skeleton over the orange space suit),
which is what CI runs, since the real model's extra is large.

Run it (after ``pip install -e '.[pose]'``; see docs/behaviour-recognition.md):

    python examples/behaviour_recognition.py                      # 4 cameras x 85 frames
    python examples/behaviour_recognition.py --model-backend process --png frame.png
    python examples/behaviour_recognition.py --model standin --cameras 3 --frames 30
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import importlib
import importlib.util
import math
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

try:
    import cv2
    import numpy as np
    from skimage import data as skdata
except ImportError as exc:  # pragma: no cover - depends on the environment
    sys.exit(
        f"this example needs OpenCV, NumPy and scikit-image ({exc.name} is missing): "
        "pip install -e '.[pose]' (or '.[examples]' for --model standin) in the flowpipe checkout"
    )

import flowpipe
from flowpipe import Pipeline, Tagged, stage

SIZE = 320  # frames are SIZE x SIZE pixels
FPS = 12
EVERY = 20  # print every 20th frame's results (and every change of a camera's actions)
HISTORY = 8  # frames of a track's history the classifier looks at
FRAMES = (
    16  # waiting frames per stage (frames travel in dataclasses, whose size flowpipe cannot see)
)
Image = Any  # a NumPy array of shape (SIZE, SIZE, 3), uint8
Landmarks = Any  # a NumPy array of shape (33, 3): x and y in pixels, visibility in [0, 1]
PoseModel = Callable[[Image], "Landmarks | None"]  # an RGB image -> one person's landmarks
LoadModel = Callable[[], PoseModel]  # called once per worker, in the worker

# MediaPipe's landmark numbers (the person's left and right)
NOSE, L_SHOULDER, R_SHOULDER, L_WRIST, R_WRIST = 0, 11, 12, 15, 16
BONES = ((11, 12), (11, 13), (13, 15), (12, 14), (14, 16), (11, 23), (12, 24), (23, 24),
         (23, 25), (25, 27), (24, 26), (26, 28), (0, 11), (0, 12))  # fmt: skip


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
    camera: str
    index: int
    image: Image  # RGB


@dataclasses.dataclass(frozen=True)
class Posed:
    frame: Frame
    landmarks: Landmarks | None  # None: no person found


@dataclasses.dataclass(frozen=True)
class Spot:
    """Where a person is in one frame: the middle of the shoulders, and their width (pixels)."""

    index: int  # the frame's number
    x: float
    y: float
    width: float


@dataclasses.dataclass(frozen=True)
class Track:
    id: int
    box: Box
    history: tuple[Spot, ...]  # the last HISTORY frames the person was seen in, the newest last
    landmarks: Landmarks


@dataclasses.dataclass(frozen=True)
class Tracked:
    frame: Frame
    tracks: tuple[Track, ...]


@dataclasses.dataclass(frozen=True)
class Result:
    frame: Frame
    tracks: tuple[tuple[Track, str], ...]  # (track, action)

    def summary(self) -> tuple[Any, ...]:
        """What is compared with the loop: camera, frame, and each track's id, box and action.

        Plain tuples: a class of a script (``__main__``) that comes back from a
        Ray actor is a copy of the class, and dataclasses of two classes never compare equal.
        """
        tracks = tuple((t.id, dataclasses.astuple(t.box), a) for t, a in self.tracks)
        return (self.frame.camera, self.frame.index, tracks)


# -- the models: the real one, and a stand-in -----------------------------------------


class MediaPipePose:
    """MediaPipe Pose, the full model (``pose_landmark_full.tflite``, in the wheel).

    ``static_image_mode=True``: each frame is looked at on its own, so any
    worker may take any frame and the results do not depend on which did.
    (``model_complexity`` 0 and 2 would download their model files; 1 does not.)
    """

    def __init__(self) -> None:
        warnings.filterwarnings("ignore", "SymbolDatabase.GetPrototype", UserWarning)  # protobuf 4
        mp = importlib.import_module("mediapipe")  # load_model() checked that it is there
        self._pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1)

    def __call__(self, image: Image) -> Landmarks | None:
        found = self._pose.process(image).pose_landmarks
        if found is None:
            return None
        h, w = image.shape[:2]
        return np.array([(p.x * w, p.y * h, p.visibility) for p in found.landmark], np.float32)

    def close(self) -> None:
        self._pose.close()


# Where the stand-in puts each of the 33 landmarks, as fractions of the person's box.
TEMPLATE = np.array(
    [(0.50, 0.10), (0.47, 0.08), (0.45, 0.08), (0.43, 0.08), (0.53, 0.08), (0.55, 0.08),
     (0.57, 0.08), (0.41, 0.09), (0.59, 0.09), (0.48, 0.13), (0.52, 0.13), (0.65, 0.22),
     (0.35, 0.22), (0.72, 0.38), (0.28, 0.38), (0.75, 0.52), (0.25, 0.52), (0.76, 0.55),
     (0.24, 0.55), (0.75, 0.56), (0.25, 0.56), (0.73, 0.54), (0.27, 0.54), (0.58, 0.58),
     (0.42, 0.58), (0.59, 0.78), (0.41, 0.78), (0.60, 0.96), (0.40, 0.96), (0.61, 0.98),
     (0.39, 0.98), (0.57, 1.00), (0.43, 1.00)],
    np.float32,
)  # fmt: skip


class StandInPose:
    """A tiny stand-in for a pose model: a fixed skeleton over the orange space suit.

    It finds the orange pixels (the suit) and stretches ``TEMPLATE``
    over the box that holds most of them, so its landmarks move and grow with
    the person. ``passes`` adds native work that releases the GIL, as a real
    model's inference does (``sized(ms)`` picks the passes for ``ms``
    milliseconds on this machine).
    """

    def __init__(self, passes: int = 0) -> None:
        self.passes = passes
        self._scratch = np.linspace(1.0, 2.0, 1 << 16)

    @classmethod
    def sized(cls, ms: float) -> LoadModel:
        """A loader for a stand-in whose calls do about ``ms`` ms of native work each."""
        probe = cls(passes=50)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            probe.work()
            times.append(time.perf_counter() - start)
        per_pass = sorted(times)[2] / probe.passes
        return functools.partial(cls, passes=max(1, round(ms / 1e3 / per_pass)))

    def work(self) -> None:
        for _ in range(self.passes):  # NumPy's loops release the GIL on arrays this large
            np.sqrt(self._scratch, out=self._scratch)
            np.add(self._scratch, 1.0, out=self._scratch)

    def __call__(self, image: Image) -> Landmarks | None:
        self.work()
        r, g, b = (image[..., i].astype(np.int16) for i in range(3))
        ys, xs = np.nonzero((r > 150) & (r - g > 50) & (g - b > 20))  # orange
        if len(xs) < 200:
            return None
        x0, x1 = np.percentile(xs, (5, 95))
        y0, y1 = np.percentile(ys, (5, 95))
        points = TEMPLATE * np.array((x1 - x0, y1 - y0), np.float32) + np.array(
            (x0, y0), np.float32
        )
        return np.column_stack([points, np.ones(len(points), np.float32)])


def load_model(name: str, work_ms: float = 0.0) -> LoadModel:
    """The loader for ``--model``: "mediapipe" (the real model) or "standin"."""
    if name == "standin":
        return StandInPose.sized(work_ms) if work_ms > 0 else StandInPose
    if importlib.util.find_spec("mediapipe") is None:
        sys.exit(
            "--model mediapipe needs the pose extra: pip install -e '.[pose]' (or --model standin)"
        )
    return MediaPipePose


# -- the cameras ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Camera:
    """A synthetic camera: a view of the photo at each key time t in [0, 1], straight in between.

    A view is (t, zoom, cx, cy): the photo's point (cx, cy) at the frame's
    centre, enlarged ``zoom`` times over the whole photo fitted to the frame.
    """

    name: str
    views: tuple[tuple[float, float, float, float], ...]

    def view(self, t: float) -> tuple[float, float, float]:
        (t0, *a), (t1, *b) = next((p, q) for p, q in zip(self.views, self.views[1:]) if t <= q[0])
        s = (t - t0) / (t1 - t0) if t1 > t0 else 1.0
        zoom, cx, cy = (u + s * (v - u) for u, v in zip(a, b))
        return zoom, cx, cy


CAMERAS = (
    Camera("cam0", ((0, 1.0, 330, 256), (0.5, 1.0, 190, 256), (1, 1.0, 190, 256))),  # right, still
    Camera("cam1", ((0, 1.0, 180, 256), (0.5, 1.0, 320, 256), (1, 1.0, 320, 256))),  # left, still
    Camera("cam2", ((0, 0.8, 240, 250), (0.4, 1.6, 240, 250), (1, 1.6, 240, 250))),  # closer, still
    Camera("cam3", ((0, 1.0, 240, 220), (0.4, 1.0, 240, 220), (1, 1.0, 240, 330))),  # still, up
    Camera("cam4", ((0, 1.5, 240, 250), (0.5, 1.5, 240, 250), (1, 0.75, 240, 250))),  # still, away
    Camera("cam5", ((0, 1.0, 240, 330), (0.5, 1.0, 240, 200), (1, 1.0, 240, 200))),  # down, still
)


@functools.lru_cache(maxsize=1)
def photo() -> Image:
    return skdata.astronaut()  # type: ignore[no-untyped-call]  # 512 x 512 RGB, in the package


def shoot(camera: Camera, index: int, frames: int) -> Image:
    """Frame ``index`` of ``frames`` of a camera: what a driver would hand over (BGR)."""
    zoom, cx, cy = camera.view(index / max(frames - 1, 1))
    scale = zoom * SIZE / 512
    matrix = np.array(
        [[scale, 0, SIZE / 2 - scale * cx], [0, scale, SIZE / 2 - scale * cy]], np.float32
    )
    rgb = cv2.warpAffine(photo(), matrix, (SIZE, SIZE), borderValue=(40, 40, 60))
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def footage(camera: Camera, frames: int) -> Iterator[Image]:
    """One camera's frames, made as they are read (a feed of ``flowpipe.sources``)."""
    for index in range(frames):
        yield shoot(camera, index, frames)


def camera_feeds(cameras: Sequence[Camera], frames: int) -> flowpipe.Sources:
    """Every camera read in a thread of its own; ``block``: no frame is dropped."""
    return flowpipe.sources({c.name: footage(c, frames) for c in cameras}, overflow="block")


# -- the stages ---------------------------------------------------------------------


@stage(buffer=FRAMES)
def capture(shot: Tagged) -> Frame:
    """A camera's BGR frame -> an RGB ``Frame`` named by its camera and number."""
    return Frame(str(shot.source), shot.seq, cv2.cvtColor(shot.item, cv2.COLOR_BGR2RGB))


@stage(workers=2, buffer=FRAMES)
class DetectPose:
    """The pose model on a frame. Each worker loads its own model, once, in the worker."""

    def __init__(self, load: LoadModel = StandInPose) -> None:
        self.model = load()

    def __call__(self, frame: Frame) -> Posed:
        return Posed(frame, self.model(frame.image))

    def close(self) -> None:
        close = getattr(self.model, "close", None)
        if close is not None:
            close()


def camera_of(posed: Posed) -> str:
    return posed.frame.camera


def box_of(landmarks: Landmarks) -> Box:
    """The box around the upper body's landmarks that the model sees (visibility > 0.5)."""
    upper = landmarks[:25]
    seen = upper[upper[:, 2] > 0.5] if (upper[:, 2] > 0.5).sum() >= 4 else upper
    x0, y0 = np.floor(seen[:, :2].min(axis=0))
    x1, y1 = np.ceil(seen[:, :2].max(axis=0))
    return Box(int(x0), int(y0), int(x1 - x0), int(y1 - y0))


def spot_of(index: int, landmarks: Landmarks) -> Spot:
    (lx, ly, _), (rx, ry, _) = landmarks[L_SHOULDER], landmarks[R_SHOULDER]
    return Spot(index, float(lx + rx) / 2, float(ly + ry) / 2, float(math.hypot(lx - rx, ly - ry)))


class CameraTracker:
    """An IoU tracker for one camera: a person continues the track their box overlaps most."""

    def __init__(self, min_iou: float = 0.2, max_missed: int = 5) -> None:
        self.min_iou, self.max_missed = min_iou, max_missed
        self.boxes: dict[int, Box] = {}
        self.history: dict[int, collections.deque[Spot]] = {}
        self.missed: dict[int, int] = {}
        self.next_id = 1

    def update(self, index: int, landmarks: Landmarks | None) -> tuple[Track, ...]:
        seen: list[Track] = []
        if landmarks is not None:
            box = box_of(landmarks)
            best = max(self.boxes, key=lambda t: self.boxes[t].iou(box), default=None)
            if best is None or self.boxes[best].iou(box) < self.min_iou:
                best, self.next_id = self.next_id, self.next_id + 1
                self.history[best] = collections.deque(maxlen=HISTORY)
            self.boxes[best], self.missed[best] = box, 0
            self.history[best].append(spot_of(index, landmarks))
            seen.append(Track(best, box, tuple(self.history[best]), landmarks))
        for track_id in [t for t in self.boxes if all(s.id != t for s in seen)]:
            self.missed[track_id] += 1
            if self.missed[track_id] > self.max_missed:
                del self.boxes[track_id], self.history[track_id], self.missed[track_id]
        return tuple(seen)


@stage(workers=2, key=camera_of, buffer=FRAMES)
class TrackPeople:
    """One ``CameraTracker`` per camera. ``key=camera_of``: a camera's frames all come here, in order."""

    def __init__(self) -> None:
        self.cameras: dict[str, CameraTracker] = {}

    def __call__(self, posed: Posed) -> Tracked:
        tracker = self.cameras.setdefault(posed.frame.camera, CameraTracker())
        return Tracked(posed.frame, tracker.update(posed.frame.index, posed.landmarks))


def arms_raised(lm: Landmarks) -> bool:
    wrists, shoulders = lm[[L_WRIST, R_WRIST]], lm[[L_SHOULDER, R_SHOULDER]]
    visible = bool((wrists[:, 2] > 0.5).all() and (shoulders[:, 2] > 0.5).all())
    return visible and bool(wrists[:, 1].max() < shoulders[:, 1].min())  # y grows downwards


def action(track: Track, still_below: float = 0.8, grow_above: float = 0.015) -> str:
    """Name what a track does: from its pose, else from its shoulders' speed and growth per
    frame (slopes of lines fitted to the last positions: steadier than two positions)."""
    if arms_raised(track.landmarks):
        return "arms raised"
    if track.history[-1].index == track.history[0].index:
        return "new"
    seen = np.array([(s.index, s.x, s.y, math.log(max(s.width, 1.0))) for s in track.history])
    dx, dy, growth = (float(v) for v in np.polyfit(seen[:, 0], seen[:, 1:], 1)[0])
    if abs(growth) > grow_above:
        return "coming closer" if growth > 0 else "moving away"
    if max(abs(dx), abs(dy)) < still_below:
        return "still"
    if abs(dx) >= abs(dy):
        return "moving right" if dx > 0 else "moving left"
    return "moving down" if dy > 0 else "moving up"


@stage(buffer=FRAMES)
def classify(tracked: Tracked) -> Result:
    return Result(tracked.frame, tuple((t, action(t)) for t in tracked.tracks))


def build_pipeline(
    load: LoadModel, *, workers: int = 2, model_backend: str | None = None
) -> Pipeline[Any, Any]:
    """capture | DetectPose[x workers] | TrackPeople[x2, key=camera] | classify.

    ``model_backend`` puts the model stage alone on another backend ("process").
    """
    model = DetectPose(load).with_options(workers=workers)  # type: ignore[attr-defined]
    if model_backend is not None:
        model = model.with_options(backend=model_backend)
    pipe: Pipeline[Any, Any] = capture | model | TrackPeople | classify
    return pipe


def sequential(
    cameras: Sequence[Camera], frames: int, load: LoadModel
) -> dict[tuple[str, int], Result]:
    """The plain loop flowpipe replaces: the same stages, one after another, cameras in turn."""
    # the plain classes (a class stage's __wrapped__): one instance each, as a loop would make
    model = DetectPose.__wrapped__(load)  # type: ignore[attr-defined]
    tracker = TrackPeople.__wrapped__()  # type: ignore[attr-defined]
    results = {}
    try:
        for index in range(frames):
            for camera in cameras:
                shot = Tagged(camera.name, index, shoot(camera, index, frames))
                result = classify(tracker(model(capture(shot))))
                results[camera.name, index] = result
    finally:
        model.close()
    return results


def summaries(results: Mapping[tuple[str, int], Result]) -> dict[tuple[str, int], Any]:
    return {key: result.summary() for key, result in results.items()}


# -- the output -------------------------------------------------------------------------


def annotate(result: Result) -> Image:
    image = cv2.cvtColor(result.frame.image, cv2.COLOR_RGB2BGR)
    for track, label in result.tracks:
        points = track.landmarks[:, :2].round().astype(int)
        for a, b in BONES:
            cv2.line(image, tuple(points[a]), tuple(points[b]), (255, 200, 0), 2)
        for x, y in points[:25]:
            cv2.circle(image, (int(x), int(y)), 3, (0, 0, 255), -1)
        box = track.box
        cv2.rectangle(image, (box.x, box.y), (box.x + box.w, box.y + box.h), (0, 255, 0), 1)
        text = f"#{track.id} {label}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        x, y = min(max(box.x, 2), SIZE - tw - 4), min(max(box.y - 6, th + 6), SIZE - 30)
        cv2.rectangle(image, (x - 2, y - th - 4), (x + tw + 2, y + 4), (0, 0, 0), -1)
        cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 0), 1)
    caption = f"{result.frame.camera} frame {result.frame.index}"
    cv2.putText(image, caption, (8, SIZE - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    return image


def mosaic(images: Sequence[Image]) -> Image:
    """The cameras' frames side by side, in a grid as square as can be."""
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    grid = np.zeros((rows * SIZE, cols * SIZE, 3), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * SIZE : (r + 1) * SIZE, c * SIZE : (c + 1) * SIZE] = image
    return grid


def write_outputs(
    annotated: Mapping[tuple[str, int], Image], cameras: Sequence[Camera], frames: int,
    video: Path, png: Path | None, png_frame: int,
) -> None:  # fmt: skip
    """The annotated video (one mosaic per frame number) and, if asked, one mosaic as PNG."""
    size = mosaic([annotated[c.name, 0] for c in cameras]).shape[1::-1]
    codec = "MJPG" if video.suffix.lower() == ".avi" else "mp4v"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*codec), FPS, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write a video to {video} (try an .avi or .mp4 name)")
    try:
        for index in range(frames):
            writer.write(mosaic([annotated[c.name, index] for c in cameras]))
    finally:
        writer.release()
    if png is not None:
        cv2.imwrite(str(png), mosaic([annotated[c.name, png_frame] for c in cameras]))


def describe(result: Result) -> str:
    found = ", ".join(
        f"person #{t.id} at ({int(t.box.center[0])}, {int(t.box.center[1])}) {label}"
        for t, label in result.tracks
    )
    return f"{result.frame.camera} frame {result.frame.index:3d}: {found or 'no person'}"


# -- the two ways to run it ---------------------------------------------------------


def run_pipeline(
    pipe: Pipeline[Any, Any], cameras: Sequence[Camera], frames: int, args: argparse.Namespace
) -> tuple[dict[tuple[str, int], Result], dict[tuple[str, int], Image]]:
    feeds = camera_feeds(cameras, frames)
    results: dict[tuple[str, int], Result] = {}
    annotated: dict[tuple[str, int], Image] = {}
    last_seen: dict[str, list[str]] = {}
    with pipe.iter(feeds, backend=args.backend) as run:
        for result in run:
            key = (result.frame.camera, result.frame.index)
            results[key], annotated[key] = result, annotate(result)
            labels = [label for _, label in result.tracks]
            if result.frame.index % EVERY == 0 or labels != last_seen.get(key[0]):
                print(describe(result))
            last_seen[key[0]] = labels
    print()
    print(run.stats)
    print()
    print(f"frames dropped per camera: {feeds.dropped}")
    return results, annotated


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--model", choices=("mediapipe", "standin"), default="mediapipe")
    parser.add_argument("--work-ms", type=float, default=0.0, help="stand-in: native ms per call")
    parser.add_argument("--cameras", type=int, default=4, help=f"1 to {len(CAMERAS)} (default 4)")
    parser.add_argument("--frames", type=int, default=85, help="frames per camera (default 85)")
    parser.add_argument("--backend", default="thread", help="flowpipe backend (default thread)")
    parser.add_argument("--model-backend", default=None, help="the model stage's backend (process)")
    parser.add_argument("--workers", type=int, default=2, help="model workers (default 2)")
    parser.add_argument(
        "--out", type=Path, default=Path(tempfile.gettempdir()) / "flowpipe-behaviour.mp4",
        help="annotated video, .mp4 or .avi (default: in the temporary directory)",
    )  # fmt: skip
    parser.add_argument("--png", type=Path, default=None, help="also write one frame, 30%% in")
    args = parser.parse_args(argv)
    if not 1 <= args.cameras <= len(CAMERAS) or args.frames < 1:
        parser.error(f"--cameras must be 1 to {len(CAMERAS)}, --frames at least 1")
    cameras, frames = CAMERAS[: args.cameras], args.frames
    png_frame = frames * 3 // 10  # 30% in: the cameras still move
    cv2.setNumThreads(1)  # flowpipe's workers give the parallelism, in the loop and pipeline alike

    load = load_model(args.model, args.work_ms)
    pipe = build_pipeline(load, workers=args.workers, model_backend=args.model_backend)
    print(f"{len(cameras)} cameras x {frames} frames, {SIZE}x{SIZE}; model: {args.model}")

    start = time.perf_counter()
    expected = sequential(cameras, frames, load)
    loop_time = time.perf_counter() - start

    print(f"pipeline: {pipe}")
    start = time.perf_counter()
    results, annotated = run_pipeline(pipe, cameras, frames, args)
    pipe_time = time.perf_counter() - start

    labels = collections.Counter(label for r in results.values() for _, label in r.tracks)
    with_person = sum(1 for r in results.values() if r.tracks)
    print(f"frames with a person: {with_person}/{len(results)}; actions: "
          + ", ".join(f"{label} {n}" for label, n in labels.most_common()))  # fmt: skip
    for camera in cameras:
        mine = [r for (c, _), r in results.items() if c == camera.name]
        ids = sorted({t.id for r in mine for t, _ in r.tracks})
        acts = collections.Counter(label for r in mine for _, label in r.tracks).most_common(3)
        print(f"  {camera.name}: {len(mine)} frames, tracks {ids}; mostly "
              + ", ".join(f"{label} {n}" for label, n in acts))  # fmt: skip
    same = summaries(results) == summaries(expected)
    print(f"same results as the sequential loop: {'yes' if same else 'NO'}")
    where = args.model_backend or args.backend
    print(
        f"sequential loop: {loop_time:.2f}s   flowpipe ({args.backend}, model x{args.workers} "
        f"on {where}): {pipe_time:.2f}s   speed-up: x{loop_time / pipe_time:.2f}"
    )
    write_outputs(annotated, cameras, frames, args.out, args.png, png_frame)
    print(f"annotated video: {args.out}" + (f"; frame {png_frame}: {args.png}" if args.png else ""))
    if not same:
        sys.exit("the pipeline's results differ from the sequential loop's")


if __name__ == "__main__":
    main()
