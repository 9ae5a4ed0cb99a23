"""Albumentations pipelines: the network sees a square S x S image, normalised with ImageNet
statistics. Image, mask and box move together through every geometric step.

The eval pipeline is what inference uses too (`preprocess`), so training-time evaluation
and the service see identical pixels.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Border fill for geometric steps: the mean colour, which normalises to about zero.
_MEAN_RGB = tuple(round(255 * channel) for channel in IMAGENET_MEAN)


def _box_params() -> A.BboxParams:
    """Boxes as (x1, y1, x2, y2) pixels. A box pushed partly out of frame is clipped to it and
    kept however small; only a box wholly outside (clipping squashes it to a line) is
    filtered out, and SignDataset then draws the augmentation again.

    Boxes are clipped once, after the last step, rather than after each one: a warp then
    moves the whole box, not a clipped remnant, and the per-step check cost a third of the
    augmentation time.
    """
    return A.BboxParams(
        format="pascal_voc",
        clip=True,
        check_each_transform=False,
        min_area=0.0,
        min_visibility=0.0,
        # Far below any real box (one source pixel at S >= 16 is wider), above a squashed one.
        min_width=1e-3,
        min_height=1e-3,
    )


class _Occlusion(A.CoarseDropout):
    """CoarseDropout that leaves the box alone. The stock transform deletes a box its holes
    cover, but an occluder hides part of a sign without moving it; for the same reason the
    mask is not cut either (fill_mask stays None)."""

    def apply_to_bboxes(self, bboxes: np.ndarray, *args: Any, **params: Any) -> np.ndarray:
        return bboxes


class _Reframe(A.BBoxSafeRandomCrop):
    """A random crop that keeps the whole sign box: from the photo's own framing down to the
    box itself. TSRD photos show the sign at 40-90 % of the picture, TT100K crops are tight
    around it, and a user may send either: both framings are seen in training. An image
    without a box (a tight crop, a patch with no sign) is left as it is; the stock transform
    would crop it anywhere and could cut the sign off."""

    def _get_coords_no_bbox(self, image_shape: tuple[int, int]) -> tuple[int, int, int, int]:
        height, width = image_shape
        return 0, 0, width, height


def _to_network_input(image_size: int) -> list[A.BasicTransform]:
    """The last steps of both pipelines: square resize, ImageNet normalisation, CHW tensor."""
    return [
        # INTER_AREA when shrinking (no aliasing on the 131 px median TSRD crop), linear when
        # enlarging the smallest crops.
        A.Resize(image_size, image_size, area_for_downscale="image"),
        A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD, max_pixel_value=255.0),
        ToTensorV2(),
    ]


def train_transform(image_size: int) -> A.Compose:
    """Mild geometry and photometric noise. No horizontal flip: it would turn a "turn left"
    sign into a "turn right" one."""
    return A.Compose(
        [
            _Reframe(erosion_rate=0.0, p=0.5),
            # One warp per sample: albumentations carries a box through each warp as an
            # axis-aligned box, so a second warp bends the first one's corners and loosens it
            # (by up to 9 px on a 120 px crop, measured); after one warp the box stays within
            # about a pixel of the warped mask's bounding box.
            A.OneOf(
                [
                    A.Affine(
                        scale=(0.85, 1.15),
                        translate_percent=(-0.1, 0.1),
                        rotate=(-15, 15),
                        border_mode=cv2.BORDER_CONSTANT,
                        fill=_MEAN_RGB,
                        fill_mask=0,
                        p=0.75,
                    ),
                    A.Perspective(
                        scale=(0.02, 0.06),
                        border_mode=cv2.BORDER_CONSTANT,
                        fill=_MEAN_RGB,
                        fill_mask=0,
                        p=0.25,
                    ),
                ],
                p=0.85,
            ),
            # Hue stays within about +-11 degrees: colour tells the sign families apart.
            A.ColorJitter(
                brightness=(0.7, 1.3),
                contrast=(0.7, 1.3),
                saturation=(0.7, 1.3),
                hue=(-0.03, 0.03),
                p=0.8,
            ),
            A.OneOf(
                [A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 5))],
                p=0.25,
            ),
            A.GaussNoise(std_range=(0.02, 0.06), p=0.25),
            _Occlusion(
                num_holes_range=(1, 2),
                hole_height_range=(0.1, 0.25),
                hole_width_range=(0.1, 0.25),
                fill="random_uniform",
                p=0.2,
            ),
            *_to_network_input(image_size),
        ],
        bbox_params=_box_params(),
    )


def eval_transform(image_size: int) -> A.Compose:
    """Resize the whole image to S x S and normalise; TSRD crops are near-square and the sign
    fills 40-90 % of them, so nothing is cropped."""
    return A.Compose(_to_network_input(image_size), bbox_params=_box_params())


def preprocess(image_rgb: np.ndarray, image_size: int) -> torch.Tensor:
    """One HxWx3 uint8 RGB image as the network's float32 [3, S, S] input: exactly the eval
    pipeline. A fresh pipeline per call (~0.4 ms) because albumentations keeps per-call
    state on its transforms, so one shared instance is unsafe across the service's threads."""
    return eval_transform(image_size)(image=image_rgb)["image"]
