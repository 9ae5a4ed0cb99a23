"""Evaluation: the one loop that scores a network on a loader (used by training after every
epoch and by `greedysign eval`), and `evaluate_model`, a saved model's metrics on datasets."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, default_collate

from data.dataset import SignDataset
from data.load import DatasetIndex, load_datasets
from data.near_twins import novel
from data.records import DataError, SignRecord
from data.split import unique_by_content
from data.transforms import preprocess
from model.checkpoint import load_model, require_sign_model
from model.choices import EVAL_SUBSETS
from model.device import autocast_for, resolve_device
from model.metrics import EvalAccumulator, mask_boxes
from model.network import SignNet
from model.open_set import cross_fitted
from model.reading import cut, reading_window, scaled


def evaluate_loader(
    model: SignNet,
    loader: DataLoader,
    device: torch.device,
    num_known: int,
    label_names: list[str],
    stage: int | None = None,
    read: bool = False,
) -> EvalAccumulator:
    """Every batch of `loader` through the full network, or through module `stage`'s
    auxiliary heads; the accumulator holds what any metric or threshold needs.

    `read` answers each picture the way the service and `greedysign predict` do, by finding
    then reading (model/reading.py): the mask and box figures are pass 1's, the class is
    read in pass 2 from the sign cut out of the picture (the loader's dataset must be an
    evaluation SignDataset, whose pictures are kept at full size)."""
    accumulator = EvalAccumulator(num_known, label_names)
    for outputs in _scored_batches(model, loader, device, num_known, stage, read):
        accumulator.update(*outputs)
    return accumulator


def evaluate_parts(
    model: SignNet,
    loader: DataLoader,
    device: torch.device,
    num_known: int,
    label_names: list[str],
    parts: dict[str, Tensor],
    read: bool = False,
) -> dict[str, EvalAccumulator]:
    """evaluate_loader for several parts of one dataset in one pass: `parts` maps a name to
    a bool flag per item of the loader's dataset, and the loader must visit its items in
    order (an evaluation loader: no shuffling, no sampler)."""
    accumulators = {name: EvalAccumulator(num_known, label_names) for name in parts}
    start = 0
    for outputs in _scored_batches(model, loader, device, num_known, None, read):
        end = start + len(outputs[2])
        for name, flags in parts.items():
            rows = flags[start:end]
            if rows.any():
                accumulators[name].update(*(tensor[rows.to(tensor.device)] for tensor in outputs))
        start = end
    return accumulators


@torch.inference_mode()
def _scored_batches(
    model: SignNet,
    loader: DataLoader,
    device: torch.device,
    num_known: int,
    stage: int | None,
    read: bool,
) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]]:
    """(class logits, mask logits, labels, masks, boxes) of each batch, in eval mode."""
    was_training = model.training
    model.eval()
    batches = _indexed_batches(loader) if read else ((None, batch) for batch in loader)
    try:
        for indices, (images, masks, labels, boxes, _mask_known) in batches:
            images = images.to(device)
            with autocast_for(device):
                if stage is None:
                    class_logits, mask_logits = model(images)
                else:
                    t_k = model.stage_input(stage + 1, images)
                    class_logits, mask_logits = model.aux_forward(stage, t_k, images.shape[-2:])
            class_logits = class_logits.float()
            if indices is not None:
                class_logits = _read(
                    model, num_known, loader.dataset, indices, class_logits, mask_logits, device
                )
            yield class_logits, mask_logits.float(), labels, masks, boxes
    finally:
        model.train(was_training)


def _indexed_batches(loader: DataLoader):
    """(dataset indices, collated batch) in the loader's own order and batching."""
    for indices in loader.batch_sampler:
        yield indices, default_collate([loader.dataset[i] for i in indices])


def _read(
    model: SignNet,
    num_known: int,
    dataset: SignDataset,
    indices: list[int],
    class_logits: Tensor,
    mask_logits: Tensor,
    device: torch.device,
) -> Tensor:
    """Pass 2 of find-then-read: the class logits of each sign cut out of its picture, in
    place of pass 1's where there is a sign to cut."""
    # "No sign" is output n + 1 of a model with the two open-set outputs; one without them
    # (n outputs) has no such answer, and reads every picture it finds a sign in.
    no_sign = num_known + 1 if class_logits.shape[1] == num_known + 2 else -1
    found = mask_boxes(mask_logits[:, 0].float() > 0)
    side = mask_logits.shape[-1]
    crops, rows = [], []
    for row, index in enumerate(indices):
        picture = dataset.picture(index)
        height, width = picture.shape[:2]
        box = tuple(int(v) for v in found[row].tolist())
        has_box = box[2] > box[0]
        if not has_box or int(class_logits[row].argmax()) == no_sign:
            continue
        window = reading_window(scaled(box, (side, side), (height, width)), height, width)
        if window is not None:
            crops.append(preprocess(cut(picture, window), dataset.image_size))
            rows.append(row)
    if crops:
        with autocast_for(device):
            read_logits, _ = model(torch.stack(crops).to(device))
        class_logits[rows] = read_logits.float()
    return class_logits


def evaluation_loader(
    records: Sequence[SignRecord], image_size: int, batch_size: int
) -> DataLoader:
    return DataLoader(SignDataset(records, image_size, train=False), batch_size=batch_size)


def by_origin(records: Sequence[SignRecord]) -> dict[str, list[SignRecord]]:
    """The records of each collection (tsrd, tt100k, synthetic, ...), in a fixed order."""
    groups: dict[str, list[SignRecord]] = {}
    for record in records:
        groups.setdefault(record.origin or "data", []).append(record)
    return dict(sorted(groups.items()))


def evaluate_model(
    model_path: Path,
    data_paths: Sequence[Path],
    *,
    subset: str = "test",
    batch_size: int = 128,
    device: str = "auto",
) -> dict[str, Any]:
    """Metrics of the model at `model_path` on the datasets at `data_paths`.

    `subset="test"` keeps the images the model held out when it was trained (it records
    their content hashes), `"train"` the others (those it trained on, when this is its
    training data), `"all"` every distinct image (for data it never saw). With several
    collections (TSRD, TT100K, ...) each also gets its own figures under `datasets`; on the
    held-out side, `novel` scores the images whose sign has no twin among the training
    images given (data/near_twins.py). A dataset whose classes are not the model's is
    refused: its class ids mean other signs.
    """
    if subset not in EVAL_SUBSETS:
        raise ValueError(f"subset must be one of {EVAL_SUBSETS}, not {subset!r}")
    torch_device = resolve_device(device)
    model, info = load_model(model_path, torch_device)
    require_sign_model(info, model_path)
    index = load_datasets(data_paths)
    _check_label_space(index, info.dataset, model_path)
    distinct = unique_by_content(index.records)
    held_out = set(info.split.get("test_sha1", ()))
    if subset != "all" and not held_out:
        raise ValueError(f"{model_path} does not record its held-out images; use --subset all")
    train_side = [r for r in distinct if r.sha1 not in held_out]
    if subset == "all":
        records = distinct
    elif subset == "test":
        records = [r for r in distinct if r.sha1 in held_out]
    else:
        records = train_side
    if not records:
        # The default model is the newest run, whose held-out side is often other data.
        hint = "" if subset == "all" else ": --subset all scores every image given"
        folders = ", ".join(map(str, data_paths))
        raise ValueError(f"no {subset} images of {model_path} in {folders}{hint}")

    # One pass scores every part: all the records, each collection, the novel signs.
    members = {"all": torch.ones(len(records), dtype=torch.bool)}
    origins = by_origin(records)
    if len(origins) > 1:
        for origin, part in origins.items():
            ids = {id(record) for record in part}
            members[f"dataset:{origin}"] = torch.tensor([id(record) in ids for record in records])
    if subset == "test" and train_side:
        is_novel = torch.tensor(novel(train_side, records), dtype=torch.bool)
        if is_novel.any():
            members["novel"] = is_novel
    loader = evaluation_loader(records, info.config.image_size, batch_size)
    accumulators = evaluate_parts(
        model,
        loader,
        torch_device,
        len(index.class_names),
        info.class_names,
        members,
        read=info.task == "crops",
    )
    threshold = float(info.open_set.get("threshold", 0.0))
    scores = {name: accumulator.compute(threshold) for name, accumulator in accumulators.items()}
    for figures in scores.values():
        figures.pop("confusion")
    metrics = scores.pop("all")
    if subset == "test":
        # The model's threshold was chosen on these very images: also score each half at the
        # threshold chosen on the other (model/open_set.py).
        every = accumulators["all"]
        metrics["cross_fitted"] = cross_fitted(*every.arrays(), every.num_known)
    if len(origins) > 1:
        metrics["datasets"] = {origin: scores[f"dataset:{origin}"] for origin in origins}
    if "novel" in scores:
        metrics["novel"] = _headline(scores["novel"])
    return {
        "model": str(model_path),
        "data": [str(p) for p in data_paths],
        "subset": subset,
        "images_by_folder": images_by_folder(records, data_paths),
        **metrics,
    }


def images_by_folder(records: Sequence[SignRecord], data_paths: Sequence[Path]) -> dict[str, int]:
    """How many of `records` each folder gave: a folder that gave none is not in the figures
    (its images are all on the other side of the model's split, or copies of another's)."""
    roots = [Path(path).resolve() for path in data_paths]
    counts = dict.fromkeys(map(str, data_paths), 0)
    for record in records:
        image = Path(record.image_path).resolve()
        for path, root in zip(data_paths, roots, strict=True):
            if image.is_relative_to(root):
                counts[str(path)] += 1
                break
    return counts


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: metrics[key] for key in ("images", "accuracy", "macro_accuracy", "rejection_rate")}


def _check_label_space(index: DatasetIndex, model_dataset: str, model_path: Path) -> None:
    if index.name != model_dataset:
        raise DataError(
            index.root,
            None,
            f"its classes are {index.name.upper()}'s but {model_path} reads "
            f"{model_dataset.upper()}'s: class ids of one mean other signs in the other, so an "
            "accuracy would be meaningless",
        )
