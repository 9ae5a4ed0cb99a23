"""Evaluation metrics for a classifier with a sign-mask head.

- accuracy (top-1) and macro accuracy (mean of per-class recall over the classes present);
- mask_miou: dataset-level IoU over {background, sign}, averaged over the two classes;
- mask_iou: per-image IoU of the sign mask, averaged over images;
- box_iou: IoU of the predicted mask's bounding box against the true box, averaged over
  images (the figure comparable to the paper's "mIoU" on CTSRD, whose ground truth is boxes);
- per-class accuracy and the confusion matrix.

Boxes are (x1, y1, x2, y2) with exclusive x2/y2, the convention of `mask[y1:y2, x1:x2]`.
"""

from __future__ import annotations

import torch
from torch import Tensor


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

    Targets outside the model's classes (a class it never had an output for) still count, as
    errors: they land in the last row of an extra "unknown" bucket of the confusion matrix.
    """

    def __init__(self, num_classes: int, class_names: list[str] | None = None):
        self.num_classes = num_classes
        self.class_names = class_names or [str(i) for i in range(num_classes)]
        # Row = true class, column = predicted; row num_classes collects unknown true classes.
        self.confusion = torch.zeros(num_classes + 1, num_classes, dtype=torch.long)
        self.pixel_intersection = torch.zeros(2, dtype=torch.float64)  # background, sign
        self.pixel_union = torch.zeros(2, dtype=torch.float64)
        self.mask_iou_sum = 0.0
        self.box_iou_sum = 0.0
        self.images = 0

    @torch.no_grad()
    def update(
        self,
        class_logits: Tensor,
        mask_logits: Tensor,
        labels: Tensor,
        masks: Tensor,
        boxes: Tensor,
    ) -> None:
        """class_logits [N, C], mask_logits [N, 1, H, W], labels [N], masks [N, 1, H, W] in
        {0, 1}, boxes [N, 4] true boxes in the same H x W pixel frame."""
        predicted = class_logits.argmax(dim=1).cpu()
        true = labels.cpu().clamp(max=self.num_classes)  # unknown classes share the last row
        self.confusion.index_put_((true, predicted), torch.ones_like(true), accumulate=True)

        predicted_masks = (mask_logits[:, 0] > 0).cpu()
        true_masks = masks[:, 0].cpu() > 0.5
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
        self.box_iou_sum += box_iou(mask_boxes(predicted_masks), boxes.cpu().float()).sum().item()
        self.images += labels.shape[0]

    def compute(self) -> dict:
        if self.images == 0:
            raise ValueError("no images were evaluated")
        correct_per_class = self.confusion.diagonal()
        total_per_class = self.confusion[: self.num_classes].sum(dim=1)
        present = total_per_class > 0
        recall = correct_per_class[present].float() / total_per_class[present].float()
        # Unknown true classes are never correct, so they only add to the denominator.
        accuracy = correct_per_class.sum().item() / self.images
        pixel_iou = self.pixel_intersection / self.pixel_union.clamp(min=1)
        per_class = {
            str(c): {
                "name": self.class_names[c],
                "images": int(total_per_class[c]),
                "accuracy": float(correct_per_class[c] / total_per_class[c]),
            }
            for c in range(self.num_classes)
            if total_per_class[c] > 0
        }
        return {
            "images": self.images,
            "accuracy": accuracy,
            "macro_accuracy": recall.mean().item() if present.any() else 0.0,
            "mask_miou": pixel_iou.mean().item(),
            "mask_iou": self.mask_iou_sum / self.images,
            "box_iou": self.box_iou_sum / self.images,
            "unknown_class_images": int(self.confusion[self.num_classes].sum()),
            "per_class": per_class,
            # Rows: true class (a last row for classes outside the model), columns: predicted.
            "confusion": self.confusion.tolist(),
        }
