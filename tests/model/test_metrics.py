import numpy as np
import pytest
import torch
from torchmetrics.classification import BinaryJaccardIndex, MulticlassAccuracy

from model.losses import dice_loss, module_loss
from model.metrics import EvalAccumulator, box_iou, mask_boxes
from model.open_set import answer, answers_at, choose_threshold, cross_fitted


def _box_mask(height, width, box):
    mask = torch.zeros(height, width, dtype=torch.bool)
    x1, y1, x2, y2 = box
    mask[y1:y2, x1:x2] = True
    return mask


def test_mask_boxes_is_the_exclusive_bounding_box():
    masks = torch.stack([_box_mask(8, 10, (2, 1, 5, 7)), torch.zeros(8, 10, dtype=torch.bool)])
    assert mask_boxes(masks).tolist() == [[2, 1, 5, 7], [0, 0, 0, 0]]


def test_box_iou_known_values():
    a = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 0, 0]], dtype=torch.float)
    b = torch.tensor([[0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 5, 5]], dtype=torch.float)
    assert box_iou(a, b).tolist() == pytest.approx([1.0, 50 / 150, 0.0])


def test_accumulator_matches_torchmetrics():
    generator = torch.Generator().manual_seed(0)
    num_classes, n, size = 5, 40, 16
    logits = torch.randn(n, num_classes, generator=generator)
    labels = torch.randint(0, num_classes, (n,), generator=generator)
    mask_logits = torch.randn(n, 1, size, size, generator=generator)
    boxes = torch.tensor([[2, 3, 12, 14]] * n, dtype=torch.float)
    masks = torch.stack([_box_mask(size, size, (2, 3, 12, 14))] * n)[:, None].float()

    accumulator = EvalAccumulator(num_classes)
    for start in range(0, n, 16):  # several batches, uneven last one
        part = slice(start, start + 16)
        accumulator.update(logits[part], mask_logits[part], labels[part], masks[part], boxes[part])
    metrics = accumulator.compute()

    top1 = MulticlassAccuracy(num_classes, average="micro")(logits, labels).item()
    macro = MulticlassAccuracy(num_classes, average="macro")(logits, labels).item()
    sign_iou = BinaryJaccardIndex()((mask_logits > 0).long(), masks.long()).item()
    background_iou = BinaryJaccardIndex()((mask_logits <= 0).long(), (masks < 0.5).long()).item()
    assert metrics["images"] == n
    assert metrics["accuracy"] == pytest.approx(top1)
    assert metrics["macro_accuracy"] == pytest.approx(macro)
    assert metrics["mask_miou"] == pytest.approx((sign_iou + background_iou) / 2)
    # Per image, by hand: the predicted mask's IoU with the true one, and its tight box's
    # (right and bottom edges exclusive) with the true box.
    mask_ious, box_ious = [], []
    for predicted, true in zip(mask_logits[:, 0] > 0, masks[:, 0] > 0.5, strict=True):
        mask_ious.append(((predicted & true).sum() / (predicted | true).sum()).item())
        ys, xs = predicted.nonzero(as_tuple=True)
        box = (xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1)
        inner = (min(box[2], 12) - max(box[0], 2)) * (min(box[3], 14) - max(box[1], 3))
        area = (box[2] - box[0]) * (box[3] - box[1])
        box_ious.append(inner / (area + 10 * 11 - inner))
    assert metrics["mask_iou"] == pytest.approx(sum(mask_ious) / n)
    assert metrics["box_iou"] == pytest.approx(sum(box_ious) / n)


def test_perfect_masks_score_one_and_labels_beyond_the_model_count_apart():
    size = 12
    masks = torch.stack([_box_mask(size, size, (1, 2, 9, 10))] * 3)[:, None].float()
    boxes = torch.tensor([[1, 2, 9, 10]] * 3, dtype=torch.float)
    logits = torch.eye(3)  # answers 0, 1, 2
    labels = torch.tensor([0, 2, 9])  # 9 is beyond the model's 3 classes + 2 open-set labels
    accumulator = EvalAccumulator(3)
    accumulator.update(logits, masks * 20 - 10, labels, masks, boxes)
    metrics = accumulator.compute()
    assert metrics["accuracy"] == pytest.approx(1 / 2)
    assert metrics["unknown_class_images"] == 1
    assert metrics["box_iou"] == metrics["mask_iou"] == metrics["mask_miou"] == pytest.approx(1.0)


def test_open_set_answers_accuracy_and_rejection():
    """Known classes 0..2, unknown sign 3, no sign 4. A known answer below the threshold
    becomes "unknown sign"; an open-set answer is wrong on a known sign and a rejection on
    the others."""
    probabilities = torch.tensor(
        [
            [0.90, 0.05, 0.01, 0.02, 0.02],  # known 0, sure: right
            [0.10, 0.50, 0.10, 0.20, 0.10],  # known 1 at 0.5: right, or rejected at t > 0.5
            [0.10, 0.10, 0.10, 0.60, 0.10],  # known 2 answered unknown: wrong
            [0.05, 0.05, 0.10, 0.70, 0.10],  # unknown sign answered unknown: rejected
            [0.60, 0.10, 0.10, 0.10, 0.10],  # no sign answered class 0 at 0.6
        ]
    )
    labels = torch.tensor([0, 1, 2, 3, 4])
    accumulator = EvalAccumulator(3)
    no_boxes = torch.zeros(5, 4)
    accumulator.update(
        probabilities.log(), torch.zeros(5, 1, 4, 4), labels, torch.zeros(5, 1, 4, 4), no_boxes
    )

    at_zero = accumulator.compute(0.0)
    assert at_zero["accuracy"] == pytest.approx(2 / 3)
    assert at_zero["rejection_rate"] == pytest.approx(1 / 2)
    assert at_zero["box_iou"] is None and at_zero["mask_miou"] is None
    assert (at_zero["known_images"], at_zero["open_set_images"]) == (3, 2)

    at_055 = accumulator.compute(0.55)
    assert at_055["accuracy"] == pytest.approx(1 / 3)  # class 1 at 0.5 is now rejected
    assert at_055["rejection_rate"] == pytest.approx(1 / 2)
    at_065 = accumulator.compute(0.65)
    assert at_065["rejection_rate"] == pytest.approx(1.0)  # the no-sign patch too

    points = accumulator.operating_points(np.array([0.0, 0.55, 0.65]))
    assert [p["accuracy"] for p in points] == pytest.approx([2 / 3, 1 / 3, 1 / 3])
    assert [p["rejection_rate"] for p in points] == pytest.approx([0.5, 0.5, 1.0])

    answers = answer(probabilities, num_known=3, threshold=0.55)
    assert answers.label.tolist() == [0, 3, 3, 3, 0]
    assert answers.confidence.tolist() == pytest.approx([0.9, 0.5, 0.6, 0.7, 0.6])


def test_threshold_rejects_the_most_within_the_accuracy_it_may_cost():
    # 100 known images: the best known class's probability is 0.3 + i/200, right for all.
    # 100 unknown ones: 0.2 + i/200 for a known class.
    labels = np.array([0] * 100 + [3] * 100)
    best = np.zeros(200, dtype=np.int64)
    best_known = np.concatenate([0.3 + np.arange(100) / 200, 0.2 + np.arange(100) / 200])
    threshold = choose_threshold(labels, best, best_known, num_known=3)
    # Rejecting known images below 0.3 + 1/200 costs one point: t = 0.30 or 0.31 is within.
    assert threshold == pytest.approx(0.30)
    assert choose_threshold(labels[:100], best[:100], best_known[:100], num_known=3) == 0.0


def test_cross_fitted_scores_each_half_at_the_threshold_chosen_on_the_other():
    rng = np.random.default_rng(2)
    labels = np.concatenate([rng.integers(0, 3, 150), np.full(50, 3), np.full(40, 4)])
    # Known signs read right and sure; signs and patches outside them taken for class 0,
    # less sure: a threshold between the two rejects them, and each half sets its own.
    best = np.where(labels < 3, labels, 0)
    best_known = np.where(labels < 3, rng.uniform(0.6, 1.0, 240), rng.uniform(0.1, 0.7, 240))
    best_known[:8] = rng.uniform(0.1, 0.6, 8)  # a few known signs read unsure
    figures = cross_fitted(labels, best, best_known, num_known=3, seed=5)
    first = np.zeros(240, dtype=bool)
    first[np.random.default_rng(5).permutation(240)[:120]] = True
    answers = np.empty_like(best)
    for scored, threshold in zip((first, ~first), figures["thresholds"], strict=True):
        other = ~scored
        assert threshold == choose_threshold(labels[other], best[other], best_known[other], 3)
        answers[scored] = answers_at(best[scored], best_known[scored], 3, threshold)
    known, open_set = labels < 3, labels >= 3
    assert figures["accuracy"] == pytest.approx((answers[known] == labels[known]).mean())
    assert figures["rejection_rate"] == pytest.approx((answers[open_set] >= 3).mean())
    # Here the halves disagree, with each other and with all the images (0.16).
    assert figures["thresholds"] == [0.28, 0.12]


def test_losses_are_separate_terms_and_dice_is_zero_for_perfect_masks():
    masks = torch.zeros(2, 1, 8, 8)
    masks[:, :, 2:6, 2:6] = 1
    assert dice_loss(masks * 40 - 20, masks).item() == pytest.approx(0.0, abs=1e-6)
    terms = module_loss(
        torch.randn(2, 4),
        torch.randn(2, 1, 8, 8),
        torch.tensor([0, 3]),
        masks,
        reg=torch.tensor(2.0),
        lambda_mask=0.5,
        beta=0.1,
    )
    assert set(terms) == {"ce", "mask", "reg", "total"}
    expected = terms["ce"] + 0.5 * terms["mask"] + 0.1 * terms["reg"]
    assert terms["total"].item() == pytest.approx(expected.item())
