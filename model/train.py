"""Training: Greedy-DIB (layer-wise), greedy cross-entropy, or end-to-end SGD.

In the shape of torchvision's classification reference: `load_data()`, `train_one_epoch()`,
`evaluate()`, `main(args)`; its `get_args_parser()` is in model/options.py. The algorithm
itself is in model/greedy.py.

A run folder holds `checkpoint.pth` (rewritten atomically after every epoch; `--resume`
continues at the phase and epoch it records), `model.pt` (the exported model), `metrics.json`,
`history.csv` (one row per phase and epoch, with each module's first-layer gradient norm) and
the plots.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import resource
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from data.dataset import SignDataset
from data.load import load_dataset
from data.records import SignRecord
from data.split import train_test_split
from model.checkpoint import (
    CHECKPOINT_FORMAT,
    ModelInfo,
    export_model,
    load_file,
    save_atomic,
    versions,
)
from model.device import autocast_for, resolve_device
from model.greedy import (
    LossSettings,
    Phase,
    build_phases,
    first_layer_weights,
    network_for,
)
from model.metrics import EvalAccumulator
from model.network import NetConfig, SignNet
from model.runs import CHECKPOINT_FILE, MODEL_FILE, mark_latest, runs_root

SYNTHETIC_CACHE = Path(".cache")


# ---------------------------------------------------------------------------------- data


@dataclass
class TrainData:
    train: list[SignRecord]
    test: list[SignRecord]
    dataset: str
    class_names: list[str]
    split: dict[str, Any]
    fingerprint: str


def load_data(args: argparse.Namespace) -> TrainData:
    """Read the dataset and cut the leakage-free split (the official one, if it has one)."""
    root = args.data if args.data is not None else synthetic_dataset(args.synthetic_per_class)
    index = load_dataset(root)
    train, test = train_test_split(index, test_fraction=args.test_fraction, seed=args.seed)
    if not train or not test:
        # Caught here rather than as an empty evaluation after the first module's epochs.
        raise SystemExit(
            f"{root}: the split leaves {len(train)} training and {len(test)} test images; "
            "a class needs two distinct images before one can go to the test side"
        )
    official = index.layout == "official" and test[0].split == "test"
    split = {
        "kind": "official, leakage removed" if official else "leakage-free stratified",
        "test_fraction": None if official else args.test_fraction,
        "seed": None if official else args.seed,
        "train_images": len(train),
        "test_images": len(test),
        "data": str(root),
    }
    return TrainData(train, test, index.name, index.class_names, split, fingerprint(train, test))


def synthetic_dataset(per_class: int, seed: int = 0) -> Path:
    """The synthetic CTSRD set, generated on first use and kept in .cache/."""
    from data.synth import generate_synthetic

    root = SYNTHETIC_CACHE / f"synthetic-ctsrd-{per_class}pc-seed{seed}"
    if not (root / "annotations.txt").is_file():
        print(f"no --data given: generating the synthetic CTSRD set into {root}", flush=True)
        generate_synthetic(root, per_class=per_class, seed=seed)
    return root


def fingerprint(train: list[SignRecord], test: list[SignRecord]) -> str:
    """Hash of what was trained and tested on: content, label and box of every image."""
    digest = hashlib.sha1()
    for side, records in (("train", train), ("test", test)):
        for record in sorted(records, key=lambda r: r.sha1):
            digest.update(f"{side}:{record.sha1}:{record.class_id}:{record.box}\n".encode())
    return digest.hexdigest()


def make_loaders(data: TrainData, args: argparse.Namespace) -> tuple[DataLoader, DataLoader]:
    train_set = SignDataset(data.train, args.image_size, train=True)
    test_set = SignDataset(data.test, args.image_size, train=False)
    generator = torch.Generator().manual_seed(args.seed)
    common = {"num_workers": args.workers, "persistent_workers": args.workers > 0}
    train_loader = DataLoader(
        train_set, args.batch_size, shuffle=True, drop_last=True, generator=generator, **common
    )
    test_loader = DataLoader(test_set, args.batch_size * 2, shuffle=False, **common)
    return train_loader, test_loader


# ------------------------------------------------------------------------- optimisation


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(phase: Phase, args: argparse.Namespace, steps_per_epoch: int, epochs: int):
    parameters = [p for p in phase.parameters() if p.requires_grad]
    if args.optimizer == "adamw":
        optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=args.weight_decay)
    else:
        optimizer = torch.optim.SGD(
            parameters,
            lr=args.lr,
            momentum=args.momentum,
            weight_decay=args.weight_decay,
            nesterov=True,
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
) -> dict[str, float]:
    """One pass over the training set for `phase`; the mean of each loss term, the training
    accuracy, and the mean first-layer gradient norm of every stage (NaN where no gradient
    reached it: the frozen and the not-yet-trained modules of greedy training)."""
    model.freeze_stages(phase.frozen)
    model.train()
    first_layers = first_layer_weights(model)
    sums: dict[str, float] = {}
    grad_sums = [0.0] * len(first_layers)
    grad_counts = [0] * len(first_layers)
    correct = seen = batches = 0
    progress = tqdm(loader, desc=description, leave=False, disable=not sys.stderr.isatty())
    for images, masks, labels, _boxes in progress:
        images, masks, labels = images.to(device), masks.to(device), labels.to(device)
        with autocast_for(device):
            terms, class_logits, _mask_logits = phase.step(images, masks, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms["total"]).backward()
        scaler.unscale_(optimizer)
        for i, weight in enumerate(first_layers):
            if weight.grad is not None:
                grad_sums[i] += weight.grad.norm().item()
                grad_counts[i] += 1
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()

        batches += 1
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + value.item()
        correct += (class_logits.argmax(dim=1) == labels).sum().item()
        seen += labels.shape[0]
        progress.set_postfix(loss=f"{sums['total'] / batches:.3f}", acc=f"{correct / seen:.3f}")
    stats = {f"train_{name}": value / max(1, batches) for name, value in sums.items()}
    stats["train_accuracy"] = correct / max(1, seen)
    for i, (total, count) in enumerate(zip(grad_sums, grad_counts, strict=True)):
        stats[f"grad_norm_{i + 1}"] = total / count if count else float("nan")
    return stats


@torch.inference_mode()
def evaluate(
    model: SignNet,
    loader: DataLoader,
    device: torch.device,
    class_names: list[str],
    stage: int | None = None,
) -> dict[str, Any]:
    """Metrics of the full network, or of module `stage`'s auxiliary heads."""
    was_training = model.training
    model.eval()
    accumulator = EvalAccumulator(model.config.num_classes, class_names)
    for images, masks, labels, boxes in loader:
        images = images.to(device)
        with autocast_for(device):
            if stage is None:
                class_logits, mask_logits = model(images)
            else:
                t_k = model.stage_input(stage + 1, images)
                class_logits, mask_logits = model.aux_forward(stage, t_k, images.shape[-2:])
        accumulator.update(class_logits.float(), mask_logits.float(), labels, masks, boxes)
    model.train(was_training)
    return accumulator.compute()


# ------------------------------------------------------------------------------- main


def recorded_args(args: argparse.Namespace) -> dict[str, Any]:
    """The run's flags as plain values. The CLI also puts its handler function on the
    namespace; a checkpoint holding it could not be read back with `weights_only=True`."""
    plain = (str, int, float, bool, list, tuple, type(None))
    return {
        name: str(value) if isinstance(value, Path) else value
        for name, value in vars(args).items()
        if isinstance(value, (Path, *plain))
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Train, evaluate on the held-out side, export; returns the final metrics."""
    started = time.perf_counter()
    if args.reg is None:
        args.reg = "entropy" if args.method == "greedy-dib" else "none"
    if args.method != "greedy-dib" and args.reg != "none":
        raise SystemExit(f"--reg {args.reg} needs --method greedy-dib")
    args.out = args.out or runs_root() / (
        f"{args.method}-seed{args.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)

    data = load_data(args)
    print(
        f"data: {data.split['train_images']} train / {data.split['test_images']} test images "
        f"({data.split['kind']}), {len(data.class_names)} classes; device {device}",
        flush=True,
    )
    train_loader, test_loader = make_loaders(data, args)

    config = NetConfig(
        arch=args.arch,
        num_classes=len(data.class_names),
        image_size=args.image_size,
        split=args.split,
    )
    model = network_for(args.method, config).to(device)
    losses = LossSettings(
        lambda_mask=args.lambda_mask,
        beta=args.beta,
        alpha=args.alpha,
        reg=args.reg,
        pool_to=args.pool_to or None,
        label_smoothing=args.label_smoothing,
    )
    phases = build_phases(model, args.method, losses)
    if args.stop_after is not None and args.stop_after not in [p.name for p in phases]:
        raise SystemExit(
            f"--stop-after {args.stop_after}: phases of this run are "
            f"{', '.join(p.name for p in phases)}"
        )

    info = ModelInfo(
        config=model.config,
        class_names=data.class_names,
        dataset=data.dataset,
        method=args.method,
        split=data.split,
        data_fingerprint=data.fingerprint,
        command=shlex.join(["greedysign", "train", *sys.argv[2:]])
        if sys.argv[1:2] == ["train"]
        else "",
    )
    checkpoint_path = args.out / CHECKPOINT_FILE
    start_phase, start_epoch, history, resumed = 0, 0, [], None
    if args.resume:
        resumed = load_file(checkpoint_path)
        if resumed.get("format") != CHECKPOINT_FORMAT:
            raise SystemExit(f"{checkpoint_path} is not a GreedySign training checkpoint")
        model.load_state_dict(resumed["model"])
        start_phase, start_epoch = resumed["phase"], resumed["epoch"]
        history = resumed["history"]
        print(f"resuming {args.out} at phase {phases[start_phase].name}, epoch {start_epoch}")
    args.out.mkdir(parents=True, exist_ok=True)

    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    for phase_index in range(start_phase, len(phases)):
        phase = phases[phase_index]
        epochs = args.epochs if phase.name != "heads" else (args.head_epochs or args.epochs)
        optimizer, scheduler = make_optimizer(phase, args, len(train_loader), epochs)
        first_epoch = 0
        if resumed is not None and phase_index == start_phase and resumed["optimizer"]:
            optimizer.load_state_dict(resumed["optimizer"])
            scheduler.load_state_dict(resumed["scheduler"])
            scaler.load_state_dict(resumed["scaler"])
            first_epoch = start_epoch
        for epoch in range(first_epoch, epochs):
            epoch_started = time.perf_counter()
            label = f"{phase.name} ({phase_index + 1}/{len(phases)}) epoch {epoch + 1}/{epochs}"
            stats = train_one_epoch(
                model, phase, optimizer, scheduler, scaler, train_loader, device, label
            )
            test = evaluate(model, test_loader, device, data.class_names, phase.stage)
            row = {
                "phase": phase.name,
                "module": "" if phase.stage is None else phase.stage + 1,
                "epoch": epoch + 1,
                "lr": scheduler.get_last_lr()[0],
                **stats,
                "test_accuracy": test["accuracy"],
                "test_box_iou": test["box_iou"],
                "test_mask_miou": test["mask_miou"],
                "seconds": time.perf_counter() - epoch_started,
            }
            history.append(row)
            print(
                f"{label}: loss {stats['train_total']:.3f} (ce {stats['train_ce']:.3f} "
                f"mask {stats['train_mask']:.3f} reg {stats['train_reg']:.3f}) "
                f"train acc {stats['train_accuracy']:.3f} | test acc {test['accuracy']:.3f} "
                f"box IoU {test['box_iou']:.3f} | {row['seconds']:.1f}s",
                flush=True,
            )
            finished_phase = epoch + 1 == epochs
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
                    "epoch": 0 if finished_phase else epoch + 1,
                    "history": history,
                    "args": recorded_args(args),
                    "info": {k: v for k, v in info.to_dict().items() if k != "path"},
                    "versions": versions(),
                },
                checkpoint_path,
            )
        # The phase's gradients and optimizer state go before the next module's are created;
        # a frozen module keeping its last gradient would also be counted as receiving one.
        optimizer.zero_grad(set_to_none=True)
        del optimizer, scheduler
        if phase.name == args.stop_after:
            print(f"stopped after {phase.name}; continue with --resume --out {args.out}")
            return {}

    metrics = evaluate(model, test_loader, device, data.class_names)
    # Each module's own auxiliary heads: headline figures only, the full confusion is
    # the final model's.
    metrics["modules"] = {
        phase.name: _summary(evaluate(model, test_loader, device, data.class_names, phase.stage))
        for phase in phases
        if phase.stage is not None
    }
    metrics["wall_seconds"] = time.perf_counter() - started  # this process only
    metrics["train_seconds"] = sum(row["seconds"] for row in history)  # every session
    metrics["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info.metrics = _summary(metrics)
    write_run(args.out, model, info, metrics, history, data.class_names)
    print(json.dumps(info.metrics, indent=2))
    return metrics


SUMMARY_KEYS = (
    "images",
    "accuracy",
    "macro_accuracy",
    "box_iou",
    "mask_miou",
    "mask_iou",
    "train_seconds",
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
    """model.pt, metrics.json, history.csv and plots; then the run becomes the newest."""
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
    mark_latest(run_dir)
    print(f"run written to {run_dir}")
