"""Evaluation metrics for a classifier with a sign-mask head.

- accuracy (top-1) and macro accuracy (mean of per-class recall over the classes present);
- mask_miou: dataset-level IoU over {background, sign}, averaged over the two classes;
- mask_iou: per-image IoU of the sign mask, averaged over images;
- box_iou: IoU of the predicted mask's bounding box against the true box, averaged over
  images (the figure comparable to the paper's "mIoU" on CTSRD, whose ground truth is boxes);
- per-class accuracy and the confusion matrix;
- rejection_rate: the share of unknown-sign and no-sign images answered as such.

Boxes are (x1, y1, x2, y2) with exclusive x2/y2, the convention of `mask[y1:y2, x1:x2]`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from model.open_set import answers_at, operating_points


def mask_boxes(masks: Tensor) -> Tensor:
    """Bounding boxes of boolean masks [N, H, W] -> float [N, 4]; an empty mask gives zeros."""
    rows = masks.any(dim=2)  # [N, H]
    cols = masks.any(dim=1)  # [N, W]
    height, width = masks.shape[1:]
    ys = torch.arange(height, device=masks.device)
    xs = torch.arange(width, device=masks.device)
    y1 = torch.where(rows, ys, height).amin(dim=1)
    y2 = torch.where(rows, ys + 1, 0).amax(dim=1)
    x1 = torch.where(cols, xs, width).amin(dim=1)
    x2 = torch.where(cols, xs + 1, 0).amax(dim=1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float()
    return torch.where(masks.flatten(1).any(dim=1, keepdim=True), boxes, torch.zeros_like(boxes))


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise IoU of two box sets [N, 4] -> [N]; a zero-area box scores 0."""
    width = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    height = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    intersection = width * height
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    union = area_a + area_b - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1e-12), torch.zeros_like(union))


class EvalAccumulator:
    """Accumulates predictions batch by batch; `compute()` gives the metrics dict.

    Labels are 0..n-1 for the n known classes, n for "unknown sign", n + 1 for "no sign"
    (data/classes.py); the model has n or n + 2 outputs, and its answer comes from
    model/open_set.py at the threshold given to `compute` (so a stored evaluation can be
    re-scored at any threshold: `operating_points`).

    - accuracy / macro_accuracy / per_class: over images of known classes; an open-set
      answer is wrong there. None without such images.
    - rejection_rate: over unknown-sign and no-sign images, the share answered with either.
      None without such images.
    - mask and box metrics: over the images with a sign box (so with a known sign mask);
      None where there are none (TT100K crops and no-sign patches have none).

    Labels beyond n + 1 (a class the model has no output for) count as errors, in the last
    row of the confusion matrix (`unknown_class_images`).
    """

    def __init__(self, num_known: int, label_names: list[str] | None = None):
        self.num_known = num_known
        self.num_labels = num_known + 2
        self.label_names = label_names or [str(i) for i in range(self.num_labels)]
        self.pixel_intersection = torch.zeros(2, dtype=torch.float64)  # background, sign
        self.pixel_union = torch.zeros(2, dtype=torch.float64)
        self.mask_iou_sum = 0.0
        self.box_iou_sum = 0.0
        self.box_images = 0
        # Per image, what any threshold's answer needs (model/open_set.py).
        self._labels: list[Tensor] = []
        self._best: list[Tensor] = []
        self._best_known_probability: list[Tensor] = []

    @property
    def images(self) -> int:
        return sum(len(labels) for labels in self._labels)

    @torch.no_grad()
    def update(
        self,
        class_logits: Tensor,
        mask_logits: Tensor,
        labels: Tensor,
        masks: Tensor,
        boxes: Tensor,
    ) -> None:
        """class_logits [N, n or n + 2], mask_logits [N, 1, H, W], labels [N], masks
        [N, 1, H, W] in {0, 1}, boxes [N, 4] true boxes in the same H x W pixel frame
        ((0, 0, 0, 0): the image has none)."""
        probabilities = class_logits.float().softmax(dim=1).cpu()
        self._labels.append(labels.cpu().long())
        self._best.append(probabilities.argmax(dim=1))
        self._best_known_probability.append(probabilities[:, : self.num_known].amax(dim=1))

        boxes = boxes.cpu().float()
        with_box = boxes[:, 2] > boxes[:, 0]
        if not with_box.any():
            return
        predicted_masks = (mask_logits[with_box.to(mask_logits.device), 0] > 0).cpu()
        true_masks = masks[with_box.to(masks.device), 0].cpu() > 0.5
        for index, (pred, gt) in enumerate(
            ((~predicted_masks, ~true_masks), (predicted_masks, true_masks))
        ):
            self.pixel_intersection[index] += (pred & gt).sum().item()
            self.pixel_union[index] += (pred | gt).sum().item()

        intersection = (predicted_masks & true_masks).flatten(1).sum(dim=1).float()
        union = (predicted_masks | true_masks).flatten(1).sum(dim=1).float()
        per_image = torch.where(
            union > 0, intersection / union.clamp(min=1), torch.ones_like(union)
        )
        self.mask_iou_sum += per_image.sum().item()
        self.box_iou_sum += box_iou(mask_boxes(predicted_masks), boxes[with_box]).sum().item()
        self.box_images += int(with_box.sum())

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(labels, best output, best known-class probability) per image, for
        model.open_set's threshold sweeps."""
        return (
            torch.cat(self._labels).numpy(),
            torch.cat(self._best).numpy(),
            torch.cat(self._best_known_probability).numpy(),
        )

    def operating_points(self, thresholds: np.ndarray) -> list[dict[str, float | None]]:
        return operating_points(*self.arrays(), self.num_known, thresholds)

    def compute(self, threshold: float = 0.0) -> dict:
        if self.images == 0:
            raise ValueError("no images were evaluated")
        labels, best, best_known_probability = self.arrays()
        answers = answers_at(best, best_known_probability, self.num_known, threshold)
        labelled = labels >= 0
        rows = np.minimum(labels[labelled], self.num_labels)  # beyond the model: a last row
        confusion = np.zeros((self.num_labels + 1, self.num_labels), dtype=np.int64)
        np.add.at(confusion, (rows, answers[labelled]), 1)

        known = (labels >= 0) & (labels < self.num_known)  # < 0: no class to score (tiles)
        open_set = (labels >= self.num_known) & (labels < self.num_labels)
        correct_per_class = confusion.diagonal()[: self.num_known]
        total_per_class = confusion[: self.num_known].sum(axis=1)
        present = total_per_class > 0
        per_class = {
            str(c): {
                "name": self.label_names[c],
                "images": int(total_per_class[c]),
                "accuracy": float(correct_per_class[c] / total_per_class[c]),
            }
            for c in range(self.num_known)
            if present[c]
        }
        pixel_iou = self.pixel_intersection / self.pixel_union.clamp(min=1)
        return {
            "images": self.images,
            "known_images": int(known.sum()),
            "open_set_images": int(open_set.sum()),
            "accuracy": float((answers[known] == labels[known]).mean()) if known.any() else None,
            "macro_accuracy": float((correct_per_class[present] / total_per_class[present]).mean())
            if present.any()
            else None,
            "rejection_rate": float((answers[open_set] >= self.num_known).mean())
            if open_set.any()
            else None,
            "threshold": threshold,
            "mask_miou": pixel_iou.mean().item() if self.box_images else None,
            "mask_iou": self.mask_iou_sum / self.box_images if self.box_images else None,
            "box_iou": self.box_iou_sum / self.box_images if self.box_images else None,
            "unknown_class_images": int(confusion[self.num_labels].sum()),
            "per_class": per_class,
            # Rows: true label (a last row for labels outside the model), columns: answer.
            "confusion": confusion.tolist(),
        }
