"""Inference with an exported model: the Predictor used by the service, `greedysign predict`
and the benches, plus the two mask encodings the API returns (PNG and COCO RLE).

One code path for every device: on CUDA the model runs under fp16 autocast in channels_last
with cudnn.benchmark; on CPU the same calls run in float32 under a nullcontext.
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from data.classes import class_names, label_names
from data.transforms import eval_transform
from model.checkpoint import ModelInfo, load_model, require_sign_model
from model.device import autocast_for, resolve_device
from model.metrics import mask_boxes
from model.network import SignNet
from model.open_set import answer
from model.reading import combine, cut, reading_window, worth_reading


@dataclass(frozen=True)
class ClassScore:
    class_id: int
    class_name: str
    confidence: float


# What an answer is: a sign of a known class, a sign of none of them, or no sign at all.
SIGN, UNKNOWN_SIGN, NO_SIGN = "sign", "unknown_sign", "no_sign"


@dataclass
class Prediction:
    """One image's result.

    `kind` is "sign" (a known class: `class_id`, `class_name`), "unknown_sign" (a sign of
    none of the model's classes, or one the model is too unsure of: model/open_set.py) or
    "no_sign"; for the last two `class_id` is None and `class_name` says which. `confidence`
    is the probability of the answer. `top_k` lists the most probable known classes, whatever
    the answer. `box` is (x1, y1, x2, y2) in original pixels with exclusive x2/y2 (the
    bounding box of `mask`), None when the mask is empty; `mask` is HxW bool at the original
    size."""

    class_id: int | None
    class_name: str
    confidence: float
    top_k: list[ClassScore]
    box: tuple[int, int, int, int] | None
    mask: np.ndarray
    kind: str = SIGN


class Predictor:
    """Owns an inference SignNet on one device. `preprocess` is thread-safe; `predict_batch`
    is meant to be called from one thread at a time (the service's inference thread)."""

    def __init__(self, model: SignNet, info: ModelInfo, device: torch.device, fp16: bool):
        self.model = model
        self.info = info
        self.device = device
        self.fp16 = fp16
        self.num_known = len(class_names(info.dataset))
        # The answers' names: the classes, "unknown sign", "no sign" (also for a model
        # trained without the last two outputs, which still answers "unknown sign" by
        # threshold).
        self.label_names = label_names(info.dataset)
        self.threshold = float(info.open_set.get("threshold", 0.0))
        self._pipelines = threading.local()

    @classmethod
    def load(
        cls, path: Path | str, device: str | torch.device = "auto", fp16: bool | None = None
    ) -> Predictor:
        """Load a model file onto `device`. `fp16` defaults to True on CUDA (autocast) and is
        always False on the CPU; pass fp16=False on CUDA for a float32 reference."""
        device = resolve_device(device)
        on_cuda = device.type == "cuda"
        model, info = load_model(path, device)
        require_sign_model(info, path)
        if on_cuda:
            # Input sizes are fixed (S x S, a handful of batch sizes), which is when cudnn's
            # per-shape algorithm search pays off.
            torch.backends.cudnn.benchmark = True
            model = model.to(memory_format=torch.channels_last)
        return cls(model, info, device, fp16=on_cuda if fp16 is None else fp16 and on_cuda)

    @property
    def image_size(self) -> int:
        return self.info.config.image_size

    @property
    def class_names(self) -> list[str]:
        """The model's known classes (without the open-set answers)."""
        return self.info.class_names[: self.num_known]

    def preprocess(self, image_rgb: np.ndarray) -> torch.Tensor:
        """HxWx3 uint8 RGB -> float32 [3, S, S] on the CPU: the training eval pipeline, one
        instance per thread. Albumentations keeps per-call state on its transforms, so
        threads must not share one; building one per call (data.transforms.preprocess)
        costs more than running it (0.55 ms against 0.15 ms on a 131 px TSRD crop)."""
        pipeline = getattr(self._pipelines, "eval", None)
        if pipeline is None:
            pipeline = self._pipelines.eval = eval_transform(self.image_size)
        return pipeline(image=image_rgb)["image"]

    def predict_batch(
        self,
        batch: torch.Tensor,
        original_sizes: Sequence[tuple[int, int]],
        top_k: int = 5,
    ) -> list[Prediction]:
        """Predictions for a preprocessed batch [N, 3, S, S]; `original_sizes` are the (H, W)
        of the images before preprocessing, where masks and boxes are returned."""
        if batch.ndim != 4 or batch.shape[0] != len(original_sizes):
            raise ValueError(
                f"batch of shape {tuple(batch.shape)} does not match "
                f"{len(original_sizes)} original sizes"
            )
        with torch.inference_mode(), self._autocast():
            inputs = batch.to(self.device, non_blocking=True)
            if self.device.type == "cuda":
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            class_logits, mask_logits = self.model(inputs)
            answers = answer(
                class_logits.float().softmax(dim=1), self.num_known, self.threshold, top_k
            )
            labels, confidences = answers.label.tolist(), answers.confidence.tolist()
            known_ids, known_probabilities = (
                answers.known_ids.tolist(),
                answers.known_probabilities.tolist(),
            )
            predictions = []
            for index, size in enumerate(original_sizes):
                mask = _mask_at(mask_logits[index : index + 1].float(), size)
                scores = [
                    ClassScore(c, self.class_names[c], p)
                    for c, p in zip(known_ids[index], known_probabilities[index], strict=True)
                ]
                label = labels[index]
                kind = (
                    SIGN
                    if label < self.num_known
                    else (UNKNOWN_SIGN, NO_SIGN)[label - self.num_known]
                )
                predictions.append(
                    Prediction(
                        class_id=label if kind == SIGN else None,
                        class_name=self.label_names[label],
                        confidence=confidences[index],
                        top_k=scores,
                        box=_box_of(mask),
                        mask=mask[0].cpu().numpy(),
                        kind=kind,
                    )
                )
        return predictions

    def predict_images(self, images_rgb: Sequence[np.ndarray], top_k: int = 5) -> list[Prediction]:
        """One pass: preprocess and predict HxWx3 uint8 RGB images as one batch."""
        batch = torch.stack([self.preprocess(image) for image in images_rgb])
        return self.predict_batch(batch, [image.shape[:2] for image in images_rgb], top_k)

    def read_images(self, images_rgb: Sequence[np.ndarray], top_k: int = 5) -> list[Prediction]:
        """Find, then read (model/reading.py): pass 1 on the whole pictures finds each sign,
        pass 2 reads it cut out of the original with a margin."""
        found = self.predict_images(images_rgb, top_k)
        windows = [
            reading_window(p.box, *image.shape[:2]) if worth_reading(p) else None
            for p, image in zip(found, images_rgb, strict=True)
        ]
        to_read = [i for i, window in enumerate(windows) if window is not None]
        if not to_read:
            return found
        read = self.predict_images([cut(images_rgb[i], windows[i]) for i in to_read], top_k)
        for i, second in zip(to_read, read, strict=True):
            found[i] = combine(found[i], second)
        return found

    def warmup(self, max_batch_size: int = 1) -> None:
        """Run the model once per batch size the service will send, so the first requests do
        not pay for lazy initialisation (and, on CUDA, for cudnn's algorithm search, which
        runs once per input shape: every size 1..max there; 1 and max suffice on the CPU)."""
        if self.device.type == "cuda":
            sizes = range(1, max_batch_size + 1)
        else:
            sizes = sorted({1, max_batch_size})
        s = self.image_size
        for n in sizes:
            self.predict_batch(torch.zeros(n, 3, s, s), [(s, s)] * n)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _autocast(self) -> AbstractContextManager:
        return autocast_for(self.device) if self.fp16 else nullcontext()


def _mask_at(mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[1, 1, h, w] logits -> [1, H, W] bool mask at the original size: upsample the logits
    (bilinear) and then threshold at 0, which keeps the edge smooth; upsampling a thresholded
    mask would give a blocky one."""
    upsampled = F.interpolate(mask_logits, size=tuple(size), mode="bilinear", align_corners=False)
    return upsampled[:, 0] > 0


def _box_of(mask: torch.Tensor) -> tuple[int, int, int, int] | None:
    if not bool(mask.any()):
        return None
    x1, y1, x2, y2 = (int(v) for v in mask_boxes(mask)[0].tolist())
    return x1, y1, x2, y2


# --- mask encodings -------------------------------------------------------------------------


def mask_to_png(mask: np.ndarray) -> bytes:
    """HxW bool mask as a 1-bit PNG (sign = white) at the same size."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(mask, dtype=bool)).save(buffer, format="PNG")
    return buffer.getvalue()


def mask_to_png_base64(mask: np.ndarray) -> str:
    return base64.b64encode(mask_to_png(mask)).decode("ascii")


def mask_to_rle(mask: np.ndarray) -> list[int]:
    """COCO RLE counts (the uncompressed list form) of an HxW bool mask: run lengths over the
    pixels in column-major order, alternating background and sign, starting with background
    (so the first count is 0 when the top-left pixel is sign)."""
    pixels = np.asarray(mask, dtype=bool).ravel(order="F")
    if pixels.size == 0:
        return []
    changes = np.flatnonzero(pixels[1:] != pixels[:-1]) + 1
    runs = np.diff(np.concatenate(([0], changes, [pixels.size])))
    counts = runs.tolist()
    return [0, *counts] if pixels[0] else counts
