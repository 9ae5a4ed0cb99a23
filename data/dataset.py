"""The torch Dataset of sign records: (image, mask, class id, box) ready for the network."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from data.images import ground_truth_mask, read_rgb
from data.records import DataError, SignRecord
from data.transforms import eval_transform, train_transform

# A train sample is cached with its longer side at most this many times S: enough detail for
# augmentation to shrink it back to S, small enough that augmenting it is cheap.
_TRAIN_CACHE_SCALE = 2
# Augmentation draws that may push the whole sign out of frame before giving up on them.
_AUGMENT_TRIES = 10
# decode="auto" reads images lazily above this many records.
LAZY_ABOVE = 20_000
DECODE_MODES = ("auto", "eager", "lazy")


@dataclass(frozen=True, slots=True)
class _CachedSample:
    image: np.ndarray  # HxWx3 uint8 RGB
    mask: np.ndarray  # HxW uint8 {0, 1}
    box: np.ndarray  # float32 [1, 4]: (x1, y1, x2, y2) in this image's pixels; [0, 4]: none


class SignDataset(Dataset):
    """Eager decoding (`decode="eager"`, and "auto" up to LAZY_ABOVE records): every image is
    decoded once, in the constructor, and kept in memory (the real TSRD sample is 1191 crops
    of about 131x122 px); a bad file fails here, naming its record. Lazy decoding ("lazy",
    and "auto" above LAZY_ABOVE records): an image is read from disk when it is drawn, and
    the most recently drawn ones are kept up to `cache_mb` of pixels (in each DataLoader
    worker); a bad file fails when it is drawn, naming its record. Both give the same items.

    An item is (image float32 [3, S, S] normalised, mask float32 [1, S, S] in {0, 1},
    label, box float32 [4] (x1, y1, x2, y2) in the S x S output's pixels, mask_known bool).
    A record with a box keeps exactly one: augmentation clips a box that leaves the frame,
    and a draw that loses the sign entirely is drawn again. A record without one (a TT100K
    crop, a patch with no sign) gives the box (0, 0, 0, 0); its mask is empty, and counts
    (`mask_known`) only where the image shows no sign.

    With a `seed`, item i of epoch e (`set_epoch`) is augmented from the seed (seed, e, i)
    alone: the same pixels in any process and worker, in any order, before or after a
    resumed run. An index i beyond the records asks for record i mod n again, with its own
    augmentation: a sampler that draws a record twice in an epoch gets two views of it.
    Without one, each DataLoader worker reseeds from its torch worker seed,
    since forked workers would otherwise all replay one copied random state.
    """

    def __init__(
        self,
        records: Sequence[SignRecord],
        image_size: int,
        *,
        train: bool,
        seed: int | None = None,
        decode: str = "auto",
        cache_mb: float = 256,
    ):
        if decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {DECODE_MODES}, not {decode!r}")
        self.records = list(records)
        self.image_size = image_size
        self.train = train
        self.transform = train_transform(image_size) if train else eval_transform(image_size)
        self.transform.set_random_seed(seed)
        self.seed = seed
        self.epoch = 0
        # Eval samples stay at full size so they equal preprocess() of the original exactly.
        self._longest_side = _TRAIN_CACHE_SCALE * image_size if train else None
        self.lazy = decode == "lazy" or (decode == "auto" and len(self.records) > LAZY_ABOVE)
        self._samples: list[_CachedSample] = []
        self._cache = _DecodeCache(int(cache_mb * 2**20))
        if not self.lazy:
            self._samples = [_decode(record, self._longest_side) for record in self.records]
        self._worker_seed: int | None = None

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor, bool]:
        if self.seed is not None and self.train:
            self.transform.set_random_seed(_item_seed(self.seed, self.epoch, i))
        else:
            self._seed_for_worker()
        sample, record = self._sample(i % len(self)), self.records[i % len(self)]
        out = _transformed(self.transform, sample)
        if self.train and len(out["bboxes"]) < len(sample.box):
            out = self._redraw(sample)
        mask = out["mask"].to(torch.float32).unsqueeze(0)
        box = torch.zeros(4)
        if len(out["bboxes"]):
            box = torch.as_tensor(out["bboxes"][0], dtype=torch.float32)
        return out["image"], mask, record.class_id, box, record.mask_known

    def picture(self, i: int) -> np.ndarray:
        """Item i's picture as decoded (HxWx3 uint8 RGB; at full size for evaluation)."""
        return self._sample(i % len(self)).image

    def _sample(self, i: int) -> _CachedSample:
        if not self.lazy:
            return self._samples[i]
        return self._cache.get(i, lambda: _decode(self.records[i], self._longest_side))

    def _seed_for_worker(self) -> None:
        worker = get_worker_info()
        if worker is not None and worker.seed != self._worker_seed:
            self._worker_seed = worker.seed
            self.transform.set_random_seed(worker.seed % 2**32)

    def _redraw(self, sample: _CachedSample) -> dict[str, Any]:
        for _ in range(_AUGMENT_TRIES):
            out = _transformed(self.transform, sample)
            if len(out["bboxes"]) == len(sample.box):
                return out
        # Only a tiny box at the very edge can keep leaving the frame; show it unaugmented
        # rather than return a sample whose sign is gone.
        return _transformed(eval_transform(self.image_size), sample)


class _DecodeCache:
    """Decoded samples by record index, the least recently used dropped first once they hold
    more than `max_bytes` of pixels."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._samples: OrderedDict[int, _CachedSample] = OrderedDict()

    def __len__(self) -> int:
        return len(self._samples)

    def get(self, i: int, decode: Callable[[], _CachedSample]) -> _CachedSample:
        sample = self._samples.get(i)
        if sample is not None:
            self._samples.move_to_end(i)
            return sample
        sample = decode()
        if _nbytes(sample) <= self.max_bytes:
            self._samples[i] = sample
            self.bytes += _nbytes(sample)
            while self.bytes > self.max_bytes:
                self.bytes -= _nbytes(self._samples.popitem(last=False)[1])
        return sample


def _nbytes(sample: _CachedSample) -> int:
    return sample.image.nbytes + sample.mask.nbytes + sample.box.nbytes


def _item_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def _transformed(transform: A.Compose, sample: _CachedSample) -> dict[str, Any]:
    return transform(image=sample.image, mask=sample.mask, bboxes=sample.box)


def _decode(record: SignRecord, longest_side: int | None) -> _CachedSample:
    image = read_rgb(record.image_path)
    mask = ground_truth_mask(record)
    expected = (record.height, record.width)
    if image.shape[:2] != expected or mask.shape != expected:
        fault = (
            f"decoded image is {image.shape[1]}x{image.shape[0]} and mask "
            f"{mask.shape[1]}x{mask.shape[0]}, but the record ({record.source}) says "
            f"{record.width}x{record.height}"
        )
        raise DataError(record.image_path, None, fault)
    box = np.asarray([record.box] if record.box else [], dtype=np.float32).reshape(-1, 4)
    scale = 1.0 if longest_side is None else min(1.0, longest_side / max(expected))
    if scale < 1.0:
        size = (max(1, round(record.width * scale)), max(1, round(record.height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        box *= np.asarray([size[0] / record.width, size[1] / record.height] * 2, dtype=np.float32)
    return _CachedSample(image=image, mask=mask, box=box)
