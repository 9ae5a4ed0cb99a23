"""One evaluation pass scored into parts gives each part the figures of its own pass."""

from __future__ import annotations

import pytest
import torch

from data.load import load_datasets
from model.checkpoint import load_model
from model.evaluate import evaluate_loader, evaluate_parts, evaluation_loader


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
