"""Square tiles of whole road frames, with the sign pixels marked: what a scene model (whose
segmentation head finds signs in a frame) trains on.

A frame of `greedysign data scenes` is 1280x720 with signs of 12-120 px (a few up to 320 px);
a scene model reads a whole frame shrunk to about 960 px wide (model/detect.py), so tiles are
cut at a random scale around that (`scale`: frame pixels per original pixel), `tile` x `tile`
pixels after scaling, most of them around a sign (the rest anywhere: the model must also
learn the street). An item has the shape of data.dataset.SignDataset's: (image float32 [3, T, T]
normalised, mask float32 [C, T, T]: channel 0 the union of the tile's sign masks and, with
`core`, channel 1 the union of their cores (`core_mask`), label
IGNORE_LABEL (a tile has no one class), box: the bounding box of the marked pixels, or
(0, 0, 0, 0) for a tile with none, mask_known True).

Frames are decoded when a tile is cut (JPEG draft mode decodes at the scale needed), so a
set of any size costs no memory. Tiles depend on (seed, epoch, index) alone, like
SignDataset's augmentation; an evaluation set (`train=False`) cuts the same tiles every time
and leaves the pixels as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from torch.utils.data import Dataset

from data.frames import FrameRecord, instance_mask, mask_box
from data.images import regular_file, shown
from data.records import DataError
from data.transforms import IMAGENET_MEAN, IMAGENET_STD

IGNORE_LABEL = -100  # torch's cross-entropy ignore_index: a tile scores no class
SIGN_CENTRED = 0.8  # share of tiles cut around a sign
SEAM = 2  # px of background left between two signs that touch
CORE_DEPTH = 0.4  # a sign's core: its pixels at least this share of its inradius deep


class SceneTiles(Dataset):
    def __init__(
        self,
        frames: Sequence[FrameRecord],
        tile: int,
        *,
        train: bool,
        seed: int = 0,
        scale: tuple[float, float] = (0.45, 1.0),
        tiles_per_frame: int = 4,
        core: bool = False,
    ):
        if not frames:
            raise ValueError("no frames to cut tiles from")
        self.frames = list(frames)
        self.tile = tile
        self.train = train
        self.seed = seed
        self.scale = scale
        self.tiles_per_frame = tiles_per_frame
        self.core = core
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.frames) * self.tiles_per_frame

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int):
        """Tile i; an index past the end (i + r * len, model.train.EpochShuffle's r-th draw
        of tile i in a weighted epoch) is another tile of the same frame."""
        epoch = self.epoch if self.train else 0
        rng = np.random.default_rng([self.seed, epoch, i, int(self.train)])
        frame = self.frames[i % len(self) // self.tiles_per_frame]
        scale = float(np.exp(rng.uniform(*np.log(self.scale))))
        window = self.tile / scale  # the tile's side in original pixels
        x0, y0 = _window_origin(frame, window, rng)
        image = _cut(_decode(frame, scale), x0 * scale, y0 * scale, self.tile)
        owner = sign_owners(frame)
        targets = [_sign_mask(owner), *([core_mask(owner)] if self.core else [])]
        mask = np.stack([_cut(target, x0, y0, window, self.tile) for target in targets])
        if self.train:
            image = _photometric(image, rng)
            if rng.random() < 0.5:  # a scene mirrored is still a scene; the signs are not read
                image, mask = image[:, ::-1], mask[:, :, ::-1]
        tensor = (image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        return (
            torch.from_numpy(np.ascontiguousarray(tensor.transpose(2, 0, 1), np.float32)),
            torch.from_numpy(np.ascontiguousarray(mask, np.float32)),
            IGNORE_LABEL,
            _bounding_box(mask[0]),
            True,
        )


def _bounding_box(mask: np.ndarray) -> torch.Tensor:
    box = mask_box(mask)
    return torch.zeros(4) if box is None else torch.tensor(box, dtype=torch.float32)


def _window_origin(frame: FrameRecord, window: float, rng: np.random.Generator):
    """Top-left corner (original pixels) of a window around a random sign, or anywhere."""
    signs = [s for s in frame.instances if not s.ignore]
    if signs and rng.random() < SIGN_CENTRED:
        x1, y1, x2, y2 = signs[rng.integers(len(signs))].box
        cx = rng.uniform(x1, x2) + rng.normal(0, window / 6)
        cy = rng.uniform(y1, y2) + rng.normal(0, window / 6)
    else:
        cx, cy = rng.uniform(0, frame.width), rng.uniform(0, frame.height)
    x0 = np.clip(cx - window / 2, 0, max(0.0, frame.width - window))
    y0 = np.clip(cy - window / 2, 0, max(0.0, frame.height - window))
    return float(x0), float(y0)


def _decode(frame: FrameRecord, scale: float) -> np.ndarray:
    """The frame as RGB at `scale` of its size (JPEG decodes at up to 1/8 scale directly), as
    stored: EXIF orientation is not applied, since the annotations describe the stored pixels
    (data.images.read_rgb). A file that is not a regular one (a FIFO would block for ever) or
    not an image is a DataError naming it."""
    size = (max(1, round(frame.width * scale)), max(1, round(frame.height * scale)))
    try:
        with regular_file(frame.image_path) as file, Image.open(file) as image:
            image.draft("RGB", size)
            rgb = np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(shown(frame.image_path), None, f"frame unreadable ({error})") from None
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def sign_owners(frame: FrameRecord) -> np.ndarray:
    """float32 [H, W]: 0 where no sign is, i + 1 where sign i is (a later sign in front)."""
    owner = np.zeros((frame.height, frame.width), np.float32)
    for i, sign in enumerate(frame.instances):
        owner[instance_mask(sign, frame.height, frame.width)] = i + 1
    return owner


def _sign_mask(owner: np.ndarray) -> np.ndarray:
    """The sign pixels of an owner map (`sign_owners`), with the pixels where two signs touch
    left out: a model that learns to leave a seam between stacked signs gives them apart as
    instances (measured on DFG's true masks: 27 of 88 signs touch another, and such seams
    lift the recall of their connected components from 0.68 to 1.00)."""
    kernel = np.ones((SEAM + 1, SEAM + 1), np.uint8)
    larger_beside = cv2.dilate(owner, kernel) > owner
    background_as_far = np.where(owner > 0, owner, owner.max() + 1)
    smaller_beside = cv2.erode(background_as_far, kernel) < owner
    return ((owner > 0) & ~larger_beside & ~smaller_beside).astype(np.float32)


def core_mask(owner: np.ndarray) -> np.ndarray:
    """The sign cores of an owner map (`sign_owners`): each sign's pixels at least CORE_DEPTH
    of its inradius from its own edge (and 1 px). A seam of 2 px between signs that touch is
    hard for a model to draw (on the real DFG frames the scene model trained on them merged 27
    of their 65 signs of 32 px and more with a neighbour); the gap between two cores is
    CORE_DEPTH of both inradii wide."""
    labels = owner.astype(np.int32)
    core = np.zeros(owner.shape, np.float32)
    for i, found in enumerate(ndimage.find_objects(labels)):
        if found is None:  # a sign wholly behind others
            continue
        # One pixel around its box, so that the box's edge is an edge.
        own = np.pad(labels[found] == i + 1, 1).astype(np.uint8)
        depth = cv2.distanceTransform(own, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
        core[found][depth >= max(1.0, CORE_DEPTH * float(depth.max()))] = 1.0
    return core


def _cut(picture: np.ndarray, x0: float, y0: float, side: float, out: int | None = None):
    """The side x side window at (x0, y0) of `picture`, padded with zeros where it leaves the
    picture, resized to out x out (bilinear). A mask is area-averaged first where it shrinks,
    and becomes 0/1 at its middle; an image comes at its final scale (`_decode`: side == out)
    and is only shifted."""
    out = out or round(side)
    affine = np.array([[out / side, 0, -x0 * out / side], [0, out / side, -y0 * out / side]])
    is_mask = picture.ndim == 2
    if is_mask and side > out:
        # Area-average the mask before thresholding, so thin signs do not vanish.
        picture = cv2.resize(
            picture, None, fx=out / side, fy=out / side, interpolation=cv2.INTER_AREA
        )
        affine = np.array([[1.0, 0, -x0 * out / side], [0, 1.0, -y0 * out / side]])
    cut = cv2.warpAffine(
        picture, affine, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    return (cut >= 0.5).astype(np.float32) if is_mask else cut


def _photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure, contrast and a little blur or noise: the camera, once more."""
    out = image.astype(np.float32)
    out = (out - out.mean()) * rng.uniform(0.75, 1.25) + out.mean() * rng.uniform(0.75, 1.25)
    if rng.random() < 0.2:
        out = cv2.GaussianBlur(out, (3, 3), 0)
    if rng.random() < 0.2:
        out += rng.normal(0, rng.uniform(2, 8), out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)
