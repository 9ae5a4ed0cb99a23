"""Training: Greedy-DIB (layer-wise), greedy cross-entropy, or end-to-end SGD.

In the shape of torchvision's classification reference: `load_data()`, `train_one_epoch()`,
`evaluate()`, `main(args)`; its `get_args_parser()` is in model/options.py. The algorithm
itself is in model/greedy.py.

A run folder holds `checkpoint.pth` (rewritten atomically after every epoch; `--resume`
continues at the phase and epoch it records), `model.pt` (the exported model), `metrics.json`,
`history.csv` (one row per phase and epoch, with each module's first-layer gradient norm) and
the plots.

Launched by torchrun (`make train NPROC=N`), every process runs `main` as one rank of the run:
model/distributed.py says what the ranks share and split.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from data.classes import label_names
from data.dataset import SignDataset
from data.frames import FrameRecord, read_coco_frames
from data.load import load_datasets
from data.near_twins import novel
from data.records import SignRecord
from data.split import cross_split_copies, train_test_split, unique_by_content
from data.tiles import SceneTiles
from model import distributed
from model.checkpoint import (
    CHECKPOINT_FORMAT,
    ModelFileError,
    ModelInfo,
    export_model,
    load_file,
    load_for_fine_tuning,
    save_atomic,
    versions,
)
from model.device import autocast_for, grad_scaler_for, memory_format_for, training_dtype
from model.evaluate import by_origin, evaluate_loader
from model.greedy import (
    LossSettings,
    Phase,
    build_phases,
    enter_phase,
    first_layer_weights,
    network_for,
)
from model.metrics import EvalAccumulator
from model.network import AUX_PREFIXES, NetConfig, SignNet
from model.open_set import THRESHOLD_GRID, choose_threshold, cross_fitted
from model.prefix_cache import PrefixCache, bytes_per_image
from model.runs import CHECKPOINT_FILE, MODEL_FILE, folder_fault, mark_latest, runs_root
from model.snapshots import save_snapshot, snapshot_callback
from model.splits import DEFAULT_SPLIT, resolve_split

SYNTHETIC_CACHE = Path(".cache")
# A scene model draws sign pixels and sign cores (data/tiles.py), which part touching signs.
SCENE_SEG_CHANNELS = 2


# ---------------------------------------------------------------------------------- data


@dataclass
class TrainData:
    train: list[SignRecord] | list[FrameRecord]  # whole frames for the "scenes" task
    test: list[SignRecord] | list[FrameRecord]
    dataset: str
    label_names: list[str]  # the classes, then "unknown sign" and "no sign"
    num_known: int
    split: dict[str, Any]
    fingerprint: str


def load_data(args: argparse.Namespace) -> TrainData:
    """Read the datasets, add synthetic images for classes that have no real one, and cut
    the leakage-free split (the official one, if the data has one)."""
    if args.task == "scenes":
        return load_scene_data(args)
    roots = list(args.data) if args.data else [synthetic_dataset(args.synthetic_per_class)]
    index = load_datasets(roots)
    num_known = len(index.class_names)
    present = {r.class_id for r in index.records if r.class_id < num_known}
    missing = sorted(set(range(num_known)) - present)
    synthetic_only: list[int] = []
    official = args.data_split == "official"
    # The paper's protocol is the release as it is: nothing is added to it.
    if args.data and missing and args.synthetic_fill > 0 and index.name == "ctsrd" and not official:
        synthetic = synthetic_dataset(args.synthetic_fill, classes=missing)
        print(
            f"classes with no real image {missing}: {args.synthetic_fill} synthetic images "
            f"each from {synthetic}",
            flush=True,
        )
        index = load_datasets([*roots, synthetic])
        synthetic_only = missing
    train, test = train_test_split(
        index, test_fraction=args.test_fraction, seed=args.seed, official=official
    )
    if args.train_data:
        # Folders that only train: one scene (hard negatives mined from one clip) could only
        # go whole to one side of a leakage-free split.
        extra = load_datasets(args.train_data)
        if extra.name != index.name:
            raise SystemExit(
                f"--train-data {extra.root}: its classes are {extra.name.upper()}'s, not "
                f"{index.name.upper()}'s"
            )
        extra_records = unique_by_content(extra.records)
        train_only = _off_the_test_side(extra_records, test)
        if len(train_only) < len(extra_records):
            print(
                f"--train-data: {len(extra_records) - len(train_only)} images left out, copies "
                "of held-out images or of their scenes",
                flush=True,
            )
        train = train + train_only
    if len(train) < 2 or not test:
        # Caught here rather than as an empty evaluation after the first module's epochs.
        raise SystemExit(
            f"{', '.join(map(str, roots))}: the split leaves {len(train)} training and "
            f"{len(test)} test images; a class needs two distinct images (not near-twins) "
            "before one can go to the test side"
        )
    leaked = cross_split_copies(train, test)
    if official:
        print(
            f"official TSRD split: {leaked} of its {len(test)} test images are byte-identical "
            "to training images (the paper's protocol keeps them)",
            flush=True,
        )
    split = {
        "kind": "official (the release's files)"
        if official
        else "leakage-free stratified, near-twins grouped",
        "test_images_also_in_train": leaked,
        "test_fraction": None if official else args.test_fraction,
        "seed": None if official else args.seed,
        "train_images": len(train),
        "test_images": len(test),
        # "unknown sign" and "no sign" images: without them those outputs learn nothing, and
        # only the threshold turns a picture down (ModelInfo.open_set_trained).
        "open_set_train_images": sum(r.class_id >= num_known for r in train),
        "data": [str(root) for root in roots],
        "train_only_data": [str(root) for root in args.train_data or []],
        "synthetic_only_classes": synthetic_only,
        "train_images_by_origin": dict(Counter(r.origin for r in train).most_common()),
        "test_images_by_origin": dict(Counter(r.origin for r in test).most_common()),
        # What `greedysign eval --subset test` scores: the held-out side, by content.
        "test_sha1": sorted({r.sha1 for r in test}),
    }
    return TrainData(
        train,
        test,
        index.name,
        label_names(index.name),
        num_known,
        split,
        fingerprint(train, test),
    )


def load_scene_data(args: argparse.Namespace) -> TrainData:
    """Whole frames with their signs (COCO folders: `greedysign data scenes` or `drives`),
    split at random with the seed, the frames of one video kept on one side."""
    if not args.data:
        raise SystemExit("--task scenes needs --data: a folder written by greedysign data scenes")
    if args.train_data or args.data_split != "leakage-free":
        # Frames are split at random (a generated frame shares nothing with another); every
        # --data folder is split, so a folder that should only train has no place here.
        raise SystemExit("--task scenes takes neither --train-data nor --split: give --data")
    frames, units = [], {}
    for number, root in enumerate(args.data):
        for frame in read_coco_frames(root):
            # A video's frames show the same signs a moment apart: one unit, on one side.
            video = frame.video_id
            key = (number, "frame", len(frames)) if video is None else (number, "video", video)
            units.setdefault(key, []).append(len(frames))
            frames.append(frame)
    members = list(units.values())
    order = torch.randperm(len(members), generator=torch.Generator().manual_seed(args.seed))
    test_count = max(1, round(len(frames) * args.test_fraction))
    on_test: list[int] = []
    for unit in order.tolist():
        if len(on_test) >= test_count:
            break
        on_test += members[unit]
    if len(frames) - len(on_test) < 1:
        raise SystemExit(f"{len(frames)} frames: too few to train and test on")
    test_side = set(on_test)
    test = [frame for i, frame in enumerate(frames) if i in test_side]
    train = [frame for i, frame in enumerate(frames) if i not in test_side]
    split = {
        "kind": "frames, random, a video's frames on one side",
        "test_fraction": args.test_fraction,
        "seed": args.seed,
        "train_images": len(train),
        "test_images": len(test),
        "data": [str(root) for root in args.data],
    }
    digest = hashlib.sha1("\n".join(str(f.image_path) for f in train + test).encode())
    names = label_names("ctsrd")
    return TrainData(train, test, "ctsrd", names, len(names) - 2, split, digest.hexdigest())


def _off_the_test_side(records: list[SignRecord], test: list[SignRecord]) -> list[SignRecord]:
    """The records that are neither a copy of a test image nor of a test image's scene (the
    reader's group: a TT100K panorama, a GTSRB track): training on them would leak."""
    test_content = {record.sha1 for record in test}
    test_groups = {record.group for record in test if record.group}
    return [
        record
        for record in records
        if record.sha1 not in test_content and record.group not in test_groups
    ]


def synthetic_dataset(per_class: int, seed: int = 0, classes: Sequence[int] | None = None) -> Path:
    """A synthetic CTSRD set (every class, or `classes`), generated on first use and kept in
    .cache/."""
    from data.synth import generate_synthetic

    which = "" if classes is None else "-classes" + "_".join(map(str, classes))
    root = SYNTHETIC_CACHE / f"synthetic-ctsrd-{per_class}pc-seed{seed}{which}"
    if not (root / "annotations.txt").is_file():
        print(f"generating synthetic CTSRD images into {root}", flush=True)
        generate_synthetic(root, per_class=per_class, seed=seed, classes=classes)
    return root


def fingerprint(train: list[SignRecord], test: list[SignRecord]) -> str:
    """Hash of what was trained and tested on: content, label and box of every image."""
    digest = hashlib.sha1()
    for side, records in (("train", train), ("test", test)):
        for record in sorted(records, key=lambda r: r.sha1):
            digest.update(f"{side}:{record.sha1}:{record.class_id}:{record.box}\n".encode())
    return digest.hexdigest()


def make_loaders(data: TrainData, args: argparse.Namespace) -> tuple[DataLoader, DataLoader]:
    """The training loader reshuffles and re-augments each epoch from (seed, epoch) alone
    (`set_epoch`), so an interrupted run resumes exactly; its workers are started afresh
    each epoch to see the epoch."""
    balanced = args.balance == "sqrt"
    if args.task == "scenes":
        core = SCENE_SEG_CHANNELS == 2  # the tiles carry every map the model draws
        train_set = SceneTiles(data.train, args.image_size, train=True, seed=args.seed, core=core)
        test_set = SceneTiles(data.test, args.image_size, train=False, seed=args.seed, core=core)
        weights = folder_weights(data.train, train_set.tiles_per_frame) if balanced else None
    else:
        decode = {"decode": args.decode, "cache_mb": args.decode_cache_mb}
        train_set = SignDataset(data.train, args.image_size, train=True, seed=args.seed, **decode)
        test_set = SignDataset(data.test, args.image_size, train=False, **decode)
        weights = balanced_weights(data.train) if balanced else None
    world = distributed.world_size()
    if args.batch_size % world:
        raise SystemExit(
            f"--batch-size {args.batch_size} is the batch of all {world} processes together: "
            "make it a multiple of their number"
        )
    train_loader = DataLoader(
        train_set,
        args.batch_size // world,  # per process; a step of them all is one batch
        sampler=distributed.train_sampler(EpochShuffle(len(train_set), args.seed, weights)),
        # A last short batch is dropped (BatchNorm and the entropy term want a full one),
        # unless it is the only one.
        drop_last=len(train_set) > args.batch_size,
        num_workers=args.workers,
    )
    test_loader = DataLoader(
        test_set,
        args.batch_size * 2,
        shuffle=False,
        sampler=distributed.evaluation_sampler(len(test_set)),
        num_workers=args.workers,
    )
    return train_loader, test_loader


def process_share_loader(records: list[SignRecord], args: argparse.Namespace) -> DataLoader:
    """model.evaluate.evaluation_loader, with only this process's share under torchrun."""
    dataset = SignDataset(
        records, args.image_size, train=False, decode=args.decode, cache_mb=args.decode_cache_mb
    )
    return DataLoader(
        dataset, args.batch_size * 2, sampler=distributed.evaluation_sampler(len(dataset))
    )


class EpochShuffle(torch.utils.data.Sampler[int]):
    """The order of an epoch, drawn from (seed, epoch) alone: the same in any process, before
    or after a resume. Without weights, a permutation of 0..n-1; with them, n draws with
    replacement in proportion to the weights, a record's r-th draw of the epoch given as
    index + r * n (data.dataset.SignDataset augments each draw differently)."""

    def __init__(self, size: int, seed: int, weights: torch.Tensor | None = None):
        self.size = size
        self.seed = seed
        self.weights = weights
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.weights is None:
            return iter(torch.randperm(self.size, generator=generator).tolist())
        draws = torch.multinomial(self.weights, self.size, replacement=True, generator=generator)
        seen: Counter[int] = Counter()
        indices = []
        for index in draws.tolist():
            indices.append(index + seen[index] * self.size)
            seen[index] += 1
        return iter(indices)

    def __len__(self) -> int:
        return self.size


def balanced_weights(records: list[SignRecord]) -> torch.Tensor:
    """Sampling weights that lift small collections and rare labels part of the way: each
    collection gets a share of the draws in proportion to the square root of its size, and
    within it each label a share in proportion to the square root of its count. With TSRD's
    1k images beside TT100K's 14k, TSRD gets a fifth of the draws instead of a fifteenth; a
    label with 30 crops gets 8 times fewer draws than one with 1900, not 60 times (an equal
    share would only replay its few crops over and over)."""
    per_origin = Counter(r.origin for r in records)
    per_label = Counter((r.origin, r.class_id) for r in records)
    origin_total = sum(n**0.5 for n in per_origin.values())
    label_total = Counter()
    for (origin, _label), n in per_label.items():
        label_total[origin] += n**0.5
    weights = []
    for r in records:
        n = per_label[(r.origin, r.class_id)]
        origin_share = per_origin[r.origin] ** 0.5 / origin_total
        label_share = n**0.5 / label_total[r.origin]
        weights.append(origin_share * label_share / n)
    return torch.tensor(weights, dtype=torch.float64)


def folder_weights(frames: list[FrameRecord], tiles_per_frame: int) -> torch.Tensor | None:
    """Sampling weights of a scene set's tiles (`tiles_per_frame` consecutive ones per
    frame) that give each image folder a share of the draws in proportion to the square
    root of its frames: 20 real annotated frames beside 2000 generated ones get a tenth of
    the tiles instead of a hundredth. None for a single folder (each tile once per epoch)."""
    per_folder = Counter(frame.image_path.parent for frame in frames)
    if len(per_folder) < 2:
        return None
    total = sum(n**0.5 for n in per_folder.values())
    weights = [per_folder[f.image_path.parent] ** -0.5 / total for f in frames]
    return torch.tensor(weights, dtype=torch.float64).repeat_interleave(tiles_per_frame)


# ------------------------------------------------------------------------- optimisation


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(phase: Phase, args: argparse.Namespace, steps_per_epoch: int, epochs: int):
    # Every parameter the phase trains, frozen or not yet: the optimizer is made before
    # `enter_phase` unfreezes them (a phase after the aux warm-up starts from a frozen net).
    parameters = list(phase.parameters())
    if args.optimizer == "adamw":
        optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=args.weight_decay)
    else:
        optimizer = torch.optim.SGD(
            parameters,
            lr=args.lr,
            momentum=args.momentum,
            weight_decay=args.weight_decay,
            nesterov=args.momentum > 0,  # torch refuses Nesterov without momentum
        )
    total = steps_per_epoch * epochs
    warmup = min(total, round(args.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, max(1, warmup))
    )
    return optimizer, scheduler


# ------------------------------------------------------------------------ epoch and eval


def train_one_epoch(
    model: SignNet,
    phase: Phase,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    loader: DataLoader,
    device: torch.device,
    description: str,
    cpu_bf16: bool = False,
) -> dict[str, float]:
    """One pass over the training set for `phase`; the mean of each loss term (summed over
    the phase's local losses), the training accuracy of the phase's last classifier (None
    when no image has a class: scene tiles), the images
    per second, and the mean first-layer gradient norm of every stage (NaN where no gradient
    reached it: the frozen and the not-yet-trained modules of greedy training)."""
    enter_phase(model, phase)
    first_layers = first_layer_weights(model)
    sums: dict[str, float] = {}
    grad_sums = [0.0] * len(first_layers)
    grad_counts = [0] * len(first_layers)
    correct = classed = seen = batches = 0
    dtype, layout = training_dtype(device, cpu_bf16), memory_format_for(device, cpu_bf16)
    started = time.perf_counter()
    quiet = not sys.stderr.isatty() or not distributed.is_main()
    progress = tqdm(loader, desc=description, leave=False, disable=quiet)
    # A PrefixCache adds T_{k-1}, the frozen prefix's stored output, to a module's batches.
    for images, masks, labels, _boxes, mask_known, *stored_prefix in progress:
        images = images.to(device, memory_format=layout)
        batch = (images, masks.to(device), labels.to(device), mask_known.to(device))
        prefix = {"prefix": stored_prefix[0].to(device)} if stored_prefix else {}
        optimizer.zero_grad(set_to_none=True)
        terms: dict[str, float] = {}
        # Each local loss is backpropagated before the step computes the next (greedy.py).
        with autocast_for(device, dtype):
            for local in phase.step(*batch, **prefix):
                scaler.scale(local.terms["total"]).backward()
                for name, value in local.terms.items():
                    terms[name] = terms.get(name, 0.0) + value.item()
        class_logits = local.class_logits
        labels = batch[2]
        scaler.unscale_(optimizer)
        for i, weight in enumerate(first_layers):
            if weight.grad is not None:
                norm = weight.grad.norm().item()
                # Under fp16 loss scaling an overflowed step is skipped by the scaler: not
                # counted. Without scaling a non-finite norm is a diverged run: kept in view.
                if math.isfinite(norm) or not scaler.is_enabled():
                    grad_sums[i] += norm
                    grad_counts[i] += 1
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()

        batches += 1
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + value
        # A scene tile has no class (IGNORE_LABEL): accuracy counts the images that have one.
        has_class = labels >= 0
        correct += ((class_logits.argmax(dim=1) == labels) & has_class).sum().item()
        classed += has_class.sum().item()
        seen += labels.shape[0]
        accuracy = _fmt(correct / classed if classed else None)
        progress.set_postfix(loss=f"{sums['total'] / batches:.3f}", acc=accuracy)
    # Under torchrun, the figures of all the processes' batches together.
    *loss_sums, correct, classed, seen, batches = distributed.all_reduce_sum(
        [*sums.values(), correct, classed, seen, batches]
    )
    sums = dict(zip(sums, loss_sums, strict=True))
    stats = {f"train_{name}": value / max(1, batches) for name, value in sums.items()}
    stats["train_accuracy"] = correct / classed if classed else None
    # The training pass alone (data loading included, evaluation not): what methods' costs
    # are compared by (bench/train_time.py).
    stats["train_pass_seconds"] = time.perf_counter() - started
    stats["train_images_per_s"] = seen / max(1e-9, stats["train_pass_seconds"])
    for i, (total, count) in enumerate(zip(grad_sums, grad_counts, strict=True)):
        stats[f"grad_norm_{i + 1}"] = total / count if count else float("nan")
    return stats


# ------------------------------------------------------------------------------- main


def recorded_args(args: argparse.Namespace) -> dict[str, Any]:
    """The run's flags as plain values. The CLI also puts its handler function on the
    namespace; a checkpoint holding it could not be read back with `weights_only=True`."""
    plain = (str, int, float, bool, list, tuple, type(None))
    return {
        name: [str(v) for v in value]
        if isinstance(value, list)
        else str(value)
        if isinstance(value, Path)
        else value
        for name, value in vars(args).items()
        if isinstance(value, (Path, *plain))
    }


# Called after every epoch with (model, phase, epoch within the phase, epochs done in all).
EpochCallback = Callable[[SignNet, Phase, int, int], None]


def main(args: argparse.Namespace, on_epoch_end: EpochCallback | None = None) -> dict[str, Any]:
    """Train, evaluate on the held-out side, calibrate the open-set threshold, export;
    returns the final metrics. Under torchrun, as one of the run's processes: rank 0 alone
    prints, writes files and calls `on_epoch_end`."""
    with distributed.process_group(args.device) as device:
        return _train(args, device, on_epoch_end)


def _train(
    args: argparse.Namespace, device: torch.device, on_epoch_end: EpochCallback | None
) -> dict[str, Any]:
    started = time.perf_counter()
    if args.reg is None:
        args.reg = "entropy" if args.method == "greedy-dib" else "none"
    if args.method != "greedy-dib" and args.reg != "none":
        raise SystemExit(f"--reg {args.reg} needs --method greedy-dib")
    if args.cache_prefix and (args.method == "sgd" or args.schedule != "sequential"):
        raise SystemExit("--cache-prefix is for the sequential schedule of a greedy method")
    if args.aux_warmup_epochs and (args.method == "sgd" or args.init is None):
        raise SystemExit("--aux-warmup-epochs is for a greedy method's fine-tune (--init)")
    if args.resume and args.out is None:
        raise SystemExit("--resume needs --out: the run folder to continue")
    _check_out(args.out, args.resume)
    if args.module_split is not None:
        try:
            resolve_split(args.arch, args.module_split)
        except ValueError as error:
            raise SystemExit(f"--modules {args.module_split}: {error}") from None
    # Rank 0's name: the processes may not start in the same second.
    args.out = distributed.broadcast(
        args.out or runs_root() / f"{args.method}-seed{args.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    # Where the run folder will be made (given or default), checked now rather than when the
    # data has loaded; nothing is made yet, so a run that stops before then leaves no folder.
    fault = folder_fault(args.out)
    if fault is not None:
        raise SystemExit(f"--out {args.out}: {fault}")
    checkpoint_path = args.out / CHECKPOINT_FILE
    resumed = _read_resumable(checkpoint_path) if args.resume else None
    init = None if args.init is None or resumed else read_init(args.init, args.task, args.arch)
    if init is not None and args.method != "sgd" and init.model.config.cls_head != "aux":
        raise SystemExit(
            f"--init {args.init}: its classification head is {init.model.config.cls_head}, and a "
            "greedy method trains the last aux head as it: fine-tune it with --method sgd"
        )
    args.module_split = module_split_for(args.module_split, init, resumed)
    torch.manual_seed(args.seed)

    with distributed.local_main_first():  # one process per machine generates a synthetic set
        data = load_data(args)
    world = distributed.world_size()
    if args.task == "crops" and not data.split["open_set_train_images"]:
        print(
            "note: no 'unknown sign' or 'no sign' image among the training data (TT100K crops "
            "hold both: their other signs and negative/): the model will not learn to turn a "
            "picture down",
            flush=True,
        )
    print(
        f"data: {data.split['train_images']} train / {data.split['test_images']} test images "
        f"({data.split['kind']}), {data.num_known} classes + unknown sign + no sign; "
        f"device {device}" + (f", {world} processes" if world > 1 else ""),
        flush=True,
    )
    train_loader, test_loader = make_loaders(data, args)

    config = NetConfig(
        arch=args.arch,
        num_classes=len(data.label_names),
        image_size=args.image_size,
        split=args.module_split,
        seg_channels=SCENE_SEG_CHANNELS if args.task == "scenes" else 1,
    )
    # A fine-tune keeps the classification head it starts from (end-to-end SGD of a greedy
    # model: the conv head, not a fresh linear one), as a resumed one keeps the run's.
    cls_head = init.model.config.cls_head if init is not None else None
    if resumed is not None:
        cls_head = resumed["info"]["config"].get("cls_head")
    try:
        model = network_for(args.method, config, cls_head)
    except ValueError as error:  # a resumed run's head that this method does not train
        raise SystemExit(f"{args.out}: {error}: resume with the run's own arguments") from None
    model = model.to(device, memory_format=memory_format_for(device, args.cpu_bf16))
    losses = LossSettings(
        lambda_mask=args.lambda_mask,
        beta=args.beta,
        alpha=args.alpha,
        reg=args.reg,
        pool_to=args.pool_to or None,
        label_smoothing=args.label_smoothing,
        lambda_recon=args.lambda_recon,
    )
    phases = build_phases(
        model,
        args.method,
        losses,
        args.epochs,
        args.head_epochs,
        args.schedule,
        args.aux_warmup_epochs,
    )
    if args.stop_after is not None and args.stop_after not in [p.name for p in phases]:
        raise SystemExit(
            f"--stop-after {args.stop_after}: phases of this run are "
            f"{', '.join(p.name for p in phases)}"
        )

    info = ModelInfo(
        config=model.config,
        class_names=data.label_names,
        dataset=data.dataset,
        task=args.task,
        method=args.method,
        split=data.split,
        data_fingerprint=data.fingerprint,
        command=getattr(args, "command_line", ""),
    )
    if init is not None:
        aux_heads_brought = start_from(model, init)
        if args.method != "sgd" and not aux_heads_brought and not args.aux_warmup_epochs:
            print(
                "the aux heads start fresh, and the modules would first learn from them: "
                "--aux-warmup-epochs 1 trains them alone first (BENCHMARKS.md section 6)",
                flush=True,
            )
    start_phase, start_epoch, history = 0, 0, []
    if resumed is not None:
        _check_resumable(resumed, args, data, phases)
        try:
            model.load_state_dict(resumed["model"])
        except RuntimeError:
            raise SystemExit(
                f"{args.out}: its checkpoint does not fit the network these arguments build "
                "(--arch, --modules, --image-size, --method): resume with the run's own "
                "arguments"
            ) from None
        start_phase, start_epoch = resumed["phase"], resumed["epoch"]
        history = resumed["history"]
        torch.set_rng_state(resumed["torch_rng"])
        if start_phase < len(phases):
            print(f"resuming {args.out} at phase {phases[start_phase].name}, epoch {start_epoch}")
        else:  # stopped (or interrupted) after its last phase, before the model was written
            print(f"resuming {args.out}: training is done; scoring and writing the model")
    callbacks: list[EpochCallback] = []
    if distributed.is_main():  # rank 0 alone writes files, and calls what writes them
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # what access() could not foresee
            raise SystemExit(f"--out {args.out}: cannot make the run folder: {error}") from None
        callbacks += [on_epoch_end] if on_epoch_end is not None else []
        if args.snapshot_every:
            if resumed is None:
                save_snapshot(model, args.out, "init", 0, 0)  # global epoch 0: initial weights
            callbacks.append(snapshot_callback(args.snapshot_every, args.out))

    cache = None
    if args.cache_prefix:
        cache = PrefixCache(train_loader, model, device)
        stored_epochs = max(p.epochs for p in phases if p.stage is not None)
        stored_images = len(train_loader) * train_loader.batch_size * stored_epochs
        gib = stored_images * bytes_per_image(model, args.image_size) / 2**30
        print(f"--cache-prefix: up to {gib:.1f} GiB of host memory for the stored epochs")
    scaler = grad_scaler_for(device)
    epochs_done = len(history)
    for phase_index in range(start_phase, len(phases)):
        phase = phases[phase_index]
        optimizer, scheduler = make_optimizer(phase, args, len(train_loader), phase.epochs)
        first_epoch = 0
        if resumed is not None and phase_index == start_phase and resumed["scaler"]:
            scaler.load_state_dict(resumed["scaler"])  # its scale carries over phases
        if resumed is not None and phase_index == start_phase and resumed["optimizer"]:
            optimizer.load_state_dict(resumed["optimizer"])
            scheduler.load_state_dict(resumed["scheduler"])
            first_epoch = start_epoch
        for epoch in range(first_epoch, phase.epochs):
            epoch_started = time.perf_counter()
            # The data order and augmentation of an epoch depend on (seed, epoch) alone; with
            # the cache, every phase's epoch e is data epoch e, module 1's.
            epoch_loader = train_loader if cache is None else cache
            if cache is not None:
                cache.set_epoch(epoch, phase.stage)
            else:
                train_loader.sampler.set_epoch(epochs_done)
                train_loader.dataset.set_epoch(epochs_done)
            label = (
                f"{phase.name} ({phase_index + 1}/{len(phases)}) epoch {epoch + 1}/{phase.epochs}"
            )
            # Under torchrun, DDP around what the phase trains, for this epoch.
            with distributed.data_parallel(model, phase, losses) as parallel:
                stats = train_one_epoch(
                    model,
                    parallel,
                    optimizer,
                    scheduler,
                    scaler,
                    epoch_loader,
                    device,
                    label,
                    cpu_bf16=args.cpu_bf16,
                )
            test = evaluate(model, test_loader, device, data, phase.stage).compute()
            row = {
                "phase": phase.name,
                "module": "" if phase.stage is None else phase.stage + 1,
                "epoch": epoch + 1,
                "lr": scheduler.get_last_lr()[0],
                **stats,
                "test_accuracy": test["accuracy"],
                "test_rejection_rate": test["rejection_rate"],
                "test_box_iou": test["box_iou"],
                "test_mask_miou": test["mask_miou"],
                "seconds": time.perf_counter() - epoch_started,
            }
            history.append(row)
            epochs_done += 1
            print(
                f"{label}: loss {stats['train_total']:.3f} (ce {stats['train_ce']:.3f} "
                f"mask {stats['train_mask']:.3f} reg {stats['train_reg']:.3f}) "
                f"train acc {_fmt(stats['train_accuracy'])} | test acc {_fmt(test['accuracy'])} "
                f"rejected {_fmt(test['rejection_rate'])} box IoU {_fmt(test['box_iou'])} | "
                f"{row['seconds']:.1f}s, {stats['train_images_per_s']:.0f} img/s",
                flush=True,
            )
            finished_phase = epoch + 1 == phase.epochs
            if distributed.is_main():
                save_atomic(
                    {
                        "format": CHECKPOINT_FORMAT,
                        "model": model.state_dict(),
                        # A finished phase's optimizer is never needed again.
                        "optimizer": None if finished_phase else optimizer.state_dict(),
                        "scheduler": None if finished_phase else scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        # Where to pick up: the next phase once this one is done.
                        "phase": phase_index + 1 if finished_phase else phase_index,
                        "phases": phase_plan(phases),
                        "epoch": 0 if finished_phase else epoch + 1,
                        "history": history,
                        # Dropout on the CPU draws from it (on a GPU from the CUDA generator,
                        # not kept); order and augmentation come from (seed, epoch).
                        "torch_rng": torch.get_rng_state(),
                        "args": recorded_args(args),
                        "info": {k: v for k, v in info.to_dict().items() if k != "path"},
                        "versions": versions(),
                    },
                    checkpoint_path,
                )
            for callback in callbacks:
                callback(model, phase, epoch + 1, epochs_done)
        # The phase's gradients and optimizer state go before the next module's are created;
        # a frozen module keeping its last gradient would also be counted as receiving one.
        optimizer.zero_grad(set_to_none=True)
        del optimizer, scheduler
        if phase.name == args.stop_after and phase_index + 1 < len(phases):
            print(f"stopped after {phase.name}; continue with --resume --out {args.out}")
            return {}
    if cache is not None:
        print(f"--cache-prefix held {cache.bytes_stored() / 2**30:.2f} GiB", flush=True)
        cache.release()

    metrics = final_metrics(model, phases, data, test_loader, device, args)
    metrics["wall_seconds"] = time.perf_counter() - started  # this process only
    metrics["train_seconds"] = sum(row["seconds"] for row in history)  # every session
    metrics["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info.open_set = {"threshold": metrics["threshold"]}
    info.metrics = _summary(metrics)
    if distributed.is_main():
        write_run(args.out, model, info, metrics, history, data.label_names)
    print(json.dumps(info.metrics, indent=2))
    return metrics


def _check_out(out: Path | None, resume: bool) -> None:
    """Refuse a run folder that is a file, or that holds a run when not resuming it: a new run
    there would overwrite its checkpoint and model and leave the rest mixed with its own."""
    if out is None:
        return
    if out.exists() and not out.is_dir():
        raise SystemExit(f"--out {out}: a file, not a run folder")
    if not resume and any((out / name).exists() for name in (CHECKPOINT_FILE, MODEL_FILE)):
        raise SystemExit(
            f"--out {out} holds a run: continue it with --resume, or give another folder"
        )


# What a run learns with, beside its data (the fingerprint), its phases (the plan) and its
# network (the checkpoint must fit it): resumed with other values, its record would name only
# the new ones. Others may change (--workers, --device, --cpu-bf16, --snapshot-every, ...).
_LEARNS_WITH = (
    "reg",
    "beta",
    "alpha",
    "pool_to",
    "lambda_mask",
    "lambda_recon",
    "label_smoothing",
    "cache_prefix",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "balance",
    "warmup_epochs",  # shapes the learning-rate schedule; the phase plan holds epochs alone
)


def _check_resumable(
    resumed: dict[str, Any], args: argparse.Namespace, data: TrainData, phases: list[Phase]
) -> None:
    """Refuse to continue a run with arguments that would make it another run."""
    out = args.out
    then, now = resumed.get("args", {}), recorded_args(args)
    changed = [name for name in _LEARNS_WITH if name in then and then[name] != now.get(name)]
    if changed:
        was = ", ".join(_flag_text(name, then[name]) for name in changed)
        now_given = ", ".join(_flag_text(name, now.get(name)) for name in changed)
        raise SystemExit(
            f"{out} was trained with {was}; these arguments give {now_given}: resume with the "
            "run's own arguments"
        )
    recorded = resumed["info"].get("data_fingerprint")
    if recorded and recorded != data.fingerprint:
        raise SystemExit(
            f"{out} was trained on another split or other data (fingerprint {recorded[:12]}, "
            f"these arguments make {data.fingerprint[:12]}): resume with the run's own --data, "
            "--train-data, --seed and --test-fraction"
        )
    # The checkpoint counts phases by place: another method, schedule, warm-up or number of
    # epochs would pick up at the wrong one (checkpoints before the plan was kept: trust).
    planned = resumed.get("phases", phase_plan(phases))
    if planned != phase_plan(phases):
        raise SystemExit(
            f"{out} was trained in phases {_plan_text(planned)}; these arguments make "
            f"{_plan_text(phase_plan(phases))}: resume with the run's own arguments"
        )
    if resumed["phase"] >= len(phases) and (out / MODEL_FILE).exists():
        raise SystemExit(f"{out} has finished training: nothing to resume")


def evaluate(
    model: SignNet,
    loader: DataLoader,
    device: torch.device,
    data: TrainData,
    stage: int | None = None,
    read: bool = False,
) -> EvalAccumulator:
    """model.evaluate.evaluate_loader; under torchrun, of every process's share together."""
    accumulator = evaluate_loader(
        model, loader, device, data.num_known, data.label_names, stage, read
    )
    return distributed.gather_accumulator(accumulator)


def final_metrics(
    model: SignNet,
    phases: list[Phase],
    data: TrainData,
    test_loader: DataLoader,
    device: torch.device,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The held-out side's metrics at the open-set threshold chosen on it
    (model/open_set.py), and at one chosen on the other half of it (`cross_fitted`), the
    threshold sweep, each collection's and the novel signs' figures,
    all read as a photo is answered (find, then read: model/reading.py), and each greedy
    module's auxiliary heads (a pass over the held-out side each)."""
    read = args.task == "crops"
    accumulator = evaluate(model, test_loader, device, data, read=read)
    threshold = choose_threshold(*accumulator.arrays(), data.num_known)
    metrics = accumulator.compute(threshold)
    metrics["cross_fitted"] = cross_fitted(*accumulator.arrays(), data.num_known)
    metrics["operating_points"] = accumulator.operating_points(THRESHOLD_GRID)

    def score(records: list[SignRecord]) -> dict[str, Any]:
        part = evaluate(model, process_share_loader(records, args), device, data, read=read)
        return _summary(part.compute(threshold))

    if args.task == "crops":
        origins = by_origin(data.test)
        metrics["datasets"] = {origin: score(part) for origin, part in origins.items()}
        flags = novel(data.train, data.test)
        novel_test = [record for record, flag in zip(data.test, flags, strict=True) if flag]
        metrics["novel"] = score(novel_test) if novel_test else None
    # Each module's own auxiliary heads: headline figures only, the full confusion is
    # the final model's.
    metrics["modules"] = {
        phase.name: _summary(evaluate(model, test_loader, device, data, phase.stage).compute())
        for phase in phases
        if phase.stage is not None
    }
    return metrics


@dataclass(frozen=True)
class InitWeights:
    """The weights a fine-tune starts from (--init): a model file's or a checkpoint's."""

    path: Path
    model: SignNet  # the inference network, as the file holds it
    aux: dict[str, torch.Tensor]  # a checkpoint's aux heads; none from a model file


def read_init(path: Path, task: str, arch: str) -> InitWeights:
    """Read --init's file, refusing one of another task or architecture."""
    try:
        source, info, aux = load_for_fine_tuning(path)
    except (FileNotFoundError, ModelFileError) as error:
        raise SystemExit(f"--init: {error}") from None
    if info.task != task or info.config.arch != arch:
        raise SystemExit(
            f"--init {path}: a {info.config.arch} model for task {info.task}, "
            f"not a {arch} for {task}"
        )
    return InitWeights(Path(path), source, aux)


def module_split_for(
    given: str | None, init: InitWeights | None, resumed: dict[str, Any] | None
) -> str:
    """Where the encoder is cut into modules: --modules when given, else where the run being
    resumed or the model fine-tuned from (--init) was cut, whose weights only fit that cut
    (the aux heads sit at its module ends), else the default."""
    if given is not None:
        return given
    if resumed is not None:
        return resumed["info"]["config"].get("split", DEFAULT_SPLIT)
    if init is not None:
        return init.model.config.split
    return DEFAULT_SPLIT


def start_from(model: SignNet, init: InitWeights) -> int:
    """Load the fine-tune's starting weights into `model`: every inference weight must fit.
    A checkpoint's aux heads come along where `model` has them in the same shapes: a
    Greedy-DIB module learns only from its own aux heads, and fresh ones first unsettle the
    module they train (BENCHMARKS.md section 6, "256-px tiles"). A model file does not keep
    them, so they start as initialised. Returns how many aux-head tensors came along."""
    fault = f"--init {init.path}: its weights do not fit this network"
    if init.model.config.split != model.config.split:
        fault += (
            f" (it is cut into modules as {init.model.config.split!r}, this run as "
            f"{model.config.split!r}: leave --modules out to keep its cut)"
        )
    state = init.model.state_dict()
    if init.model.config.seg_channels < model.config.seg_channels:
        # A scene model from before the core maps: each new map starts as a copy of its sign
        # map (a core is a sign shrunk), which trains faster than a fresh head.
        maps = init.model.config.seg_channels
        print(f"{init.path} draws {maps} map(s): its sign map seeds the rest")
        for name in ("seg_head.0.weight", "seg_head.0.bias"):
            state[name] = state[name][:1].repeat_interleave(model.config.seg_channels, dim=0)
    own = model.state_dict()
    fitting = {k: v for k, v in init.aux.items() if k in own and own[k].shape == v.shape}
    state.update(fitting)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a tensor of another shape (other classes, image size)
        raise SystemExit(f"{fault} ({str(error).splitlines()[-1].strip()})") from None
    if unexpected or any(not name.startswith(AUX_PREFIXES) for name in missing):
        raise SystemExit(fault)
    heads = f", aux heads included ({len(fitting)} tensors)" if fitting else ""
    print(f"starting from the weights of {init.path}{heads}", flush=True)
    return len(fitting)


def _read_resumable(checkpoint_path: Path) -> dict[str, Any]:
    if not checkpoint_path.is_file():
        raise SystemExit(f"{checkpoint_path}: no checkpoint to resume (has the run started?)")
    try:
        state = load_file(checkpoint_path)
    except Exception as error:  # torch reports a damaged file with many exception types
        raise SystemExit(f"{checkpoint_path}: not a readable checkpoint ({error})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise SystemExit(f"{checkpoint_path} is not a GreedySign training checkpoint")
    return state


def phase_plan(phases: list[Phase]) -> list[tuple[str, int]]:
    """What a checkpoint's phase index counts: each phase's name and epochs, in order."""
    return [(phase.name, phase.epochs) for phase in phases]


def _flag_text(name: str, value: Any) -> str:
    flag = f"--{name.replace('_', '-')}"
    if isinstance(value, bool):  # a switch
        return flag if value else f"no {flag}"
    return f"{flag} {value}"


def _plan_text(plan: list[tuple[str, int]]) -> str:
    return ", ".join(f"{name} ({epochs} epoch{'s' * (epochs != 1)})" for name, epochs in plan)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


SUMMARY_KEYS = (
    "images",
    "accuracy",
    "macro_accuracy",
    "rejection_rate",
    "threshold",
    "box_iou",
    "mask_miou",
    "mask_iou",
    "train_seconds",
    "datasets",
    "novel",
)


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline figures stored in the exported model (and shown by /v1/model)."""
    return {key: metrics[key] for key in SUMMARY_KEYS if key in metrics}


def write_run(
    run_dir: Path,
    model: SignNet,
    info: ModelInfo,
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    class_names: list[str],
) -> None:
    """model.pt, metrics.json, history.csv and plots; then a crop model's run becomes the
    newest."""
    from model.plots import plot_confusion, plot_gradients, plot_history

    export_model(model, info, run_dir / MODEL_FILE)
    (run_dir / "metrics.json").write_text(
        json.dumps(
            {
                "method": info.method,
                "split": info.split,
                "data_fingerprint": info.data_fingerprint,
                "config": asdict(info.config),
                **metrics,
            },
            indent=2,
        )
        + "\n"
    )
    with open(run_dir / "history.csv", "w", newline="") as file:
        columns = list(dict.fromkeys(key for row in history for key in row))
        writer = csv.DictWriter(file, columns)
        writer.writeheader()
        writer.writerows(history)
    plot_history(history, run_dir / "curves.png")
    plot_gradients(history, run_dir / "gradients.png")
    plot_confusion(metrics["confusion"], class_names, run_dir / "confusion.png")
    if info.task == "crops":
        # The newest run is what eval, predict and the service read signs with; a scene model
        # is given to them by name.
        mark_latest(run_dir)
    print(f"run written to {run_dir}")
