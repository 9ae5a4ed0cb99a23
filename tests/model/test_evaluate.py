"""One evaluation pass scored into parts gives each part the figures of its own pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.load import load_datasets
from model.checkpoint import load_model
from model.evaluate import _read, evaluate_loader, evaluate_parts, evaluation_loader


@pytest.mark.parametrize("read", [False, True])
def test_parts_of_one_pass_score_as_their_own_passes(tiny_model_path, tiny_synthetic, read):
    model, info = load_model(tiny_model_path, torch.device("cpu"))
    model.train()  # each pass evaluates in eval mode and gives the model back as it was
    records = load_datasets([tiny_synthetic]).records[:24]
    every_third = torch.tensor([row % 3 == 0 for row in range(len(records))])
    parts = {"all": torch.ones(len(records), dtype=torch.bool), "third": every_third}
    size, names = info.config.image_size, info.class_names
    num_known = len(names) - 2
    together = evaluate_parts(
        model, evaluation_loader(records, size, 16), torch.device("cpu"), num_known, names,
        parts, read=read,
    )  # fmt: skip
    for name, flags in parts.items():
        part = [record for record, flag in zip(records, flags.tolist(), strict=True) if flag]
        alone = evaluate_loader(
            model, evaluation_loader(part, size, 7), torch.device("cpu"), num_known, names,
            read=read,
        )  # fmt: skip
        assert together[name].images == len(part)
        ours, theirs = together[name].compute(0.5), alone.compute(0.5)
        for key in ("accuracy", "rejection_rate", "mask_miou", "box_iou"):
            assert ours[key] == pytest.approx(theirs[key], abs=1e-6), (name, key)
    assert model.training


class _ReadsClassZero(torch.nn.Module):
    """A sign model whose second pass answers class 0 for every crop."""

    def __init__(self, outputs: int):
        super().__init__()
        self.outputs = outputs

    def forward(self, images):
        logits = torch.full((len(images), self.outputs), -5.0)
        logits[:, 0] = 5.0
        return logits, torch.zeros(len(images), 1, *images.shape[-2:])


class _Pictures:
    image_size = 32

    def picture(self, _index):
        return np.full((48, 48, 3), 128, np.uint8)


@pytest.mark.parametrize("outputs", [5, 7], ids=["classes only", "with the open-set outputs"])
def test_the_second_pass_reads_every_found_sign_but_a_no_sign_answer(outputs):
    """Five known classes: a first answer of class 4 is a sign to read in either model; only
    output 6 of a model with the two open-set outputs is "no sign", left as it is."""
    first = torch.full((3, outputs), -5.0)
    first[0, 3] = first[1, 4] = first[2, outputs - 1] = 5.0
    masks = torch.zeros(3, 1, 32, 32)
    masks[:, :, 8:24, 8:24] = 5.0  # each picture holds a sign
    read = _read(
        _ReadsClassZero(outputs), 5, _Pictures(), [0, 1, 2], first, masks, torch.device("cpu")
    )
    expected = [0, 0, 0] if outputs == 5 else [0, 0, 6]
    assert read.argmax(dim=1).tolist() == expected
