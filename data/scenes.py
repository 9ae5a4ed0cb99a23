"""Composited road scenes: signs with exact instance masks at dashcam sizes on real streets.

`SceneGenerator(sources, config).render(seed, index)` returns one `Scene`: an RGB frame and
its signs, each with its box (x1, y1, x2, y2; ends exclusive), its exact mask (the visible
sign pixels, box-shaped), its CTSRD class (None for a sign of no CTSRD class) and where it
came from. It needs no torch, so a detector's data loader can call it directly (each frame
has its own random generator seeded from (seed, index): workers can render any indices in
any order and get the same frames). `write_scenes` writes `OUT/images/NNNNNN.jpg` and
`OUT/annotations.json` in COCO format, which `data.frames.read_coco_frames` reads.

A frame is built as follows.
- Background: a frame of the dashcam clip (past its first seconds, which hold unlabelled
  warning signs), a mosaic of TT100K negative patches, or a DFG frame with every annotated
  sign painted out (cv2.inpaint over the dilated polygons); scaled to cover the output size,
  zoomed, cropped and sometimes mirrored. With none of them at hand, a procedural texture.
  DFG leaves some signs unannotated (most under 35 px, a few boards and name plates): at
  least 6 of its 35 frames keep one after painting out, unmarked in the scenes drawn on them.
- Signs (between `config.signs` bounds; the cutouts of data/sign_cutouts.py): a synthetic
  drawing (data/synth_signs.py, exact alpha), a TT100K crop or a TSRD crop cut to its box,
  the real crops cut with the outline of their family (disc, triangle, inverted triangle,
  octagon, square, diamond), and, when asked for, a European sign: a GTSRB crop ("gtsrb",
  cut the same way) or one cut from a DFG frame along its annotated polygon ("dfg"; give
  the training side of `greedysign data split-frames`, so the test frames stay unseen).
  With a `CropSide`, the real TT100K and TSRD crops are only those on one side of a sign
  model's split: its held-out side for scenes that score it, its training side for scenes
  that teach it, so that neither leaks.
  Sizes (larger side of the sign's box) are log-uniform in [min_size, max_size], a few
  log-uniform up to large_max_size. Each sign is turned in 3D, faded and tinted, lit to suit its
  surroundings, sometimes defocused, often on a short pole, sometimes with a second sign
  stacked under it, and sometimes partly hidden by leaves, a post or a box in front. When
  asked for (`board_stack_rate`), a sign group is instead a post of 2-7 direction boards
  stacked flush (one width, style and pose; each board its own sign), as at European
  junctions: a scene model that never saw one does not mark them.
  Signs overlap by at most `max_overlap` of the smaller box (touching is allowed).
- Camera: exposure, contrast, gamma and colour cast for the whole frame, blur, motion blur,
  sensor noise, JPEG at a drawn quality.

Masks are exact by construction: an owner map records, for every pixel, the sign whose
warped alpha covers it by half or more, and anything drawn later in front (another sign, a
pole, an occluder) takes the pixel over.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from data.classes import UNKNOWN_SIGN, sign_classes, unknown_sign_id
from data.frames import (
    FrameInstance,
    FrameRecord,
    instance_mask,
    mask_box,
    read_coco_frames,
    rle_encode_box,
)
from data.images import read_rgb, upright_video_frame
from data.records import Box, DataError, box_area, box_overlap
from data.sign_cutouts import (
    Cutout,
    board_style,
    cached_real,
    ctsrd_shape,
    dfg_cutout,
    direction_board,
    gtsrb_shape,
    panel_cutout,
    read_gtsrb_boxes,
    read_tsrd_boxes,
    synthetic_cutout,
    tt100k_shape,
    tt100k_split,
)
from data.synth import _background as procedural_background
from data.tt100k import CLASSES_FILE, read_code_map

BACKGROUNDS = ("video", "negatives", "dfg")
SIGN_SOURCES = ("synthetic", "tt100k", "tsrd", "dfg", "gtsrb")
# DFG signs are opt-in: the shared DFG frames are where scene detection is measured. GTSRB
# signs are opt-in so that a seed's frames stay those the benchmarks measured.
DEFAULT_SIGN_SOURCES = ("synthetic", "tt100k", "tsrd")
DFG_MIN_SIGN = 24  # px, longer box side: smaller DFG signs are too coarse to pose
SUPERCATEGORY = "sign"
VIDEO_SKIP_SECONDS = 6.0  # the clip's first seconds show warning signs nobody labelled
VIDEO_STRIDE = 3  # keep every third frame: neighbours are near copies
_DFG_DILATION = 0.15  # painted-out area grows by this share of the sign's size
_MARGIN = 2  # px around a warped sign's box
# Of the synthetic signs, the share drawn as rectangular panels: direction and information
# boards, supplementary plates and chevron boards. CTSRD and TT100K hold almost none, but a
# street holds many (the DFG frames: a third of their signs), and a scene model that never
# saw one does not mark them.
PANEL_SHARE = 0.3
# The largest frame rendered (a drive's canvas included): an 8192x8192 frame takes about 3 GB
# to render, and OpenCV's warps take no side over 32767 px.
MAX_FRAME_PIXELS = 8192 * 8192
MAX_FRAME_SIDE = 16384


def default_data_root() -> Path:
    """Where real data lives: $GREEDYSIGN_SHARED_DATA, else ../shared/data beside the repo."""
    env = os.environ.get("GREEDYSIGN_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parent.parent.parent / "shared" / "data"


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneConfig:
    """What a frame holds. Sizes are the larger side of a sign's box, in pixels."""

    width: int = 1280
    height: int = 720
    min_size: float = 12.0
    max_size: float = 120.0
    large_fraction: float = 0.06  # share of signs drawn between max_size and large_max_size
    large_max_size: float = 320.0
    # Sign groups drawn per frame, both ends included: a group is one sign, or a stack or a
    # post of boards (several), or nothing when it finds no room.
    signs: tuple[int, int] = (1, 10)
    ignore_below: float = 10.0  # a sign whose box's larger side is under this gets `ignore`
    max_overlap: float = 0.1  # of the smaller box's area
    pole_rate: float = 0.5
    stack_rate: float = 0.15
    # Share of sign groups drawn as a post of direction boards. 0 by default, so that the
    # validation scenes of BENCHMARKS.md come out the same for a seed.
    board_stack_rate: float = 0.0
    occlusion_rate: float = 0.15
    min_visible: float = 0.6  # an occluder never hides more than 40 % of a sign
    # synthetic, tt100k, tsrd, dfg, gtsrb (shares among the sources chosen and present)
    source_weights: tuple[float, ...] = (0.35, 0.45, 0.2, 0.4, 0.3)

    def __post_init__(self) -> None:
        width, height = self.width, self.height
        if not 32 <= min(width, height) <= max(width, height) <= MAX_FRAME_SIDE:
            raise ValueError(
                f"frame sides must lie in [32, {MAX_FRAME_SIDE}], not {width}x{height}"
            )
        if width * height > MAX_FRAME_PIXELS:
            raise ValueError(f"frames must hold at most 8192x8192 pixels, not {width}x{height}")
        # Sizes are drawn log-uniform between them: an infinite one overflows the draw.
        if not 1 <= self.min_size <= self.max_size <= self.large_max_size < math.inf:
            raise ValueError(
                "need 1 <= min_size <= max_size <= large_max_size, all finite, got "
                f"{self.min_size}, {self.max_size}, {self.large_max_size}"
            )
        low, high = self.signs
        if not 0 <= low <= high:
            raise ValueError(f"signs per frame must be 0 <= min <= max, got {self.signs}")
        rates = ("large_fraction", "pole_rate", "stack_rate", "board_stack_rate")
        for name in (*rates, "occlusion_rate", "min_visible"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if len(self.source_weights) != len(SIGN_SOURCES) or min(self.source_weights) < 0:
            raise ValueError(
                f"source_weights: {len(SIGN_SOURCES)} non-negative weights "
                f"({', '.join(SIGN_SOURCES)})"
            )


CROP_SIDES = ("training", "held-out")


@dataclass(frozen=True)
class CropSide:
    """One side of a sign model's split, for the real crops (TT100K, TSRD) a scene draws.

    A scene set that scores the sign model (what scene mode reads right) must hold only
    crops it never trained on, and one that teaches it only crops it may train on; drawn from
    both sides, the first flatters the model and the second moves held-out photos into its
    training. `held_out` holds the hashes of the model's held-out images (its checkpoint's
    split.test_sha1: the hash of each image file's bytes), so one file is on one side
    whatever its path. The training side is everything else: a crop the model never saw at
    all is as safe to teach it as one it trained on.
    """

    held_out: frozenset[str]
    side: str  # "training" or "held-out"
    model: str = ""  # the sign model whose split this is, for the record

    def __post_init__(self) -> None:
        if self.side not in CROP_SIDES:
            raise ValueError(f"crop side must be one of {', '.join(CROP_SIDES)}, not {self.side!r}")

    def admits(self, path: Path) -> bool:
        digest = hashlib.sha1(path.read_bytes()).hexdigest()
        return (digest in self.held_out) == (self.side == "held-out")

    def record(self) -> dict[str, str]:
        """What a written set's info says about its real crops."""
        return {"side": self.side, "model": self.model}


@dataclass(frozen=True)
class SceneSources:
    """Where backgrounds and real sign crops come from; None where there is none."""

    video: Path | None = None  # a clip (PyAV reads it)
    tt100k: Path | None = None  # tt100k-crops/: classes.csv, train/<code>/*.png, negative/
    tsrd: Path | None = None  # TSRD plain folder: images/ + annotations.txt
    dfg: Path | None = None  # COCO frames folder with polygons (data.frames)
    gtsrb: Path | None = None  # GTSRB folder: a ;-separated CSV with sign boxes (data.gtsrb)
    backgrounds: tuple[str, ...] = BACKGROUNDS
    signs: tuple[str, ...] = DEFAULT_SIGN_SOURCES
    crop_side: CropSide | None = None  # None: every real crop

    @classmethod
    def from_data_root(
        cls,
        root: Path | str | None = None,
        *,
        backgrounds: tuple[str, ...] = BACKGROUNDS,
        signs: tuple[str, ...] = DEFAULT_SIGN_SOURCES,
    ) -> SceneSources:
        """The shared data layout (video/traffic.mp4, tt100k-crops/, ctsrd-real/,
        dfg-frames/, gtsrb-real/); a part that is not there is left out."""
        root = Path(root) if root is not None else default_data_root()

        def existing(path: Path) -> Path | None:
            return path if path.exists() else None

        return cls(
            video=existing(root / "video" / "traffic.mp4"),
            tt100k=existing(root / "tt100k-crops"),
            tsrd=existing(root / "ctsrd-real"),
            dfg=existing(root / "dfg-frames"),
            gtsrb=existing(root / "gtsrb-real"),
            backgrounds=backgrounds,
            signs=signs,
        )

    def __post_init__(self) -> None:
        for name, chosen, known in (
            ("background", self.backgrounds, BACKGROUNDS),
            ("sign source", self.signs, SIGN_SOURCES),
        ):
            unknown = sorted(set(chosen) - set(known))
            if unknown:
                raise ValueError(f"unknown {name} {unknown}; known: {', '.join(known)}")

    def available_backgrounds(self) -> tuple[str, ...]:
        have = {
            "video": self.video,
            "negatives": self.tt100k and self.tt100k / tt100k_split(self.tt100k) / "negative",
            "dfg": self.dfg,
        }
        return tuple(kind for kind in self.backgrounds if have[kind] and Path(have[kind]).exists())

    def real_crops_record(self) -> dict[str, str] | str:
        """What a written set's info says about its real crops: "all", or the side kept."""
        return "all" if self.crop_side is None else self.crop_side.record()

    def available_signs(self) -> tuple[str, ...]:
        have = {
            "synthetic": True,
            "tt100k": self.tt100k,
            "tsrd": self.tsrd,
            "dfg": self.dfg,
            "gtsrb": self.gtsrb,
        }
        return tuple(kind for kind in self.signs if have[kind])


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SceneSign:
    """One sign in a scene. `mask` is box-shaped: the frame's mask[y1:y2, x1:x2]."""

    box: Box
    mask: np.ndarray  # bool
    class_id: int | None  # CTSRD class; None: a sign of no CTSRD class
    source: str  # "synthetic:12", "tt100k:pl40/10009_0.png", "tsrd:000_0001.png"
    visible: float  # share of the sign's pixels left visible (occluders, later signs)
    ignore: bool  # too small to count (box's larger side under config.ignore_below)

    @property
    def size(self) -> int:
        x1, y1, x2, y2 = self.box
        return max(x2 - x1, y2 - y1)

    def full_mask(self, height: int, width: int) -> np.ndarray:
        mask = np.zeros((height, width), bool)
        x1, y1, x2, y2 = self.box
        mask[y1:y2, x1:x2] = self.mask
        return mask


@dataclass(frozen=True, eq=False)
class Scene:
    image: np.ndarray  # HxWx3 uint8 RGB
    signs: tuple[SceneSign, ...]
    background: str  # e.g. "dfg:0000001.jpg", "video:traffic.mp4#212", "negatives", ...
    jpeg_quality: int

    def targets(self) -> dict[str, np.ndarray]:
        """The signs as arrays, the shape detection code takes: `boxes` float32 Nx4
        (x1, y1, x2, y2), `labels` int64 N (CTSRD class, or len(classes) for an unknown
        sign), `masks` uint8 NxHxW in {0, 1}, `ignore` bool N."""
        height, width = self.image.shape[:2]
        unknown = unknown_sign_id("ctsrd")
        return {
            "boxes": np.array([s.box for s in self.signs], np.float32).reshape(-1, 4),
            "labels": np.array(
                [unknown if s.class_id is None else s.class_id for s in self.signs], np.int64
            ),
            "masks": np.array([s.full_mask(height, width) for s in self.signs], np.uint8).reshape(
                -1, height, width
            ),
            "ignore": np.array([s.ignore for s in self.signs], bool),
        }

    def instance_map(self) -> np.ndarray:
        """int32 HxW: 0 for background, i + 1 on the pixels of signs[i]."""
        labels = np.zeros(self.image.shape[:2], np.int32)
        for number, sign in enumerate(self.signs, start=1):
            x1, y1, x2, y2 = sign.box
            labels[y1:y2, x1:x2][sign.mask] = number
        return labels


@dataclass
class SceneReport:
    frames: int
    seconds: float
    sizes: list[int] = field(default_factory=list)  # larger box side of every sign
    ignored: int = 0
    backgrounds: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)

    @property
    def images_per_minute(self) -> float:
        return self.frames / self.seconds * 60 if self.seconds > 0 else float("inf")

    def size_summary(self) -> str:
        if not self.sizes:
            return "no signs"
        sizes = np.asarray(self.sizes)
        edges = [0, 16, 32, 64, 96, 128, 10**9]
        names = ["<16", "16-32", "32-64", "64-96", "96-128", ">=128"]
        counts, _ = np.histogram(sizes, bins=edges)
        bins = ", ".join(f"{n} {c / len(sizes):.0%}" for n, c in zip(names, counts, strict=True))
        p5, p50, p95 = np.percentile(sizes, [5, 50, 95])
        return (
            f"sign size (px, larger side of the box as seen, occluded or cut by the frame's "
            f"edge): min {sizes.min()}, p5 {p5:.0f}, median {p50:.0f}, "
            f"p95 {p95:.0f}, max {sizes.max()}; {bins}"
        )


# --- the generator -------------------------------------------------------------------------


class SceneGenerator:
    """Renders scenes from one set of sources and one config. The video's frames, the
    painted-out DFG frames (both as JPEG bytes) and the real crops are cached on first use;
    TT100K negative patches are read from disk for each mosaic cell. The cache never changes
    what a (seed, index) renders."""

    def __init__(self, sources: SceneSources | None = None, config: SceneConfig | None = None):
        self.sources = sources if sources is not None else SceneSources()
        self.config = config if config is not None else SceneConfig()
        self.background_kinds = self.sources.available_backgrounds()
        self.sign_kinds = self.sources.available_signs()
        if not self.sign_kinds:
            raise ValueError(f"no sign source available among {', '.join(self.sources.signs)}")
        weights = dict(zip(SIGN_SOURCES, self.config.source_weights, strict=True))
        chosen = np.array([weights[kind] for kind in self.sign_kinds], np.float64)
        self._sign_weights = (
            chosen / chosen.sum() if chosen.sum() else np.ones(len(chosen)) / len(chosen)
        )
        self._dfg_cache: dict[int, bytes] = {}

    # -- public --

    def render(self, seed: int, index: int, *, compress: bool = True) -> Scene:
        """Frame `index` of the scenes of `seed`. With `compress` the image has been through
        JPEG at the scene's quality (as the written file is); without, it has not."""
        rng = np.random.default_rng([seed, index])
        config = self.config
        image, background = self._background(rng)
        backdrop = image.copy()  # the background before any sign: box occluders copy it
        owner = np.zeros((config.height, config.width), np.int16)
        placed: list[_Placed] = []
        for _ in range(int(rng.integers(config.signs[0], config.signs[1] + 1))):
            self._place_group(image, backdrop, owner, placed, rng)
        image = _camera(image, rng)
        quality = int(rng.integers(60, 96))
        if compress:
            image = jpeg_round_trip(image, quality)
        return Scene(image, tuple(self._signs(owner, placed)), background, quality)

    def real_crop_counts(self) -> dict[str, int]:
        """Real crops each real sign source offers, after the crop side's filter."""
        offers = {
            "tt100k": lambda: self._tt100k_crops,
            "tsrd": lambda: self._tsrd_crops,
            "gtsrb": lambda: self._gtsrb_crops,
        }
        return {kind: sum(map(len, offers[kind]())) for kind in self.sign_kinds if kind in offers}

    # -- backgrounds --

    def _background(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        width, height = self.config.width, self.config.height
        if not self.background_kinds:
            small = procedural_background(rng, max(16, height // 4), max(16, width // 4))
            image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
            return (np.clip(image, 0, 1) * 255).astype(np.uint8), "procedural"
        kind = self.background_kinds[int(rng.integers(len(self.background_kinds)))]
        if kind == "negatives":
            return self._mosaic(rng), "negatives"
        if kind == "video":
            number = int(rng.integers(len(self._video_frames)))
            source = decode_jpeg(self._video_frames[number])
            name = f"video:{self.sources.video.name}#{self._video_numbers[number]}"
        else:
            number = int(rng.integers(len(self._dfg_frames)))
            source = decode_jpeg(self._painted_dfg(number))
            name = f"dfg:{self._dfg_frames[number].image_path.name}"
        return _cover(source, width, height, rng), name

    @cached_property
    def _video_decoded(self) -> tuple[list[bytes], list[int]]:
        import av  # PyAV; imported here so that the module loads without it

        frames, numbers = [], []
        try:
            with av.open(str(self.sources.video)) as container:
                stream = container.streams.video[0]
                rate = float(stream.average_rate or 25)
                skip = round(VIDEO_SKIP_SECONDS * rate)
                for number, frame in enumerate(container.decode(stream)):
                    if number >= skip and (number - skip) % VIDEO_STRIDE == 0:
                        frames.append(encode_jpeg(upright_video_frame(frame), 95))
                        numbers.append(number)
        except (av.FFmpegError, OSError) as error:
            raise DataError(
                self.sources.video, None, f"cannot decode the video ({error})"
            ) from None
        if not frames:
            fault = f"the clip holds no frame after its first {VIDEO_SKIP_SECONDS:g} s"
            raise DataError(self.sources.video, None, fault)
        return frames, numbers

    @property
    def _video_frames(self) -> list[bytes]:
        return self._video_decoded[0]

    @property
    def _video_numbers(self) -> list[int]:
        return self._video_decoded[1]

    @cached_property
    def _negatives(self) -> list[Path]:
        folder = self.sources.tt100k / tt100k_split(self.sources.tt100k) / "negative"
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))
        if not paths:
            raise DataError(folder, None, "no negative patches (*.jpg, *.png) in this folder")
        return paths

    def _mosaic(self, rng: np.random.Generator) -> np.ndarray:
        """Negative patches tiled over the frame, each cell one patch scaled and maybe mirrored."""
        width, height = self.config.width, self.config.height
        cell = max(32, round(rng.uniform(0.4, 0.9) * height))
        rows, cols = height // cell + 2, width // cell + 2
        canvas = np.empty((rows * cell, cols * cell, 3), np.uint8)
        for row in range(rows):
            for col in range(cols):
                patch = read_rgb(self._negatives[int(rng.integers(len(self._negatives)))])
                patch = cv2.resize(patch, (cell, cell), interpolation=cv2.INTER_LINEAR)
                if rng.random() < 0.5:
                    patch = patch[:, ::-1]
                canvas[row * cell : (row + 1) * cell, col * cell : (col + 1) * cell] = patch
        x0, y0 = int(rng.integers(cell)), int(rng.integers(cell))
        return np.ascontiguousarray(canvas[y0 : y0 + height, x0 : x0 + width])

    @cached_property
    def _dfg_frames(self) -> list[FrameRecord]:
        frames = read_coco_frames(self.sources.dfg)
        if not frames:
            raise DataError(self.sources.dfg, None, "no frames in this COCO set")
        return frames

    def _painted_dfg(self, number: int) -> bytes:
        """DFG frame `number` with its signs painted out, as JPEG bytes (cached)."""
        if number not in self._dfg_cache:
            frame = self._dfg_frames[number]
            image = read_rgb(frame.image_path)
            if image.shape[:2] != (frame.height, frame.width):
                fault = (
                    f"image is {image.shape[1]}x{image.shape[0]} but its annotations say "
                    f"{frame.width}x{frame.height}"
                )
                raise DataError(frame.image_path, None, fault)
            self._dfg_cache[number] = encode_jpeg(_paint_out(image, frame), 95)
        return self._dfg_cache[number]

    # -- signs --

    def _cutout(self, rng: np.random.Generator, size: float) -> Cutout:
        kind = self.sign_kinds[int(rng.choice(len(self.sign_kinds), p=self._sign_weights))]
        if kind == "tt100k":
            crop = self._real_pick(rng, self._tt100k_crops, size, self._tt100k_cutout)
        elif kind == "tsrd":
            crop = self._real_pick(rng, self._tsrd_crops, size, self._tsrd_cutout)
        elif kind == "dfg":
            crop = self._real_pick(rng, self._dfg_signs, size, dfg_cutout)
        elif kind == "gtsrb":
            crop = self._real_pick(rng, self._gtsrb_crops, size, self._gtsrb_cutout)
        else:
            crop = None
        if crop is not None:
            return crop
        if "synthetic" not in self.sign_kinds:  # only a source with no crop at all gets here
            fault = (
                f"no {kind} sign crop to draw (none usable, or none on the crop side), and "
                "synthetic signs, which would stand in, were not asked for"
            )
            raise DataError(getattr(self.sources, kind), None, fault)
        if rng.random() < PANEL_SHARE:
            return panel_cutout(rng)
        class_id = int(rng.integers(len(sign_classes("ctsrd"))))
        return synthetic_cutout(class_id)

    def _real_pick(self, rng, groups: list[list], size: float, load) -> Cutout | None:
        """A real crop of a random group (code or class) that is not blown up beyond 2.5x.
        After four tries: None (a synthetic sign instead) where synthetic signs are allowed,
        else the largest crop tried. None when there are no groups."""
        if not groups:
            return None
        tried = []
        for _ in range(4):
            group = groups[int(rng.integers(len(groups)))]
            cutout = load(group[int(rng.integers(len(group)))])
            if max(cutout.alpha.shape) * 2.5 >= size:
                return cutout
            tried.append(cutout)
        if "synthetic" in self.sign_kinds:
            return None
        return max(tried, key=lambda cutout: max(cutout.alpha.shape))

    @cached_property
    def _tt100k_crops(self) -> list[list[tuple[str, Path, int | None]]]:
        """(code, file, CTSRD class) of every shapeable crop, grouped by code."""
        root = self.sources.tt100k
        code_map = read_code_map(root / CLASSES_FILE, len(sign_classes("ctsrd")))
        split_root = root / tt100k_split(root)
        groups = []
        for folder in sorted(p for p in split_root.iterdir() if p.is_dir()):
            if tt100k_shape(folder.name) is None:
                continue
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg"))
            files = [path for path in files if self._admitted(path)]
            if files:
                class_id = code_map.get(folder.name.lower())  # the reader's codes are lower case
                groups.append([(folder.name, path, class_id) for path in files])
        return groups

    @staticmethod
    def _tt100k_cutout(item: tuple[str, Path, int | None]) -> Cutout:
        code, path, class_id = item
        return cached_real(path, None, tt100k_shape(code), class_id, f"tt100k:{code}/{path.name}")

    @cached_property
    def _tsrd_crops(self) -> list[list[tuple[Path, Box, int]]]:
        """(file, sign box, class) of every TSRD image, grouped by class."""
        by_class: dict[int, list[tuple[Path, Box, int]]] = {}
        for path, box, class_id in read_tsrd_boxes(self.sources.tsrd):
            if not self._admitted(path):
                continue
            by_class.setdefault(class_id, []).append((path, box, class_id))
        return [by_class[class_id] for class_id in sorted(by_class)]

    def _admitted(self, path: Path) -> bool:
        side = self.sources.crop_side
        return side is None or side.admits(path)

    @staticmethod
    def _tsrd_cutout(item: tuple[Path, Box, int]) -> Cutout:
        path, box, class_id = item
        return cached_real(path, box, ctsrd_shape(class_id), class_id, f"tsrd:{path.name}")

    @cached_property
    def _gtsrb_crops(self) -> list[list[tuple[Path, Box, int]]]:
        """(file, sign box, GTSRB class) of every GTSRB image, grouped by class. No crop
        side applies: GTSRB is not in a CTSRD sign model's label space, so no sign model
        trains on it or is scored on its classes."""
        by_class: dict[int, list[tuple[Path, Box, int]]] = {}
        for item in read_gtsrb_boxes(self.sources.gtsrb):
            by_class.setdefault(item[2], []).append(item)
        return [by_class[class_id] for class_id in sorted(by_class)]

    @staticmethod
    def _gtsrb_cutout(item: tuple[Path, Box, int]) -> Cutout:
        # European signs of no CTSRD class: an "unknown sign" in the scene's targets.
        path, box, class_id = item
        return cached_real(path, box, gtsrb_shape(class_id), None, f"gtsrb:{path.name}")

    @cached_property
    def _dfg_signs(self) -> list[list[tuple[FrameRecord, FrameInstance]]]:
        """Every DFG sign with a polygon and at least DFG_MIN_SIGN px, grouped by category."""
        by_category: dict[str, list[tuple[FrameRecord, FrameInstance]]] = {}
        for frame in self._dfg_frames:
            for sign in frame.instances:
                x1, y1, x2, y2 = sign.box
                if sign.ignore or sign.segmentation is None or max(x2 - x1, y2 - y1) < DFG_MIN_SIGN:
                    continue
                by_category.setdefault(sign.category, []).append((frame, sign))
        return [by_category[name] for name in sorted(by_category)]

    def _size(self, rng: np.random.Generator) -> float:
        config = self.config
        if rng.random() < config.large_fraction:
            low, high = config.max_size, config.large_max_size
        else:
            low, high = config.min_size, config.max_size
        size = math.exp(rng.uniform(math.log(low), math.log(high)))
        return min(size, 0.8 * min(config.width, config.height) - 2 * _MARGIN)

    def _place_group(self, image, backdrop, owner, placed: list[_Placed], rng) -> None:
        """One sign where it fits (or nothing after 30 tries), maybe its pole, maybe a
        second sign stacked under it on the same pole."""
        config = self.config
        # Drawn only when asked for, so that a seed gives the frames it gave before.
        if config.board_stack_rate and rng.random() < config.board_stack_rate:
            self._place_board_stack(image, backdrop, owner, placed, rng)
            return
        size = self._size(rng)
        warped = _pose_sign(self._cutout(rng, size), size, rng)
        height, width = warped.alpha.shape
        for _ in range(30):
            x0 = int(rng.integers(0, max(1, config.width - width + 1)))
            centre_y = config.height * (0.06 + 0.62 * rng.beta(2.0, 2.4))
            y0 = int(np.clip(round(centre_y - height / 2), 0, max(0, config.height - height)))
            if (
                width <= config.width
                and height <= config.height
                and _fits(warped.box_at(x0, y0), placed, config.max_overlap)
            ):
                break
        else:
            return
        below = None
        if rng.random() < config.stack_rate:
            below = self._stacked(warped, x0, y0, placed, rng)
        if rng.random() < config.pole_rate:
            _pole(image, owner, placed, warped, x0, y0, size, rng, config.min_visible)
        # Nothing comes between two stacked signs: only the lower one may be occluded.
        self._composite(
            image, backdrop, owner, placed, warped, x0, y0, rng, may_occlude=below is None
        )
        if below is not None:
            self._composite(image, backdrop, owner, placed, *below, rng)

    def _place_board_stack(self, image, backdrop, owner, placed: list[_Placed], rng) -> None:
        """2-7 direction boards of one width, style and pose, stacked flush (or nearly) on
        a post, each its own sign; nothing where the stack does not fit."""
        config = self.config
        width = float(np.clip(self._size(rng) * 1.5, 32, 0.45 * config.width))
        style, pose = board_style(rng), _draw_pose(False, rng)
        count = int(rng.integers(2, 8))
        boards = [_pose_sign(direction_board(rng, style), width, rng, pose) for _ in range(count)]
        gap = round(width * rng.uniform(0, 0.02)) if rng.random() < 0.5 else 0
        # Each board's patch origin relative to the stack's: centred under the first board,
        # its box starting where the box above it ends (plus the gap).
        offsets, top = [], 0
        first_x1, _, first_x2, _ = boards[0].box
        for board in boards:
            x1, y1, x2, y2 = board.box
            offsets.append((round((first_x1 + first_x2 - x1 - x2) / 2), top - y1))
            top += y2 - y1 + gap
        for _ in range(30):
            x0 = int(rng.integers(0, max(1, config.width - round(width))))
            y0 = int(rng.integers(0, max(1, round(0.7 * config.height - top))))
            origins = [(x0 + dx, y0 + dy) for dx, dy in offsets]
            if all(
                0 <= x <= config.width - board.alpha.shape[1]
                and 0 <= y <= config.height - board.alpha.shape[0]
                and _fits(board.box_at(x, y), placed, config.max_overlap)
                for board, (x, y) in zip(boards, origins, strict=True)
            ):
                break
        else:
            return
        if rng.random() < config.pole_rate:
            x, y = origins[-1]
            _pole(image, owner, placed, boards[-1], x, y, width / 3, rng, config.min_visible)
        for number, (board, (x, y)) in enumerate(zip(boards, origins, strict=True), start=1):
            # Only the lowest board may be occluded, as with two stacked signs.
            lowest = number == count
            self._composite(image, backdrop, owner, placed, board, x, y, rng, may_occlude=lowest)

    def _stacked(self, upper: _Warped, x0: int, y0: int, placed, rng):
        """A sign under `upper`, about as wide, touching or a little apart; None if it
        does not fit."""
        config = self.config
        ux1, uy1, ux2, uy2 = upper.box_at(x0, y0)
        size = max(config.min_size, (ux2 - ux1) * rng.uniform(0.8, 1.05))
        warped = _pose_sign(self._cutout(rng, size), size, rng)
        height, width = warped.alpha.shape
        bx0, by0, bx1, _ = warped.box_at(0, 0)
        nx = round((ux1 + ux2) / 2 - (bx0 + bx1) / 2 + rng.normal(0, 0.03 * size))
        ny = round(uy2 + rng.uniform(0, 0.1) * size - by0)
        if not (0 <= nx <= config.width - width and 0 <= ny <= config.height - height):
            return None
        box = warped.box_at(nx, ny)
        if not _fits(box, placed, config.max_overlap) or box_overlap(box, (ux1, uy1, ux2, uy2)) > 0:
            return None
        return warped, nx, ny

    def _composite(
        self, image, backdrop, owner, placed: list[_Placed], warped, x0, y0, rng, may_occlude=True
    ) -> None:
        height, width = warped.alpha.shape
        region = image[y0 : y0 + height, x0 : x0 + width].astype(np.float32)
        alpha = warped.alpha
        sign = warped.premultiplied
        # Lit for its surroundings: a bright sign in a dark scene is toned down, and so on.
        around = region.mean() + 1.0
        own = (sign.sum(axis=(0, 1)) / max(alpha.sum(), 1e-3)).mean() + 1.0
        gain = float(np.clip(np.exp(rng.normal(0, 0.18)) * (around / own) ** 0.35, 0.35, 1.6))
        sign = np.minimum(sign * gain, 255 * alpha[..., None])
        if rng.random() < 0.4:  # defocus of the sign layer (the mask stays the geometric one)
            sigma = rng.uniform(0.3, 0.8) * max(1.0, max(height, width) / 60)
            sign = cv2.GaussianBlur(sign, (0, 0), sigma)
            alpha = cv2.GaussianBlur(alpha, (0, 0), sigma)
        region = region * (1 - alpha[..., None]) + sign
        image[y0 : y0 + height, x0 : x0 + width] = np.clip(region + 0.5, 0, 255).astype(np.uint8)
        number = len(placed) + 1
        owner[y0 : y0 + height, x0 : x0 + width][warped.mask] = number
        placed.append(_Placed(warped.box_at(x0, y0), warped.cutout, int(warped.mask.sum())))
        if rng.random() < self.config.occlusion_rate and may_occlude:
            _occlude(image, backdrop, owner, placed, rng, self.config.min_visible)

    def _signs(self, owner: np.ndarray, placed: list[_Placed]) -> Iterator[SceneSign]:
        for number, sign in enumerate(placed, start=1):
            x1, y1, x2, y2 = sign.box
            local = owner[y1:y2, x1:x2] == number
            local_box = mask_box(local)
            if local_box is None:
                continue
            lx1, ly1, lx2, ly2 = local_box
            box = (x1 + lx1, y1 + ly1, x1 + lx2, y1 + ly2)
            mask = local[ly1:ly2, lx1:lx2]
            size = max(box[2] - box[0], box[3] - box[1])
            yield SceneSign(
                box=box,
                mask=mask,
                class_id=sign.cutout.class_id,
                source=sign.cutout.source,
                visible=round(float(mask.sum()) / sign.pixels, 4),
                ignore=size < self.config.ignore_below,
            )


# --- posing and painting -------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Warped:
    """A posed sign in its own patch: premultiplied float RGB (0-255), alpha in [0, 1], the
    mask (alpha >= 0.5) and the mask's box within the patch."""

    premultiplied: np.ndarray
    alpha: np.ndarray
    mask: np.ndarray
    box: Box
    cutout: Cutout

    def box_at(self, x0: int, y0: int) -> Box:
        x1, y1, x2, y2 = self.box
        return x1 + x0, y1 + y0, x2 + x0, y2 + y0


@dataclass(frozen=True, eq=False)
class _Placed:
    box: Box  # where the sign's whole mask lies in the frame
    cutout: Cutout
    pixels: int  # mask pixels when composited, before anything covered them


@dataclass(frozen=True)
class _Pose:
    """A sign's turn in 3D (yaw, pitch, roll in radians), the stretch of its aspect and its
    distance in sign heights (perspective)."""

    yaw: float
    pitch: float
    roll: float
    stretch: float
    distance: float


def _draw_pose(real: bool, rng: np.random.Generator) -> _Pose:
    spread = (8.0, 5.0, 3.0) if real else (18.0, 8.0, 4.0)  # real crops come posed already
    yaw, pitch, roll = np.radians(np.clip(rng.normal(0, spread), -40, 40))
    stretch = math.exp(rng.normal(0, 0.04))
    return _Pose(float(yaw), float(pitch), float(roll), stretch, rng.uniform(4.0, 10.0))


def _pose_sign(
    cutout: Cutout, size: float, rng: np.random.Generator, pose: _Pose | None = None
) -> _Warped:
    """The cutout turned in 3D (`pose`, else a drawn one) and scaled so that the larger side
    of its box is `size`."""
    height, width = cutout.alpha.shape
    pose = pose or _draw_pose(not cutout.source.startswith("synthetic"), rng)
    rotation = _turn(pose.roll, 0, 1) @ _turn(pose.yaw, 2, 0) @ _turn(pose.pitch, 1, 2)
    aspect = width / height * pose.stretch
    corners = np.array([(0, 0), (width, 0), (width, height), (0, height)], np.float64)
    planar = np.column_stack(
        [(corners[:, 0] / width * 2 - 1) * aspect, corners[:, 1] / height * 2 - 1, np.zeros(4)]
    )
    turned = planar @ rotation.T
    projected = turned[:, :2] * (pose.distance / (pose.distance + turned[:, 2:]))
    posed = cv2.getPerspectiveTransform(corners.astype(np.float32), projected.astype(np.float32))
    outline = cv2.perspectiveTransform(cutout.outline[None], posed)[0]
    (left, top), (right, bottom) = outline.min(axis=0), outline.max(axis=0)
    scale = size / max(right - left, bottom - top)
    patch_w = math.ceil((right - left) * scale) + 2 * _MARGIN
    patch_h = math.ceil((bottom - top) * scale) + 2 * _MARGIN
    place = np.array(
        [[scale, 0, _MARGIN - left * scale], [0, scale, _MARGIN - top * scale], [0, 0, 1]]
    )
    # Shrink the source to about 1.5x its final size first (area averaging), so that the
    # bilinear warp neither aliases small signs nor wastes time on big sources.
    level = float(np.clip(size * 1.5 / max(width, height), 0.0, 1.0))
    rgba = np.dstack([cutout.rgb, cutout.alpha])
    if level < 0.75:
        small = (max(4, round(width * level)), max(4, round(height * level)))
        rgba = cv2.resize(rgba, small, interpolation=cv2.INTER_AREA)
    to_source = np.diag([width / rgba.shape[1], height / rgba.shape[0], 1.0])
    warped = cv2.warpPerspective(
        rgba.astype(np.float32),
        place @ posed @ to_source,
        (patch_w, patch_h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    alpha = warped[..., 3] / 255.0
    premultiplied = _weather(warped[..., :3], alpha, rng)
    mask = alpha >= 0.5
    box = mask_box(mask)
    if box is None:  # a sliver: keep one pixel so that every sign has a mask
        mask[patch_h // 2, patch_w // 2] = True
        box = (patch_w // 2, patch_h // 2, patch_w // 2 + 1, patch_h // 2 + 1)
    return _Warped(premultiplied, alpha.astype(np.float32), mask, box, cutout)


def _turn(angle: float, i: int, j: int) -> np.ndarray:
    rotation = np.eye(3)
    rotation[i, i] = rotation[j, j] = math.cos(angle)
    rotation[i, j], rotation[j, i] = -math.sin(angle), math.sin(angle)
    return rotation


def _weather(premultiplied: np.ndarray, alpha: np.ndarray, rng) -> np.ndarray:
    """Faded towards grey-white, tinted, and lit unevenly across the face."""
    tinted = premultiplied * np.exp(rng.normal(0, 0.05, 3)).astype(np.float32)
    fade = rng.uniform(0.0, 0.45) ** 2
    faded = tinted * (1 - fade) + fade * 235 * alpha[..., None]
    height, width = alpha.shape
    gx, gy = rng.normal(0, 0.1, 2)
    xs = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    ys = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    light = np.clip(1 + gx * xs + gy * ys, 0.5, 1.5)[..., None]
    return np.minimum(faded * light, 255 * alpha[..., None]).astype(np.float32)


def _fits(box: Box, placed: list[_Placed], max_overlap: float) -> bool:
    area = box_area(box)
    for other in placed:
        if box_overlap(box, other.box) > max_overlap * min(area, box_area(other.box)):
            return False
    return True


def _paint(image, owner, region: Box, cover: np.ndarray, paint, placed, min_visible) -> bool:
    """Blend `paint` over the image inside `region` by coverage `cover` (float [0, 1]); the
    pixels covered by half or more belong to no sign any more. Nothing is painted (False)
    when that would leave a sign under `min_visible` of its pixels."""
    x1, y1, x2, y2 = region
    hit = owner[y1:y2, x1:x2][cover >= 0.5]
    numbers, counts = np.unique(hit[hit > 0], return_counts=True)
    for number, count in zip(numbers.tolist(), counts.tolist(), strict=True):
        bx1, by1, bx2, by2 = placed[number - 1].box
        left = int((owner[by1:by2, bx1:bx2] == number).sum()) - count
        if left < min_visible * placed[number - 1].pixels:
            return False
    view = image[y1:y2, x1:x2].astype(np.float32)
    weight = cover[..., None]
    image[y1:y2, x1:x2] = np.clip(view * (1 - weight) + paint * weight + 0.5, 0, 255).astype(
        np.uint8
    )
    owner[y1:y2, x1:x2][cover >= 0.5] = 0
    return True


def _pole(image, owner, placed, warped: _Warped, x0, y0, size: float, rng, min_visible) -> None:
    """A grey post from the sign's centre down (drawn first, so the sign hides its top);
    left out where it would hide too much of a sign drawn earlier."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = warped.box_at(x0, y0)
    thickness = max(1, round(size * rng.uniform(0.05, 0.09)))
    top = (y1 + y2) // 2
    bottom = min(height, round(top + size * rng.uniform(1.5, 5.0)))
    centre = (x1 + x2) / 2 + rng.normal(0, 0.02 * size)
    left = max(0, math.floor(centre - thickness))
    right = min(width, math.ceil(centre + thickness) + 1)
    if bottom <= top or right <= left:
        return
    cover = np.zeros((bottom - top, right - left), np.uint8)
    end_x = centre + rng.normal(0, 0.01) * (bottom - top) - left
    cv2.line(
        cover,
        (round((centre - left) * 16), 0),
        (round(end_x * 16), (bottom - top) * 16),
        255,
        thickness,
        cv2.LINE_AA,
        shift=4,
    )
    metal = np.full(3, rng.uniform(90, 200), np.float32) * np.exp(rng.normal(0, 0.05, 3))
    region = (left, top, right, bottom)
    _paint(image, owner, region, cover.astype(np.float32) / 255, metal, placed, min_visible)


def _occlude(image, backdrop, owner, placed: list[_Placed], rng, min_visible: float) -> None:
    """Leaves, a post or a box in front of the last sign placed; left out when it would
    hide more than 1 - min_visible of that sign's pixels (or of any other's). A box takes
    its texture from `backdrop`, the frame before any sign was drawn: copied from the frame
    itself, it could carry a sign that no mask marks."""
    height, width = image.shape[:2]
    number, sign = len(placed), placed[-1]
    x1, y1, x2, y2 = sign.box
    size = max(x2 - x1, y2 - y1)
    kind = int(rng.integers(3))
    if kind == 0:  # a leafy branch reaching in from one side
        side = x1 if rng.random() < 0.5 else x2
        anchor = np.array([side, rng.uniform(y1, y2)])
        region = _clip_box(
            (side - size, y1 - size // 2, side + size, y2 + size // 2), width, height
        )
        cover = np.zeros((region[3] - region[1], region[2] - region[0]), np.uint8)
        paint = np.zeros((*cover.shape, 3), np.float32)
        green = np.array([40, 90, 25], np.float32) * np.exp(rng.normal(0, 0.2, 3))
        for _ in range(int(rng.integers(6, 16))):
            centre = anchor + rng.normal(0, size * 0.15, 2) - region[:2]
            axes = np.maximum(1, size * rng.uniform(0.05, 0.14, 2))
            leaf = ((int(centre[0]), int(centre[1])), (int(axes[0]), int(axes[1])))
            angle = rng.uniform(0, 180)
            cv2.ellipse(cover, *leaf, angle, 0, 360, 255, -1, cv2.LINE_AA)
            tone = (green * rng.uniform(0.6, 1.5)).tolist()
            cv2.ellipse(paint, *leaf, angle, 0, 360, tone, -1, cv2.LINE_AA)
    elif kind == 1:  # a post or lamp standard in front, from the ground up past the sign
        thickness = max(1, round(size * rng.uniform(0.08, 0.2)))
        x = rng.uniform(x1, x2)
        top = max(0, y1 - int(rng.integers(0, size + 1)))
        region = _clip_box(
            (round(x - thickness), top, round(x + thickness) + 1, height), width, height
        )
        cover = np.zeros((region[3] - region[1], region[2] - region[0]), np.uint8)
        centre = round((x - region[0]) * 16)
        cv2.line(cover, (centre, 0), (centre, cover.shape[0] * 16), 255, thickness, cv2.LINE_AA, 4)
        paint = np.full(3, rng.uniform(40, 160), np.float32) * np.exp(rng.normal(0, 0.04, 3))
    else:  # something boxy rising from below (a van's roof, a wall), textured like the scene
        top = round(rng.uniform(y1 + 0.55 * (y2 - y1), y2))
        left = round(rng.uniform(x1 - size, x2 - 0.3 * size))
        right = round(left + rng.uniform(0.5, 2.0) * size)
        region = _clip_box((left, top, right, min(height, y2 + size)), width, height)
        cover = np.full((region[3] - region[1], region[2] - region[0]), 255, np.uint8)
        rows, cols = cover.shape
        sx = int(rng.integers(0, width - cols + 1))
        sy = int(rng.integers(0, height - rows + 1))
        texture = backdrop[sy : sy + rows, sx : sx + cols].astype(np.float32)
        paint = texture * rng.uniform(0.5, 1.0)
    if cover.size == 0:
        return
    coverage = cover.astype(np.float32) / 255
    rx1, ry1, rx2, ry2 = region
    if not ((owner[ry1:ry2, rx1:rx2] == number) & (coverage >= 0.5)).any():
        return  # it would miss the sign
    _paint(image, owner, region, coverage, paint, placed, min_visible)


def _clip_box(box, width: int, height: int) -> Box:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, y1 = min(max(0, x1), width), min(max(0, y1), height)
    return x1, y1, max(x1, min(width, x2)), max(y1, min(height, y2))


def _camera(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure, contrast, gamma and colour cast by lookup table; blur, motion blur, noise."""
    levels = np.arange(256, dtype=np.float32) / 255
    contrast, exposure = rng.uniform(0.8, 1.15), math.exp(rng.normal(0, 0.2))
    gamma = math.exp(rng.normal(0, 0.12))
    table = np.empty((256, 3), np.uint8)
    for channel, cast in enumerate(np.exp(rng.normal(0, 0.04, 3))):
        curve = np.clip(((levels - 0.5) * contrast + 0.5) * exposure * cast, 0, 1) ** gamma
        table[:, channel] = np.clip(curve * 255 + 0.5, 0, 255).astype(np.uint8)
    image = cv2.LUT(image, table[None])
    if rng.random() < 0.4:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.0))
    if rng.random() < 0.1:
        length = int(rng.integers(3, 8))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2] = 1 / length
        rotation = cv2.getRotationMatrix2D(((length - 1) / 2,) * 2, rng.uniform(-30, 30), 1)
        kernel = cv2.warpAffine(kernel, rotation, (length, length))
        image = cv2.filter2D(image, -1, kernel / max(kernel.sum(), 1e-6))
    if rng.random() < 0.4:  # sensor noise, drawn at half resolution (cheap, and as grainy)
        height, width = image.shape[:2]
        noise = rng.standard_normal(((height + 1) // 2, (width + 1) // 2, 3), dtype=np.float32)
        noise = cv2.resize(noise, (width, height), interpolation=cv2.INTER_NEAREST)
        image = np.clip(image + noise * rng.uniform(1.0, 5.0), 0, 255).astype(np.uint8)
    return image


# --- backgrounds -------------------------------------------------------------------------------


def _cover(source: np.ndarray, width: int, height: int, rng) -> np.ndarray:
    """A random crop of `source`, zoomed 1-1.4x beyond covering width x height, maybe
    mirrored, resized to exactly width x height."""
    source_h, source_w = source.shape[:2]
    scale = max(width / source_w, height / source_h) * rng.uniform(1.0, 1.4)
    crop_w, crop_h = min(source_w, width / scale), min(source_h, height / scale)
    x0 = rng.uniform(0, source_w - crop_w)
    y0 = rng.uniform(0, source_h - crop_h)
    window = source[int(y0) : int(y0 + crop_h), int(x0) : int(x0 + crop_w)]
    if rng.random() < 0.5:
        window = window[:, ::-1]
    shrink = window.shape[1] > width
    method = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(window), (width, height), interpolation=method)


def _paint_out(image: np.ndarray, frame: FrameRecord) -> np.ndarray:
    """The frame with every annotated sign (and a rim around it) inpainted away."""
    height, width = frame.height, frame.width
    mask = np.zeros((height, width), np.uint8)
    regions = []
    for instance in frame.instances:
        x1, y1, x2, y2 = instance.box
        grow = max(3, round(_DFG_DILATION * max(x2 - x1, y2 - y1)))
        x1, y1 = max(0, x1 - grow), max(0, y1 - grow)
        x2, y2 = min(width, x2 + grow), min(height, y2 + grow)
        own = instance_mask(instance, height, width)[y1:y2, x1:x2].astype(np.uint8)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
        mask[y1:y2, x1:x2] |= cv2.dilate(own, kernel)
        regions.append((x1, y1, x2, y2))
    # Inpaint around one sign at a time (much cheaper than the whole frame); pixels filled
    # for one sign are known pixels for the next.
    image = image.copy()
    pad = 12
    for x1, y1, x2, y2 in regions:
        x1, y1, x2, y2 = (
            max(0, x1 - pad),
            max(0, y1 - pad),
            min(width, x2 + pad),
            min(height, y2 + pad),
        )
        hole = mask[y1:y2, x1:x2]
        if hole.any():
            image[y1:y2, x1:x2] = cv2.inpaint(image[y1:y2, x1:x2], hole, 5, cv2.INPAINT_TELEA)
            hole[...] = 0
    return image


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return encoded.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def jpeg_round_trip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """`rgb` as it comes back from JPEG at `quality`."""
    return decode_jpeg(encode_jpeg(rgb, quality))


# --- writing -----------------------------------------------------------------------------------


def categories() -> list[dict]:
    """The COCO categories of written scenes: CTSRD classes by id, then "unknown sign"."""
    known = [
        {"id": c.class_id, "name": c.name, "supercategory": SUPERCATEGORY}
        for c in sign_classes("ctsrd")
    ]
    unknown = {"id": unknown_sign_id("ctsrd"), "name": UNKNOWN_SIGN, "supercategory": SUPERCATEGORY}
    return [*known, unknown]


def sign_annotation(
    sign: SceneSign, annotation_id: int, image_id: int, height: int, width: int
) -> dict:
    """One sign as a COCO annotation (RLE mask), with the generator's own fields."""
    x1, y1, x2, y2 = sign.box
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": unknown_sign_id("ctsrd") if sign.class_id is None else sign.class_id,
        "ctsrd_class": sign.class_id,
        "bbox": [x1, y1, x2 - x1, y2 - y1],
        "area": int(sign.mask.sum()),
        "segmentation": rle_encode_box(sign.mask, sign.box, height, width),
        # Stock pycocotools takes `ignore` from `iscrowd` (it overwrites the field), so a sign
        # too small to count is marked in both for other tools to skip it as ours does.
        "iscrowd": int(sign.ignore),
        "ignore": sign.ignore,
        "visible": sign.visible,
        "source": sign.source,
    }


def write_annotations(out: Path, document: dict) -> None:
    """OUT/annotations.json, replaced whole (a reader never sees half a file)."""
    temporary = out / "annotations.json.tmp"
    temporary.write_text(json.dumps(document, separators=(",", ":")) + "\n", encoding="utf-8")
    os.replace(temporary, out / "annotations.json")


def write_scenes(
    out_dir: Path | str,
    *,
    frames: int,
    seed: int = 0,
    config: SceneConfig | None = None,
    sources: SceneSources | None = None,
) -> SceneReport:
    """Write OUT/images/NNNNNN.jpg and OUT/annotations.json (COCO, RLE masks)."""
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    generator = SceneGenerator(sources, config)
    config = generator.config
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    report = SceneReport(frames=frames, seconds=0.0)
    started = time.perf_counter()
    for index in range(frames):
        scene = generator.render(seed, index, compress=False)
        name = f"{index:06d}.jpg"
        (out / "images" / name).write_bytes(encode_jpeg(scene.image, scene.jpeg_quality))
        images.append(
            {
                "id": index,
                "file_name": name,
                "width": config.width,
                "height": config.height,
                "background": scene.background,
            }
        )
        report.backgrounds[scene.background.split(":")[0]] = (
            report.backgrounds.get(scene.background.split(":")[0], 0) + 1
        )
        for sign in scene.signs:
            annotations.append(
                sign_annotation(sign, len(annotations) + 1, index, config.height, config.width)
            )
            report.sizes.append(sign.size)
            report.ignored += sign.ignore
            kind = sign.source.split(":")[0]
            report.sources[kind] = report.sources.get(kind, 0) + 1
    document = {
        "info": {
            "description": "GreedySign composited road scenes (greedysign data scenes)",
            "version": 1,
            "seed": seed,
            "frames": frames,
            "config": asdict(config),
            "backgrounds": list(generator.background_kinds) or ["procedural"],
            "sign_sources": list(generator.sign_kinds),
            "real_crops": generator.sources.real_crops_record(),
        },
        "images": images,
        "annotations": annotations,
        "categories": categories(),
    }
    write_annotations(out, document)
    report.seconds = time.perf_counter() - started
    return report
