"""Find, then read: a photo of a sign is read in two passes.

Pass 1 runs the network on the whole picture: its mask says where the sign is. Pass 2 runs it
again on the sign cut out of the original picture with a margin of `READ_MARGIN` of its size
on each side, and reads the class there. The network was trained on both framings (tight
TT100K crops and photos with context, data.transforms' reframing), but the tight one is
where a 64-px input spends its pixels on the sign: on held-out TSRD photos it read 86.5 %
against 77.7 % in one pass (runs/size/sgd-64, BENCHMARKS.md). The answer keeps pass 1's mask
and box (the whole picture's) and takes its class, confidence and top-k from pass 2.
Nothing is cut when pass 1 finds no sign pixel or answers "no sign", or when the cut would be
the whole picture anyway.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np

from data.records import Box

if TYPE_CHECKING:
    from model.inference import Prediction

READ_MARGIN = 0.15


def grown(box: Box, height: int, width: int, margin: float = READ_MARGIN) -> Box:
    """`box` grown by `margin` of its width (height) on each side, within the picture: where a
    sign is read (here, and for each sign of a frame in model/detect.py)."""
    x1, y1, x2, y2 = box
    dx, dy = margin * (x2 - x1), margin * (y2 - y1)
    return (
        max(0, math.floor(x1 - dx)),
        max(0, math.floor(y1 - dy)),
        min(width, math.ceil(x2 + dx)),
        min(height, math.ceil(y2 + dy)),
    )


def reading_window(
    box: Box | None, height: int, width: int, margin: float = READ_MARGIN
) -> Box | None:
    """Where pass 2 reads: `box` grown by `margin`, within the picture; None when there is
    nothing to cut (no box, or the window is the whole picture)."""
    if box is None:
        return None
    window = grown(box, height, width, margin)
    if window == (0, 0, width, height) or window[2] <= window[0] or window[3] <= window[1]:
        return None
    return window


def cut(rgb: np.ndarray, window: Box) -> np.ndarray:
    x1, y1, x2, y2 = window
    return np.ascontiguousarray(rgb[y1:y2, x1:x2])


def scaled(box: Box, from_size: tuple[int, int], to_size: tuple[int, int]) -> Box:
    """`box` in a picture of (H, W) `from_size` moved to one of `to_size` (the same picture at
    another resolution), at least one pixel and inside it (a box to the picture's edge would
    else end a pixel past it where the scale rounds up: 44 * 25 / 44 = 25.000000000000004)."""
    sy, sx = to_size[0] / from_size[0], to_size[1] / from_size[1]
    x1, y1, x2, y2 = box
    return (
        int(np.floor(x1 * sx)),
        int(np.floor(y1 * sy)),
        min(to_size[1], max(int(np.floor(x1 * sx)) + 1, int(np.ceil(x2 * sx)))),
        min(to_size[0], max(int(np.floor(y1 * sy)) + 1, int(np.ceil(y2 * sy)))),
    )


def worth_reading(found: Prediction) -> bool:
    return found.box is not None and found.kind != "no_sign"


def combine(found: Prediction, read: Prediction) -> Prediction:
    """Pass 1's mask and box with pass 2's answer."""
    return dataclasses.replace(
        found,
        kind=read.kind,
        class_id=read.class_id,
        class_name=read.class_name,
        confidence=read.confidence,
        top_k=read.top_k,
    )
