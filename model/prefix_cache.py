"""The sequential schedule's cache of the frozen prefix's outputs (`train --cache-prefix`).

Without it, module k spends every step of every epoch decoding and augmenting the image
again and running the frozen modules below it forward to get T_{k-1}: the schedule costs
about 2.4 times SGD's wall time for the same epochs. With it:

- the first phase keeps every training batch it draws, data epoch by data epoch, as
  module 1 trained on it (float16 images, masks, labels);
- module k trains, in its epoch e, on data epoch e's stored batches, with T_{k-1} read from
  the store; once module k is frozen, its forward pass turns each stored T_{k-1} into T_k,
  once, when module k + 1 first asks for the epoch;
- the heads phase reads the stored images and runs the frozen encoder (the decoder needs every
  stage's features, which are not kept).

So every module sees the very batches module 1 saw, in the same order, as in the
simultaneous schedule; nothing crosses a module boundary but the frozen T_{k-1}, as before.
An epoch not stored yet (a resumed run, more heads epochs than module epochs) is drawn from
the loader and its prefix computed then: the data of an epoch depends on (seed, epoch) alone,
so the result is the same. The price is host memory: per stored image and epoch, the image,
its mask and T_{k-1} in float16 (`bytes_per_image`); the training step's own memory does not
change.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from model.network import SignNet

STORE_DTYPE = torch.float16


@dataclass
class _StoredBatch:
    images: Tensor
    masks: Tensor
    labels: Tensor
    boxes: Tensor
    mask_known: Tensor
    prefix: Tensor | None  # T_{stage - 1} of the images; None while stage is 0 (the images)


@dataclass
class _StoredEpoch:
    stage: int  # the module whose input `prefix` is
    batches: list[_StoredBatch]


class PrefixCache:
    """A training loader for the sequential schedule that keeps each data epoch's batches
    and the frozen prefix's output on them. `set_epoch(epoch, stage)` before iterating:
    `stage` is the module about to train (None: the heads phase). Yields the loader's
    (images, masks, labels, boxes, mask_known), plus T_{stage-1} for a module above the
    first."""

    def __init__(self, loader: DataLoader, model: SignNet, device: torch.device):
        self.loader = loader
        self.model = model
        self.device = device
        self.epochs: dict[int, _StoredEpoch] = {}
        self.epoch, self.stage = 0, None

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int, stage: int | None) -> None:
        self.epoch, self.stage = epoch, stage

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        stored = self.epochs.get(self.epoch)
        if stored is None:
            yield from self._draw()
            return
        if self.stage is not None:
            self._advance(stored, self.stage)
        for batch in stored.batches:
            yield self._loaded(batch)

    def release(self) -> None:
        """Drop everything stored (training is over)."""
        self.epochs.clear()

    def bytes_stored(self) -> int:
        return sum(
            tensor.numel() * tensor.element_size()
            for stored in self.epochs.values()
            for batch in stored.batches
            for tensor in (batch.images, batch.masks, batch.prefix)
            if tensor is not None
        )

    def _draw(self) -> Iterator[tuple[Tensor, ...]]:
        """A new data epoch from the loader, kept (for a module phase) as it goes by, and in
        the form it would have had if stored from the first phase on."""
        self.loader.sampler.set_epoch(self.epoch)
        self.loader.dataset.set_epoch(self.epoch)
        stage = self.stage or 0
        batches: list[_StoredBatch] = []
        for images, masks, labels, boxes, mask_known in self.loader:
            # Copies: a worker's tensors each hold a shared-memory handle.
            batch = _StoredBatch(
                images.to(STORE_DTYPE),
                masks.to(STORE_DTYPE),
                labels.clone(),
                boxes.clone(),
                mask_known.clone(),
                None,
            )
            self._carry(batch, 0, stage)
            if self.stage is not None:
                batches.append(batch)
            yield self._loaded(batch)
        if self.stage is not None:  # only a whole epoch is kept
            self.epochs[self.epoch] = _StoredEpoch(stage, batches)

    def _loaded(self, batch: _StoredBatch) -> tuple[Tensor, ...]:
        loaded = (batch.images.float(), batch.masks.float(), batch.labels, batch.boxes)
        if self.stage and batch.prefix is not None:
            return (*loaded, batch.mask_known, batch.prefix.float())
        return (*loaded, batch.mask_known)

    def _advance(self, stored: _StoredEpoch, stage: int) -> None:
        """Carry a stored epoch's prefix up to T_{stage-1} through the newly frozen modules."""
        if stored.stage > stage:
            raise RuntimeError(f"stored prefix is T_{stored.stage - 1}, module {stage} wants less")
        for batch in stored.batches:
            self._carry(batch, stored.stage, stage)
        stored.stage = stage

    def _carry(self, batch: _StoredBatch, start: int, stop: int) -> None:
        """Run the frozen modules start..stop-1 on a batch's stored prefix, rounding to the
        stored precision after each, as when carried up one module at a time."""
        if start == stop:
            return
        self.model.freeze_stages(stop)  # modules below `stop` in eval mode
        t = batch.images if batch.prefix is None else batch.prefix
        with torch.no_grad():
            for k in range(start, stop):
                t = self.model.stages[k](t.to(self.device, torch.float32)).to("cpu", STORE_DTYPE)
        batch.prefix = t


def bytes_per_image(model: SignNet, image_size: int) -> int:
    """Host memory one stored image takes per epoch at its heaviest: image, masks (one per map
    the segmentation head draws) and the largest T_{k-1} (module 2 and up), float16."""
    item = torch.empty((), dtype=STORE_DTYPE).element_size()
    largest = 0
    with torch.no_grad():
        t = torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device)
        was_training = model.training
        model.eval()
        for stage in model.stages[:-1]:
            t = stage(t)
            largest = max(largest, t.numel())
        model.train(was_training)
    pixels = image_size * image_size
    return item * (3 * pixels + model.config.seg_channels * pixels + largest)
