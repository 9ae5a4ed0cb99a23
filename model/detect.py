"""Every sign in a whole road frame: found by a scene model's segmentation head, read by the
crop classifier.

    frame ─▶ prepare_frame ─▶ SceneSegmenter ─▶ stitch ─▶ find_instances ─▶ crop_inputs ─▶ Predictor
             long side resized,  sign (and core)    tiles     connected         crops of the
             padded to /32,      probability        merged    components,       original frame,
             tiled if asked      per pixel                    parted by cores   10 % margin
                                                                  and board seams

A scene model is a SignNet (model/network.py) whose segmentation head was trained to mark sign
pixels in tiles of whole frames (`ModelInfo.task == "scenes"`); its classifier is not used.
A scene model that draws a second map marks each sign's core, the pixels deep inside it
(data/tiles.py): signs that touch share a component of sign pixels, not of cores.
The crop model is any classification model (the Predictor of model/inference.py): each
instance is cut from the ORIGINAL frame at full resolution with a margin and read as one
sign; its answer "no sign" drops the instance as a false detection.

The steps are functions, so that the service (service/pipeline.py) runs the same code with
its batching engine between them; `Detector` chains them for scripts and the CLI.
Boxes are (x1, y1, x2, y2) in original pixels with exclusive ends; an instance's mask is
box-shaped (the frame's mask[y1:y2, x1:x2]).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy import ndimage

from data.records import Box
from data.transforms import IMAGENET_MEAN, IMAGENET_STD
from model.checkpoint import ModelFileError, ModelInfo, load_model
from model.device import cpu_has_amx, resolve_device
from model.inference import NO_SIGN, Prediction, Predictor, mask_to_rle
from model.network import SignNet
from model.reading import cut, grown

SCENE_TASK = "scenes"
SHIPPED_SCENE_MODEL = Path(__file__).resolve().parent / "shipped" / "greedysign-scenes-resnet18.pt"
STRIDE = 32  # the network's output stride: inputs are padded to a multiple of it
MIN_CORE_AREA = 4  # working pixels: a core smaller than this is noise, not a sign
# A post of direction boards, parted at its seams (`part_board_post`); chosen on the
# validation sets (BENCHMARKS.md section 6, "Board posts parted at their seams").
BOARD_MIN_WIDTH = 32  # original pixels
BOARD_MIN_FILL = 0.7  # the region's mask fills this share of its box: a rectangle, not a disc
SEAM_COVER = 0.95  # a seam: a strong horizontal edge across this share of the inner width
SEAM_TILT = 0.03  # rows a seam may rise or fall over the region's width, as a share of it
SEAM_THICKNESS = 0.08  # a seam's rows beyond its tilt band, as a share of the width (8 or more)
SEAM_MIN_GRADIENT = 40.0  # grey levels of a seam's vertical Sobel gradient, at least
SEAM_RELATIVE_GRADIENT = 0.3  # and this share of the region's 99th percentile of it
BOARD_ASPECTS = (2.5, 8.0)  # each part's width over its height: a board, not a sign's half
DEFAULT_OVERLAP = 64  # working pixels that neighbouring tiles share
# Past these a working frame costs gigabytes and says nothing more about a road scene.
MAX_LONG_SIDE = 4096
MAX_UPSCALE = 8.0
REMAP_BLOCK = 16384  # output pixels per side of one cv2.remap call (its limit: 32766)
_MEAN = np.asarray(IMAGENET_MEAN, np.float32) * 255
_INV_STD = 1 / (np.asarray(IMAGENET_STD, np.float32) * 255)


@dataclass(frozen=True)
class DetectConfig:
    """How a frame is searched.

    `long_side`: the frame is resized so that its longer side is this many pixels and padded
    to a multiple of 32; a smaller frame is enlarged toward it by at most `max_upscale` (1:
    never). The scene model learned signs at the sizes a road frame about 1024 px wide shows
    them: in a 480x360 dashcam frame they are half that size or less (and the camera's
    burnt-in text shrinks to the size of a far sign), while a photo of one sign enlarged
    eightfold is a sign larger than any it saw (BENCHMARKS.md section 6, "Small frames
    enlarged"). `tile`: 0 runs the whole resized frame at once; else it runs in tile x tile
    pieces (a multiple of 32) that overlap by `overlap` pixels (default: 64, at most half the
    tile, so that a tile of 32 or 64 needs no overlap of its own), each pixel taken from the
    tile it lies deepest inside (bounds the memory of a large `long_side`; the answers are
    close to the whole frame's, not equal: a tile sees less context, and the tiles start
    where they spread evenly over the frame, not at multiples of 32).
    `threshold`: a pixel is a sign pixel from this probability on. `min_area`: components
    smaller than this many pixels at the working size are noise. `margin`: the crop read by
    the classifier extends the box by this share of its width (height) on each side; 0.1
    reads more signs right than the 15 % with which a photo's sign is read, on every
    validation set (BENCHMARKS.md section 6, "The reading margin").
    `split_touching`: part components that hold signs that touch (stacked on one pole): on
    the DFG frames 27 of 88 signs share a component of the true mask with another. With a
    model that draws cores, a component is parted between its cores (`part_by_cores`); with
    one that does not, at the necks of its distance transform (`split_touching`). With the
    true masks as the model's output, recall at 1024 px is 0.68 unparted, 0.90 parted at
    necks (bench/detect_oracle.py). `require_core`: with a model that draws cores, a region
    with fewer than MIN_CORE_AREA core pixels in all (at the working size) is dropped: on the
    generated validation scenes that removed about a tenth of the false signs and no found
    sign of 32 px and more (BENCHMARKS.md section 6). `part_boards`: a region of direction
    boards stacked flush on one post (one component, its cores merged too) is parted at the
    seams the frame shows between them (`part_board_post`). `min_solidity`: a region whose
    mask fills less than this share of its convex hull is dropped (`solidity`; 0 keeps every
    shape). A sign's face is convex (disc, triangle, octagon, diamond, board) and stays so in
    perspective, while false regions on façades, lane markings and foliage are often ragged:
    at 0.75, over eight validation sets, the false signs of 32 px and more went from 236 to
    212 and the signs found from 1567 to 1566 (BENCHMARKS.md section 6, "Ragged regions
    dropped"). `max_signs`: at most this many instances per frame, the best scores (a frame is
    read in one batch of crops).
    """

    long_side: int = 1024
    tile: int = 0
    overlap: int | None = None
    max_upscale: float = 1.5
    threshold: float = 0.5
    min_area: int = 12
    margin: float = 0.1
    split_touching: bool = True
    require_core: bool = True
    part_boards: bool = True
    min_solidity: float = 0.75
    max_signs: int = 64

    def __post_init__(self) -> None:
        # The bounds the service's settings hold (service/settings.py), so that the command
        # line cannot ask for a working frame of gigapixels either. Comparisons written so
        # that NaN fails them.
        if not STRIDE <= self.long_side <= MAX_LONG_SIDE:
            raise ValueError(
                f"long_side must lie in [{STRIDE}, {MAX_LONG_SIDE}], got {self.long_side}"
            )
        if self.tile and not (STRIDE <= self.tile <= MAX_LONG_SIDE and self.tile % STRIDE == 0):
            raise ValueError(
                f"tile must be 0 or a multiple of {STRIDE} up to {MAX_LONG_SIDE}, got {self.tile}"
            )
        if self.overlap is None:
            overlap = min(DEFAULT_OVERLAP, self.tile // 2) if self.tile else DEFAULT_OVERLAP
            object.__setattr__(self, "overlap", overlap)
        if self.tile and not 0 <= self.overlap < self.tile:
            raise ValueError(f"overlap must lie in [0, tile), got {self.overlap}")
        if not 1 <= self.max_upscale <= MAX_UPSCALE:
            raise ValueError(f"max_upscale must lie in [1, {MAX_UPSCALE}], got {self.max_upscale}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must lie in (0, 1), got {self.threshold}")
        if self.min_area < 1 or self.max_signs < 1:
            raise ValueError("min_area and max_signs must be positive")
        if not 0 <= self.margin <= 1:
            raise ValueError(f"the read margin must lie in [0, 1], got {self.margin}")
        if not 0 <= self.min_solidity <= 1:
            raise ValueError(f"min_solidity must lie in [0, 1], got {self.min_solidity}")


# --- geometry --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameGeometry:
    """Where the original frame lies in the network's input. `scale` is (sy, sx), working
    pixels per original pixel on each axis."""

    size: tuple[int, int]  # (H, W) of the original
    resized: tuple[int, int]  # (h, w) of the frame in the network's input
    padded: tuple[int, int]  # (h, w) padded to multiples of 32

    @property
    def scale(self) -> tuple[float, float]:
        return self.resized[0] / self.size[0], self.resized[1] / self.size[1]


def frame_geometry(height: int, width: int, config: DetectConfig) -> FrameGeometry:
    if height < 1 or width < 1:
        raise ValueError(f"a frame needs pixels, got {width}x{height}")
    scale = min(config.long_side / max(height, width), config.max_upscale)
    resized = (max(1, round(height * scale)), max(1, round(width * scale)))
    padded = tuple(max(STRIDE, -(-side // STRIDE) * STRIDE) for side in resized)
    return FrameGeometry((height, width), resized, padded)


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start of each tile along an axis of `length` pixels: the first at 0, the last ending at
    `length`, consecutive ones overlapping by at least `overlap`."""
    if length <= tile:
        return [0]
    count = 1 + math.ceil((length - tile) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


@dataclass
class FrameInput:
    """The network's input for one frame: the padded frame whole (N = 1) or its tiles."""

    tensor: torch.Tensor  # float32 [N, 3, th, tw], normalised
    origins: list[tuple[int, int]]  # (y, x) of each tile in the padded frame
    geometry: FrameGeometry


def prepare_frame(rgb: np.ndarray, config: DetectConfig) -> FrameInput:
    """HxWx3 uint8 RGB -> the normalised, padded input (the padding is the mean colour,
    zero after normalisation, as the training tiles' borders)."""
    height, width = rgb.shape[:2]
    geometry = frame_geometry(height, width, config)
    (h, w), (ph, pw) = geometry.resized, geometry.padded
    if (h, w) != (height, width):
        shrinking = h * w < height * width
        rgb = cv2.resize(
            rgb, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        )
    padded = np.zeros((ph, pw, 3), np.float32)
    padded[:h, :w] = (rgb.astype(np.float32) - _MEAN) * _INV_STD
    whole = torch.from_numpy(padded.transpose(2, 0, 1).copy())
    if not config.tile or (ph <= config.tile and pw <= config.tile):
        return FrameInput(whole[None], [(0, 0)], geometry)
    th, tw = min(config.tile, ph), min(config.tile, pw)
    origins = [
        (y, x)
        for y in tile_origins(ph, th, config.overlap)
        for x in tile_origins(pw, tw, config.overlap)
    ]
    tiles = torch.stack([whole[:, y : y + th, x : x + tw] for y, x in origins])
    return FrameInput(tiles, origins, geometry)


def stitch(probabilities: np.ndarray, frame: FrameInput) -> np.ndarray:
    """[N, C, th, tw] tile probabilities -> the [C, h, w] maps of the resized frame (padding
    cut). Each pixel comes from the tile it lies deepest inside, the overlaps cut at their
    middle: near its cut edge a tile sees part of a sign and may draw it a core of its own,
    which a maximum over the tiles would keep, parting the sign in two."""
    if len(probabilities) != len(frame.origins):
        raise ValueError(f"{len(probabilities)} maps for {len(frame.origins)} tiles")
    (h, w), padded = frame.geometry.resized, frame.geometry.padded
    if len(probabilities) == 1:
        return probabilities[0][:, :h, :w]
    channels, th, tw = probabilities.shape[1:]
    rows = _owned_spans([y for y, _ in frame.origins], th, padded[0])
    columns = _owned_spans([x for _, x in frame.origins], tw, padded[1])
    full = np.zeros((channels, *padded), np.float32)
    for probability, (y, x) in zip(probabilities, frame.origins, strict=True):
        (y1, y2), (x1, x2) = rows[y], columns[x]
        full[:, y1:y2, x1:x2] = probability[:, y1 - y : y2 - y, x1 - x : x2 - x]
    return full[:, :h, :w]


def _owned_spans(origins: Sequence[int], tile: int, length: int) -> dict[int, tuple[int, int]]:
    """Along one axis, the span [start, end) each tile's map is taken for: from the middle of
    its overlap with the tile before to the middle of that with the tile after."""
    starts = sorted(set(origins))
    cuts = [(before + tile + after) // 2 for before, after in zip(starts, starts[1:], strict=False)]
    bounds = [0, *cuts, length]
    return {start: (bounds[i], bounds[i + 1]) for i, start in enumerate(starts)}


# --- the scene model -------------------------------------------------------------------------


class SceneSegmenter:
    """A scene model on one device: sign probabilities of whole frames or tiles. Called from
    one thread at a time (the service's inference thread).

    `mirror`: each frame is also run mirrored left to right and the two probabilities averaged
    (signs are as likely on either side of a road, and a false region of one pass is seldom one
    of the other). On the four generated validation sets it removed 7-22 % of the false signs
    at the same recall, for twice the segmentation's time (BENCHMARKS.md section 6); so it is
    on by default where that time is small, on a GPU.

    `dtype`: what the pass autocasts to, None for float32: float16 on CUDA by default;
    bfloat16 on a CPU with AMX (Xeon 4th generation and later) by default, where it ran the
    whole-frame pass 2.2x faster with the validation sets' recall unchanged and their false
    signs within 0.05 per frame; on a CPU without AMX bfloat16 is slower, so float32 there
    (BENCHMARKS.md section 6, "CPU speed").
    """

    def __init__(
        self,
        model: SignNet,
        info: ModelInfo,
        device: torch.device,
        dtype: torch.dtype | None,
        mirror: bool,
    ):
        self.model = model
        self.info = info
        self.device = device
        self.dtype = dtype
        self.mirror = mirror

    @classmethod
    def load(
        cls,
        path: Path | str,
        device: str | torch.device = "auto",
        mirror: bool | None = None,
        bf16: bool | None = None,
    ) -> SceneSegmenter:
        """A scene model file (task "scenes"); a crop model is refused with the reason.
        CUDA runs it in float16. `mirror`: None turns it on with CUDA. `bf16`: bfloat16 on a
        CPU; None turns it on where the CPU has AMX."""
        device = resolve_device(device)
        on_cuda = device.type == "cuda"
        model, info = load_model(path, device)
        if info.task != SCENE_TASK:
            raise ModelFileError(
                f"{path}: a {info.task!r} model, not a scene model (task {SCENE_TASK!r}: "
                "train one with `greedysign train --task scenes`)"
            )
        if on_cuda:
            dtype = torch.float16
        else:
            dtype = torch.bfloat16 if (cpu_has_amx() if bf16 is None else bf16) else None
        # Channels-last on every device: on 2 CPU cores oneDNN runs the whole-frame pass
        # 1.4x faster so (BENCHMARKS.md section 6, "CPU speed"), on CUDA it feeds tensor cores.
        model = model.to(memory_format=torch.channels_last)
        return cls(
            model,
            info,
            device,
            dtype=dtype,
            mirror=on_cuda if mirror is None else mirror,
        )

    @property
    def dtype_name(self) -> str:
        """What the pass runs in: "float32", "float16" or "bfloat16"."""
        return str(self.dtype or torch.float32).removeprefix("torch.")

    def probabilities(self, batch: torch.Tensor) -> np.ndarray:
        """[N, 3, h, w] (h, w multiples of 32) -> float32 [N, C, h, w] probabilities: of sign
        pixels, and of sign cores for a model that draws them (C = 2)."""
        autocast = (
            torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else nullcontext()
        )
        with torch.inference_mode(), autocast, _without_cudnn_search():
            inputs = batch.to(self.device, non_blocking=True)
            if self.mirror:
                inputs = torch.cat([inputs, inputs.flip(-1)])
            inputs = inputs.contiguous(memory_format=torch.channels_last)
            logits = self.model.segment(self.model.encode(inputs), inputs.shape[-2:])
            probabilities = torch.sigmoid(logits.float())
            if self.mirror:
                plain, mirrored = probabilities.chunk(2)
                probabilities = (plain + mirrored.flip(-1)) / 2
            return probabilities.cpu().numpy()

    def warmup(self, shape: tuple[int, int]) -> None:
        """One pass at the input shape most frames will have (lazy initialisation)."""
        self.probabilities(torch.zeros(1, 3, *shape))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


@contextmanager
def _without_cudnn_search() -> Iterator[None]:
    """cudnn's per-shape algorithm search (`cudnn.benchmark`, which the sign model's fixed
    S x S inputs turn on for the process) off for the scene model: a frame's padded shape
    follows its size, so any client could make the one inference thread search again for each
    of about a thousand shapes, and keep the scratch memory of each search. The flag is the
    process's: like the scene model, call it from the inference thread alone."""
    searching = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = searching


# --- instances -------------------------------------------------------------------------------


@dataclass
class Instance:
    """One sign found in the mask, before it is read."""

    box: Box  # original pixels, ends exclusive: the bounding box of `mask`
    mask: np.ndarray  # bool, box-shaped, at the original resolution
    score: float  # mean sign probability over its pixels


def find_instances(
    maps: np.ndarray,
    geometry: FrameGeometry,
    config: DetectConfig,
    rgb: np.ndarray | None = None,
) -> list[Instance]:
    """The connected components (8-connected) of the thresholded sign map, parted where
    signs touch, each at least `min_area` working pixels and `min_solidity` solid, as
    instances in original pixels, best score first. `maps`: [C, h, w], the sign probability
    and, if C = 2, the core probability. `rgb`: the original frame, in which posts of boards
    are parted at their seams (`config.part_boards`)."""
    probability = maps[0]
    binary = (probability >= config.threshold).astype(np.uint8)
    cores = maps[1] >= config.threshold if len(maps) > 1 else None
    # In a frame of a few pixels, a quarter of it is no noise.
    min_area = min(config.min_area, max(1, probability.size // 4))
    part_boards = config.part_boards and rgb is not None
    if config.split_touching and cores is not None:
        labels = part_by_cores(binary, cores)
    elif config.split_touching:
        labels = split_touching(binary)
    else:
        labels = cv2.connectedComponents(binary, connectivity=8)[1]
    instances = []
    for k, box in enumerate(_label_boxes(labels)):
        if k == 0 or box is None:
            continue
        x1, y1, x2, y2 = box
        own = labels[y1:y2, x1:x2] == k
        coreless = cores is not None and (cores[y1:y2, x1:x2] & own).sum() < MIN_CORE_AREA
        if own.sum() < min_area or (config.require_core and coreless):
            continue
        values = probability[y1:y2, x1:x2]
        mask, original = _original_mask(np.where(own, values, 0.0), own, box, geometry, config)
        instance = Instance(original, mask, float(values[own].mean()))
        parts = part_board_post(rgb, instance) if part_boards else [instance]
        instances.extend(part for part in parts if solidity(part.mask) >= config.min_solidity)
    instances.sort(key=lambda instance: -instance.score)
    return instances[: config.max_signs]


def solidity(mask: np.ndarray) -> float:
    """The share of its convex hull that a bool mask fills, both counted in pixels: about 1
    for a filled disc, triangle or rectangle, 0.4 for a ring, 0 for an empty mask."""
    padded = np.pad(mask.astype(np.uint8), 1)  # a contour along the mask's own edge
    contours, _ = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return 0.0
    hull = np.zeros_like(padded)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.concatenate(contours)), 1)
    return float(np.count_nonzero(padded) / np.count_nonzero(hull))


def split_touching(binary: np.ndarray, dynamic: float = 0.25) -> np.ndarray:
    """int32 labels of `binary` (0 background) in which a component that is two or more
    blobs joined at a neck is cut at the neck: two round signs stacked on a pole become two
    instances, one sign stays one.

    The watershed of the distance to the background: its markers are the h-maxima of the
    distance (domes that rise at least `dynamic` of the component's largest distance, and
    2 px, above the saddle to any higher dome), and the rest of the component is flooded
    from them, deepest first (`_flood`; cv2.watershed floods by colour differences between
    neighbours, which a distance map does not have, and scipy's watershed_ift left most of
    a dome to its neighbour's marker here). Blobs joined along a side as wide as themselves
    (a plate under a plate) have no neck and stay one.
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:
        return labels
    distance = cv2.distanceTransform(binary, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    split = labels.astype(np.int32)
    next_label = count
    for k in range(1, count):
        x, y, w, h, _ = stats[k]
        own = labels[y : y + h, x : x + w] == k
        relief = np.where(own, distance[y : y + h, x : x + w], 0).astype(np.float32)
        height = max(2.0, dynamic * float(relief.max()))
        if relief.max() <= 2 * height:  # too thin to hold two domes of that height
            continue
        # The h-maxima: (relief - height) reconstructed under the relief by dilation cuts
        # every dome `height` below its top; the regional maxima of what is left are one
        # plateau per dome that rose `height` above its saddle to a higher one.
        floor = _reconstruct(np.maximum(relief - height, 0), relief)
        tops = floor - _reconstruct(np.maximum(floor - 0.01, 0), floor) > 0.005
        seeds_count, seeds = cv2.connectedComponents((tops & own).astype(np.uint8), 8)
        if seeds_count <= 2:
            continue
        flooded = _flood(relief, seeds, own)
        region = split[y : y + h, x : x + w]
        for part in range(2, seeds_count):  # part 1 keeps the component's label
            region[own & (flooded == part)] = next_label
            next_label += 1
    return split


def part_by_cores(binary: np.ndarray, cores: np.ndarray) -> np.ndarray:
    """int32 labels of `binary` (0 background) in which a component that holds two or more
    cores (components of `cores` of MIN_CORE_AREA pixels and more) is parted between them,
    each of its pixels going to the nearest core; a component with one core or none stays
    whole."""
    count, labels = cv2.connectedComponents(binary, connectivity=8)
    _, seeds, stats, _ = cv2.connectedComponentsWithStats(
        (cores & (binary > 0)).astype(np.uint8), connectivity=8
    )
    kept = stats[:, cv2.CC_STAT_AREA] >= MIN_CORE_AREA
    kept[0] = False
    inside = kept[seeds]
    # A core lies within one component: (component, core) pairs, one per kept core.
    pairs = np.unique(np.stack([labels[inside], seeds[inside]]), axis=1)
    components, core_counts = np.unique(pairs[0], return_counts=True)
    boxes = ndimage.find_objects(labels)
    next_label = count
    for component in components[core_counts >= 2]:
        window = boxes[component - 1]
        region = labels[window]
        own = region == component
        own_cores = np.where(
            np.isin(seeds[window], pairs[1][pairs[0] == component]), seeds[window], 0
        )
        # Each pixel's nearest core pixel (labelled by the piece of core it is in), then the
        # core that piece belongs to.
        _, nearest = cv2.distanceTransformWithLabels(
            (own_cores == 0).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_CCOMP
        )
        core_of = np.zeros(nearest.max() + 1, np.int32)
        core_of[nearest[own_cores > 0]] = own_cores[own_cores > 0]
        part = core_of[nearest]
        for core in np.unique(part[own])[1:]:  # the first core keeps the component's label
            region[own & (part == core)] = next_label
            next_label += 1
    return labels


def part_board_post(rgb: np.ndarray, instance: Instance) -> list[Instance]:
    """A region of direction boards stacked flush, parted at the seams between them; any
    other region as it is.

    The scene model marks such a post as one region, cores included (the cores of thin boards
    blur into one), but the frame shows the seams: a straight edge across the post's whole
    width where one board ends and the next begins. A region is parted when it is a filled
    rectangle (BOARD_MIN_FILL of its box) at least BOARD_MIN_WIDTH wide, at every row where a
    strong vertical gradient runs across SEAM_COVER of its inner width (a tilt of SEAM_TILT
    of the width allowed) in a run of rows no thicker than a line, and only if every part is
    then as wide as a board (BOARD_ASPECTS): a sign's text or pictogram does not cross it
    whole, a disc or a triangle is not filled, and texture has no lines. The parts keep the
    region's score and their rows of its mask."""
    x1, y1, x2, y2 = instance.box
    width, height = x2 - x1, y2 - y1
    min_aspect, max_aspect = BOARD_ASPECTS  # a part's width over its height
    if width < BOARD_MIN_WIDTH or height * max_aspect < 2 * width:
        return [instance]
    if instance.mask.mean() < BOARD_MIN_FILL:
        return [instance]
    tilt = max(1, round(SEAM_TILT * width))
    cover = _seam_cover(rgb[y1:y2, x1:x2], tilt)
    # A seam is a line: its run of covered rows is the tilt band around an edge or a border a
    # few pixels thick. Longer runs are texture (foliage, noise), not seams.
    thickest = 2 * tilt + 1 + max(8, round(SEAM_THICKNESS * width))
    seams, previous = [], 0
    rows = np.flatnonzero(cover >= SEAM_COVER)
    for run in np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1) if len(rows) else []:
        if len(run) > thickest:
            continue
        # One seam per run of rows: the middle of its best-covered rows (the tilt band widens
        # a seam's edges into a run centred on it).
        best = run[cover[run] == cover[run].max()]
        row = int(best[len(best) // 2])
        if min(row - previous, height - row) * max_aspect >= width:
            seams.append(row)
            previous = row
    cuts = list(pairwise([0, *seams, height]))
    if not seams or any((end - start) * min_aspect > width for start, end in cuts):
        return [instance]
    parts = []
    for start, end in cuts:
        mask = instance.mask[start:end]
        ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if len(ys):
            box = (
                x1 + int(xs[0]),
                y1 + start + int(ys[0]),
                x1 + int(xs[-1]) + 1,
                y1 + start + int(ys[-1]) + 1,
            )
            mask = mask[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
            parts.append(Instance(box, mask, instance.score))
    return parts


def _seam_cover(rgb: np.ndarray, tilt: int) -> np.ndarray:
    """Per row of an RGB patch: the share of its inner columns (the middle 80 %) crossed by a
    strong horizontal edge within `tilt` rows (a tilted seam). Strong: a vertical Sobel
    gradient of SEAM_MIN_GRADIENT grey levels or more, and at least SEAM_RELATIVE_GRADIENT of
    the patch's 99th percentile (a seam is among the patch's strongest edges)."""
    grey = cv2.GaussianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32), (3, 3), 0)
    gradient = np.abs(cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3))
    floor = SEAM_RELATIVE_GRADIENT * float(np.percentile(gradient, 99))
    strong = gradient >= max(SEAM_MIN_GRADIENT, floor)
    band = cv2.dilate(strong.astype(np.uint8), np.ones((2 * tilt + 1, 1), np.uint8))
    # The outer tenth on each side is the region's own edge, where what lies beside it shows.
    inner = slice(round(0.1 * rgb.shape[1]), round(0.9 * rgb.shape[1]))
    return band[:, inner].mean(axis=1)


def _reconstruct(marker: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Morphological reconstruction by dilation of `marker` under `mask` (marker <= mask)."""
    kernel = np.ones((3, 3), np.uint8)
    while True:
        dilated = np.minimum(cv2.dilate(marker, kernel), mask)
        if np.array_equal(dilated, marker):
            return dilated
        marker = dilated


def _flood(relief: np.ndarray, seeds: np.ndarray, own: np.ndarray) -> np.ndarray:
    """The watershed of `relief` within `own`, flooded from `seeds` (labels > 0), highest
    relief first: in 1-pixel bands from the top down, each labelled region grows into the
    band's pixels next to it until none is left (where two meet, the larger label wins)."""
    labels = seeds.astype(np.float32)
    kernel = np.ones((3, 3), np.uint8)
    for level in np.arange(np.floor(relief.max()), -1.0, -1.0):
        allowed = own & (relief >= level) & (labels == 0)
        while allowed.any():
            dilated = cv2.dilate(labels, kernel)
            new = allowed & (dilated > 0)
            if not new.any():
                break
            labels[new] = dilated[new]
            allowed &= ~new
    return labels.astype(np.int32)


def _label_boxes(labels: np.ndarray) -> list[Box | None]:
    boxes: list[Box | None] = [None]
    for found in ndimage.find_objects(labels):
        if found is None:
            boxes.append(None)
            continue
        rows, cols = found
        boxes.append((cols.start, rows.start, cols.stop, rows.stop))
    return boxes


def _sampled(values: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """`values` sampled bilinearly at every (row, column) of the two coordinate lists, the
    edge values carried on past the border. cv2.remap does it, in blocks: it refuses an
    output side of 32767 px or more, which a region of a 40000x625 frame (25 MP, as the
    service takes) reaches."""
    sampled = np.empty((len(rows), len(columns)), np.float32)
    for top in range(0, len(rows), REMAP_BLOCK):
        for left in range(0, len(columns), REMAP_BLOCK):
            block_rows = rows[top : top + REMAP_BLOCK]
            block_columns = columns[left : left + REMAP_BLOCK]
            shape = (len(block_rows), len(block_columns))
            sampled[top : top + shape[0], left : left + shape[1]] = cv2.remap(
                values,
                np.ascontiguousarray(np.broadcast_to(block_columns[None, :], shape)),
                np.ascontiguousarray(np.broadcast_to(block_rows[:, None], shape)),
                cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REPLICATE,
            )
    return sampled


def _original_mask(
    values: np.ndarray,
    own: np.ndarray,
    box: Box,
    geometry: FrameGeometry,
    config: DetectConfig,
) -> tuple[np.ndarray, Box]:
    """A component's mask at the original resolution (box-shaped) and its box there.

    The probabilities of the component alone (`values`: zero off it) are sampled bilinearly at
    the centre of each original pixel and thresholded, which keeps the edge smooth; a
    component too thin to survive that keeps its nearest-neighbour shape. Past the component's
    box the edge values carry on (replicated border), so the mask reaches the outer edge of its
    outermost working pixels; zero there gives tighter masks but found fewer signs
    (BENCHMARKS.md section 6, "A region's edge at full resolution")."""
    (height, width), (sy, sx) = geometry.size, geometry.scale
    x1, y1, x2, y2 = box
    ox1, oy1 = max(0, math.floor(x1 / sx)), max(0, math.floor(y1 / sy))
    ox2, oy2 = min(width, math.ceil(x2 / sx)), min(height, math.ceil(y2 / sy))
    # Working coordinates of the original pixels' centres, relative to the component's box.
    columns = ((np.arange(ox1, ox2) + 0.5) * sx - 0.5 - x1).astype(np.float32)
    rows = ((np.arange(oy1, oy2) + 0.5) * sy - 0.5 - y1).astype(np.float32)
    mask = _sampled(values.astype(np.float32), rows, columns) >= config.threshold
    if not mask.any():
        nearest_rows = np.clip(np.round(rows).astype(int), 0, own.shape[0] - 1)
        nearest_columns = np.clip(np.round(columns).astype(int), 0, own.shape[1] - 1)
        mask = own[np.ix_(nearest_rows, nearest_columns)]
    if not mask.any():
        mask = np.ones_like(mask)
    ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    mask = mask[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
    return mask, (ox1 + int(xs[0]), oy1 + int(ys[0]), ox1 + int(xs[-1]) + 1, oy1 + int(ys[-1]) + 1)


# --- reading the signs -----------------------------------------------------------------------


def crop_inputs(
    rgb: np.ndarray,
    instances: Sequence[Instance],
    preprocess: Callable[[np.ndarray], torch.Tensor],
    margin: float,
) -> list[tuple[torch.Tensor, tuple[int, int]]]:
    """Each instance cut from the original frame with its margin and preprocessed for the
    crop classifier: (input, (h, w) of the crop)."""
    height, width = rgb.shape[:2]
    inputs = []
    for instance in instances:
        crop = cut(rgb, grown(instance.box, height, width, margin))
        inputs.append((preprocess(crop), crop.shape[:2]))
    return inputs


@dataclass
class Detection:
    """A sign found and read: `kind` "sign" (a known class) or "unknown_sign" (class_id
    None); `confidence` is the classifier's, `score` the segmentation's (mean probability)."""

    box: Box
    mask: np.ndarray  # bool, box-shaped
    score: float
    class_id: int | None
    class_name: str
    kind: str
    confidence: float
    top_k: list = field(default_factory=list)


def read_signs(instances: Sequence[Instance], predictions: Sequence[Prediction]) -> list[Detection]:
    """Instances with their crops' answers; an instance read as "no sign" is dropped."""
    if len(instances) != len(predictions):
        raise ValueError(f"{len(predictions)} answers for {len(instances)} instances")
    return [
        Detection(
            box=instance.box,
            mask=instance.mask,
            score=instance.score,
            class_id=prediction.class_id,
            class_name=prediction.class_name,
            kind=prediction.kind,
            confidence=prediction.confidence,
            top_k=prediction.top_k,
        )
        for instance, prediction in zip(instances, predictions, strict=True)
        if prediction.kind != NO_SIGN
    ]


class Detector:
    """The whole chain in one thread, for the CLI, evaluation and benches."""

    def __init__(self, segmenter: SceneSegmenter, predictor: Predictor, config: DetectConfig):
        self.segmenter = segmenter
        self.predictor = predictor
        self.config = config

    @classmethod
    def load(
        cls,
        scene_model: Path | str,
        model: Path | str,
        device: str | torch.device = "auto",
        config: DetectConfig | None = None,
        mirror: bool | None = None,
        bf16: bool | None = None,
    ) -> Detector:
        segmenter = SceneSegmenter.load(scene_model, device, mirror=mirror, bf16=bf16)
        return cls(segmenter, Predictor.load(model, segmenter.device), config or DetectConfig())

    def instances(self, rgb: np.ndarray) -> list[Instance]:
        frame = prepare_frame(rgb, self.config)
        probability = stitch(self.segmenter.probabilities(frame.tensor), frame)
        return find_instances(probability, frame.geometry, self.config, rgb)

    def read(self, rgb: np.ndarray, instances: Sequence[Instance], top_k: int = 1):
        if not instances:
            return []
        crops = crop_inputs(rgb, instances, self.predictor.preprocess, self.config.margin)
        batch = torch.stack([tensor for tensor, _ in crops])
        predictions = self.predictor.predict_batch(batch, [size for _, size in crops], top_k)
        return read_signs(instances, predictions)

    def detect(self, rgb: np.ndarray, top_k: int = 1) -> list[Detection]:
        """Every sign of an HxWx3 uint8 RGB frame."""
        return self.read(rgb, self.instances(rgb), top_k)


# --- masks in the frame ----------------------------------------------------------------------


def frame_mask(mask: np.ndarray, box: Box, height: int, width: int) -> np.ndarray:
    """A box-shaped mask placed in an HxW frame."""
    full = np.zeros((height, width), bool)
    x1, y1, x2, y2 = box
    full[y1:y2, x1:x2] = mask
    return full


def box_mask_rle(mask: np.ndarray, box: Box, height: int, width: int) -> list[int]:
    """`mask_to_rle(frame_mask(...))` (COCO RLE counts of the whole frame, column-major,
    starting with background) at the cost of the box's columns only."""
    x1, y1, x2, y2 = box
    strip = np.zeros((height, x2 - x1), bool)
    strip[y1:y2] = mask
    counts = mask_to_rle(strip)
    counts[0] += x1 * height
    after = (width - x2) * height
    if after:
        if len(counts) % 2:  # the last run is background
            counts[-1] += after
        else:
            counts.append(after)
    return counts
