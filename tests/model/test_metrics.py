import pytest
import torch
from torchmetrics.classification import BinaryJaccardIndex, MulticlassAccuracy

from model.losses import dice_loss, module_loss
from model.metrics import EvalAccumulator, box_iou, mask_boxes


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
    assert 0 <= metrics["box_iou"] <= 1 and 0 <= metrics["mask_iou"] <= 1


def test_perfect_masks_score_one_and_unknown_classes_count_as_errors():
    size = 12
    masks = torch.stack([_box_mask(size, size, (1, 2, 9, 10))] * 3)[:, None].float()
    boxes = torch.tensor([[1, 2, 9, 10]] * 3, dtype=torch.float)
    logits = torch.eye(3)  # predicts 0, 1, 2
    labels = torch.tensor([0, 1, 7])  # 7 is outside the model's 3 classes
    accumulator = EvalAccumulator(3)
    accumulator.update(logits, masks * 20 - 10, labels, masks, boxes)
    metrics = accumulator.compute()
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["unknown_class_images"] == 1
    assert metrics["box_iou"] == metrics["mask_iou"] == metrics["mask_miou"] == pytest.approx(1.0)


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
