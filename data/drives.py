"""Generated drives: short videos of composited road scenes, with every sign's track.

The scenes of data/scenes.py are single frames; a tracker needs signs that come back frame
after frame, grow as the car nears them and leave the picture at its edges, and a score
needs to know which sign is which. A drive is one scene rendered on a canvas `zoom` times
the frame size and filmed as the camera moves toward the scene's vanishing point: frame k
shows the canvas scaled by s_k about that point, s growing from 1/zoom (the whole canvas,
each sign at the sizes the frame config asks for) to 1 (the middle of the canvas at its own
resolution) as the inverse of the distance does for a car at constant speed. So signs grow,
drift outward from the vanishing point, faster as they near, and leave at the edges. A
little camera shake moves each frame, and each is JPEG-compressed at the scene's quality.

Each frame's signs come from the canvas masks through the same affine map as its pixels. A
mask is the canvas mask sampled bilinearly and thresholded at one half: close to the pixels
the sign covers by half or more, not exactly them (they may differ along its edge). Each box
is its mask's bounds, and track ids are exact. A sign cut by the frame's edge to less than
`min_visible` of itself, or smaller than the config's `ignore_below`, is marked `ignore`
(it neither counts nor penalises). It is a flat picture zoomed, not parallax, and the signs
do not turn toward the camera: what it measures is whether a tracker keeps one id per sign
while signs grow, move, crowd and leave, not the look of a real drive.

`write_drives` writes OUT/images/drive-NNN/FFFFFF.jpg, OUT/videos/drive-NNN.mp4 and one
OUT/annotations.json in COCO format with TAO's video fields (`videos`; each image's
`video_id` and `frame_index`; each annotation's `track_id`), which data.frames reads.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from data.frames import mask_box
from data.scenes import (
    SceneConfig,
    SceneGenerator,
    SceneSign,
    SceneSources,
    categories,
    encode_jpeg,
    jpeg_round_trip,
    sign_annotation,
    write_annotations,
)
from data.video_writer import VideoWriter

# A video's frame rate, within what cameras film at: under 1 frame a second a drive is a
# slide show, and an infinite or NaN rate broke the mp4 writer mid-drive.
FPS_RANGE = (1.0, 240.0)


@dataclass(frozen=True)
class DriveConfig:
    frames: int = 30  # per drive
    zoom: float = 2.0  # the last frame's scale over the first's
    fps: float = 10.0  # of the written video: a dashcam sampled for detection
    shake: float = 1.5  # px, standard deviation of the camera's shift per frame
    min_visible: float = 0.5  # of a sign inside the frame, else it is marked ignore

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"frames per drive must be at least 1, got {self.frames}")
        if not 1 <= self.zoom <= 8:
            raise ValueError(f"zoom must lie in [1, 8], got {self.zoom}")
        low, high = FPS_RANGE
        if not low <= self.fps <= high:
            raise ValueError(f"fps must lie in [{low:g}, {high:g}], got {self.fps}")
        if self.shake < 0 or not 0 < self.min_visible <= 1:
            raise ValueError("shake must be non-negative, min_visible in (0, 1]")


@dataclass(frozen=True, eq=False)
class DriveFrame:
    image: np.ndarray  # HxWx3 uint8 RGB, through JPEG at the drive's quality
    signs: tuple[SceneSign, ...]
    tracks: tuple[int, ...]  # signs[i] is the drive's sign number tracks[i] in every frame


@dataclass
class DriveReport:
    drives: int
    frames: int
    seconds: float
    tracks: int = 0  # signs seen (not ignored) in at least one frame
    sizes: list[int] = field(default_factory=list)  # larger box side of every counted sign

    @property
    def frames_per_minute(self) -> float:
        return self.frames / self.seconds * 60 if self.seconds > 0 else float("inf")


class DriveGenerator:
    """Renders drives: `config` describes a frame as data.scenes does (its sizes are those of
    the drive's first frame), `drive` the camera's run."""

    def __init__(
        self,
        sources: SceneSources | None = None,
        config: SceneConfig | None = None,
        drive: DriveConfig | None = None,
    ):
        self.config = config if config is not None else SceneConfig()
        self.drive = drive if drive is not None else DriveConfig()
        zoom = self.drive.zoom
        try:
            canvas = replace(
                self.config,
                width=round(self.config.width * zoom),
                height=round(self.config.height * zoom),
                min_size=self.config.min_size * zoom,
                max_size=self.config.max_size * zoom,
                large_max_size=self.config.large_max_size * zoom,
                ignore_below=self.config.ignore_below * zoom,
            )
        except ValueError as error:  # a frame that is fine alone may be too large zoomed
            raise ValueError(f"a drive's canvas is {zoom:g} times its frame: {error}") from None
        self.scenes = SceneGenerator(sources, canvas)

    def render(self, seed: int, index: int) -> list[DriveFrame]:
        """Drive `index` of `seed`: its frames in order."""
        scene = self.scenes.render(seed, index, compress=False)
        rng = np.random.default_rng([seed, index, 1])
        canvas_height, canvas_width = scene.image.shape[:2]
        vanishing = np.array(
            [canvas_width * rng.uniform(0.35, 0.65), canvas_height * rng.uniform(0.35, 0.55)]
        )
        levels = [scene.image]  # halved until the frame's scale needs no more
        while 2 ** len(levels) < self.drive.zoom * 1.5:
            levels.append(
                cv2.resize(levels[-1], None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
            )
        frames = []
        for k in range(self.drive.frames):
            scale, offset = self._camera(k, vanishing, rng)
            image = _warp(levels, scale, offset, self.config.width, self.config.height)
            image = jpeg_round_trip(image, scene.jpeg_quality)
            signs, tracks = [], []
            for number, sign in enumerate(scene.signs):
                moved = self._sign(sign, scale, offset)
                if moved is not None:
                    signs.append(moved)
                    tracks.append(number)
            frames.append(DriveFrame(image, tuple(signs), tuple(tracks)))
        return frames

    def _camera(
        self, k: int, vanishing: np.ndarray, rng: np.random.Generator
    ) -> tuple[float, np.ndarray]:
        """Frame k's map from canvas pixel centres to frame pixel centres: f = scale p + offset."""
        drive = self.drive
        t = k / (drive.frames - 1) if drive.frames > 1 else 0.0
        growth = 1 / (1 - t * (1 - 1 / drive.zoom))  # 1 -> zoom, as 1 / distance
        scale = growth / drive.zoom
        shake = rng.normal(0, drive.shake, 2) if drive.shake else np.zeros(2)
        return scale, vanishing * (1 - growth) / drive.zoom + shake

    def _sign(self, sign: SceneSign, scale: float, offset: np.ndarray) -> SceneSign | None:
        width, height = self.config.width, self.config.height
        x1, y1 = sign.box[:2]
        local_to_frame = np.array(
            [[scale, 0, scale * x1 + offset[0]], [0, scale, scale * y1 + offset[1]]], np.float32
        )
        covered = cv2.warpAffine(
            sign.mask.astype(np.float32), local_to_frame, (width, height), flags=cv2.INTER_LINEAR
        )
        mask = covered >= 0.5
        box = mask_box(mask)
        if box is None:
            return None
        inside = min(1.0, float(mask.sum()) / (float(sign.mask.sum()) * scale * scale))
        size = max(box[2] - box[0], box[3] - box[1])
        return SceneSign(
            box=box,
            mask=mask[box[1] : box[3], box[0] : box[2]],
            class_id=sign.class_id,
            source=sign.source,
            visible=round(sign.visible * inside, 4),
            ignore=size < self.config.ignore_below or inside < self.drive.min_visible,
        )


def _warp(
    levels: list[np.ndarray], scale: float, offset: np.ndarray, width: int, height: int
) -> np.ndarray:
    """The frame: the canvas mapped by f = scale p + offset, read from the halved copy nearest
    the scale (so a shrunk canvas is averaged, not aliased)."""
    level = min(len(levels) - 1, max(0, round(-math.log2(scale))))
    factor = 2**level  # a pixel centre p of the canvas is (p + 0.5) / factor - 0.5 there
    matrix = np.array(
        [
            [scale * factor, 0, offset[0] + scale * (factor - 1) / 2],
            [0, scale * factor, offset[1] + scale * (factor - 1) / 2],
        ],
        np.float32,
    )
    return cv2.warpAffine(
        levels[level],
        matrix,
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT,
    )


def write_drives(
    out_dir: Path | str,
    *,
    drives: int,
    seed: int = 0,
    config: SceneConfig | None = None,
    drive: DriveConfig | None = None,
    sources: SceneSources | None = None,
) -> DriveReport:
    """Write `drives` drives to OUT (see the module docstring for the layout)."""
    if drives < 1:
        raise ValueError(f"drives must be at least 1, got {drives}")
    generator = DriveGenerator(sources, config, drive)
    config, drive = generator.config, generator.drive
    out = Path(out_dir)
    videos, images, annotations = [], [], []
    report = DriveReport(drives=drives, frames=0, seconds=0.0)
    started = time.perf_counter()
    first_track = 1
    for number in range(drives):
        name = f"drive-{number:03d}"
        (out / "images" / name).mkdir(parents=True, exist_ok=True)
        frames = generator.render(seed, number)
        seen: set[int] = set()
        with VideoWriter(
            out / "videos" / f"{name}.mp4", drive.fps, config.width, config.height
        ) as video:
            for k, frame in enumerate(frames):
                image_id = len(images)
                file_name = f"{name}/{k:06d}.jpg"
                (out / "images" / file_name).write_bytes(encode_jpeg(frame.image, 95))
                video.write(frame.image)
                images.append(
                    {
                        "id": image_id,
                        "file_name": file_name,
                        "width": config.width,
                        "height": config.height,
                        "video_id": number,
                        "frame_index": k,
                    }
                )
                for sign, track in zip(frame.signs, frame.tracks, strict=True):
                    annotation = sign_annotation(
                        sign, len(annotations) + 1, image_id, config.height, config.width
                    )
                    annotations.append({**annotation, "track_id": first_track + track})
                    if not sign.ignore:
                        seen.add(track)
                        report.sizes.append(sign.size)
        videos.append(
            {
                "id": number,
                "name": name,
                "file_name": f"videos/{name}.mp4",
                "fps": drive.fps,
                "frames": len(frames),
            }
        )
        first_track += 1 + max((track for frame in frames for track in frame.tracks), default=-1)
        report.frames += len(frames)
        report.tracks += len(seen)
    document = {
        "info": {
            "description": "GreedySign generated drives (greedysign data drives)",
            "version": 1,
            "seed": seed,
            "drives": drives,
            "config": asdict(config),
            "drive": asdict(drive),
            "backgrounds": list(generator.scenes.background_kinds) or ["procedural"],
            "sign_sources": list(generator.scenes.sign_kinds),
            "real_crops": generator.scenes.sources.real_crops_record(),
        },
        "videos": videos,
        "images": images,
        "annotations": annotations,
        "categories": categories(),
    }
    write_annotations(out, document)
    report.seconds = time.perf_counter() - started
    return report
