"""Loss terms. Each is returned separately so that every term can be logged."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from data.tiles import IGNORE_LABEL


def dice_loss(mask_logits: Tensor, masks: Tensor, smooth: float = 1.0) -> Tensor:
    """Soft Dice loss per image, averaged; `smooth` keeps empty masks finite."""
    probabilities = mask_logits.sigmoid().flatten(1)
    targets = masks.flatten(1)
    intersection = (probabilities * targets).sum(dim=1)
    total = probabilities.sum(dim=1) + targets.sum(dim=1)
    return (1 - (2 * intersection + smooth) / (total + smooth)).mean()


def mask_loss(mask_logits: Tensor, masks: Tensor, mask_known: Tensor | None = None) -> Tensor:
    """BCE + Dice: BCE trains every pixel, Dice keeps small signs from being ignored. With
    several maps ([N, C, H, W]: a scene model's sign pixels and sign cores) each map has
    its own term and the terms add up, so the small cores weigh as much as the signs.

    `mask_known` [N] bool leaves out the images whose mask is unknown (sign crops without a
    box): their term is not faked as a full-frame mask. With none known the term is 0.
    """
    if mask_known is not None and not bool(mask_known.all()):
        if not bool(mask_known.any()):
            return mask_logits.sum() * 0.0  # keeps the graph, adds no gradient
        mask_logits, masks = mask_logits[mask_known], masks[mask_known]
    return sum(
        F.binary_cross_entropy_with_logits(logits, target) + dice_loss(logits, target)
        for logits, target in zip(mask_logits.unbind(1), masks.unbind(1), strict=True)
    )


def module_loss(
    class_logits: Tensor,
    mask_logits: Tensor,
    labels: Tensor,
    masks: Tensor,
    reg: Tensor | None = None,
    mask_known: Tensor | None = None,
    *,
    lambda_mask: float = 1.0,
    beta: float = 0.0,
    label_smoothing: float = 0.0,
) -> dict[str, Tensor]:
    """L = CE + lambda_mask * (BCE + Dice) + beta * reg, as a dict of its terms.

    `reg` is the information term of the representation (H(T_k) or I(T_{k-1}; T_k)); None or
    beta == 0 leaves it out (plain greedy cross-entropy, or end-to-end SGD). `mask_known`:
    see `mask_loss`.
    """
    # Labels of -100 (a scene tile, which has no one class) score no class: without any
    # class label in the batch the term is 0, not the NaN of an empty mean.
    if bool((labels == IGNORE_LABEL).all()):
        ce = class_logits.sum() * 0.0
    else:
        ce = F.cross_entropy(
            class_logits, labels, label_smoothing=label_smoothing, ignore_index=IGNORE_LABEL
        )
    seg = mask_loss(mask_logits, masks, mask_known)
    reg_term = reg if reg is not None else torch.zeros((), device=ce.device)
    total = ce + lambda_mask * seg + beta * reg_term
    return {"ce": ce, "mask": seg, "reg": reg_term, "total": total}
