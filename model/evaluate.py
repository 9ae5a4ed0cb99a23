"""`greedysign eval`: a saved model's metrics on a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from data.dataset import SignDataset
from data.load import load_dataset
from data.split import train_test_split, unique_by_content
from model.checkpoint import load_model
from model.device import autocast_for, resolve_device
from model.metrics import EvalAccumulator
from model.options import EVAL_SUBSETS


def evaluate_model(
    model_path: Path,
    data_path: Path,
    *,
    subset: str = "test",
    batch_size: int = 128,
    device: str = "auto",
) -> dict[str, Any]:
    """Metrics of the model at `model_path` on `data_path`.

    `subset="test"` re-cuts the split recorded in the model (same fraction and seed; the split
    depends only on the records and the seed), which is its held-out side when this is the
    data it was trained on; `"all"` evaluates every distinct image, e.g. for data it never
    saw. Images of classes the model has no output for count as errors.
    """
    if subset not in EVAL_SUBSETS:
        raise ValueError(f"subset must be one of {EVAL_SUBSETS}, not {subset!r}")
    torch_device = resolve_device(device)
    model, info = load_model(model_path, torch_device)
    index = load_dataset(data_path)
    if subset == "all":
        records = unique_by_content(index.records)
    else:
        fraction = info.split.get("test_fraction") or 0.2
        seed = info.split.get("seed") or 0
        train, test = train_test_split(index, test_fraction=fraction, seed=seed)
        records = test if subset == "test" else train
    loader = DataLoader(
        SignDataset(records, info.config.image_size, train=False), batch_size=batch_size
    )
    accumulator = EvalAccumulator(info.config.num_classes, info.class_names)
    with torch.inference_mode():
        for images, masks, labels, boxes in loader:
            with autocast_for(torch_device):
                class_logits, mask_logits = model(images.to(torch_device))
            accumulator.update(class_logits.float(), mask_logits.float(), labels, masks, boxes)
    metrics = accumulator.compute()
    metrics.pop("confusion")
    return {"model": str(model_path), "data": str(data_path), "subset": subset, **metrics}
