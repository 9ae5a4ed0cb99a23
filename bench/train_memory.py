"""Training memory of Greedy-DIB against end-to-end SGD, measured for one training step.

For SGD and for every Greedy-DIB phase (each module k, then the heads), in a fresh process
each, this runs real training steps at the given batch and image size and measures:

- saved: bytes autograd saves for the backward pass, counted with
  torch.autograd.graph.saved_tensors_hooks (unique storages; parameters excluded);
- weights: bytes of the parameters the forward pass needs (the frozen prefix included);
- grads + optimizer: bytes of the gradients and optimizer state of the trained parameters;
- rss: the process's peak resident memory, and its growth during the steps (peak minus the
  resident memory after the model and batch were built).

The training memory of a phase is saved + weights + grads + optimizer; the Greedy-DIB peak is
its heaviest phase. Printed side by side, with the ratio greedy-peak / sgd-peak.

    .venv/bin/python bench/train_memory.py                      # default split (K = 4)
    .venv/bin/python bench/train_memory.py --splits balanced blocks k2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

MB = 1024 * 1024


def measure(method: str, split: str, phase_index: int, args: argparse.Namespace) -> dict:
    """Runs in the child process: two training steps of one phase, with everything counted."""
    import torch

    from model.greedy import LossSettings, build_phases, network_for
    from model.network import NetConfig
    from model.train import make_optimizer

    torch.manual_seed(0)
    config = NetConfig(arch=args.arch, image_size=args.image_size, split=split)
    model = network_for(method, config)
    phase = build_phases(model, method, LossSettings(), schedule=args.schedule)[phase_index]
    size, n = args.image_size, args.batch_size
    images = torch.randn(n, 3, size, size)
    masks = (torch.rand(n, 1, size, size) > 0.5).float()
    labels = torch.randint(0, config.num_classes, (n,))
    optimizer, _ = make_optimizer(phase, args, steps_per_epoch=10, epochs=1)
    model.freeze_stages(phase.frozen)
    model.train()
    rss_before = _current_rss()

    parameter_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameter_storages:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    mask_known = torch.ones(n, dtype=torch.bool)
    peak_saved = 0
    for _ in range(args.steps):
        optimizer.zero_grad(set_to_none=True)
        local_losses = phase.step(images, masks, labels, mask_known)
        while True:
            # What one local loss saves for backward; it is freed by that backward, before
            # the next local loss's forward pass runs (model/greedy.py).
            saved.clear()
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                local = next(local_losses, None)
            if local is None:
                break
            peak_saved = max(peak_saved, sum(saved.values()))
            local.terms["total"].backward()
        optimizer.step()

    trained = [p for p in phase.parameters() if p.requires_grad]
    trained_ids = {id(p) for p in trained}
    needed = phase.parameters_read()
    return {
        "method": method,
        "split": split,
        "phase": phase.name,
        "saved": peak_saved,
        "weights": sum(p.numel() * p.element_size() for p in needed),
        "grads": sum(p.grad.numel() * p.grad.element_size() for p in trained if p.grad is not None),
        "optimizer": sum(
            value.numel() * value.element_size()
            for state in optimizer.state.values()
            for value in state.values()
            if torch.is_tensor(value)
        ),
        "trained_parameters": sum(p.numel() for p in trained),
        "frozen_parameters_used": sum(p.numel() for p in needed if id(p) not in trained_ids),
        "rss_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_growth": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before,
    }


def _current_rss() -> int:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize()


def run_child(method: str, split: str, phase_index: int, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        f"{method}:{split}:{phase_index}",
        "--arch",
        args.arch,
        "--batch-size",
        str(args.batch_size),
        "--image-size",
        str(args.image_size),
        "--steps",
        str(args.steps),
        "--schedule",
        args.schedule,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def training_bytes(row: dict) -> int:
    return row["saved"] + row["weights"] + row["grads"] + row["optimizer"]


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'method':<11}{'split':<10}{'phase':<9}{'saved':>9}{'weights':>9}{'grads':>9}"
        f"{'optim':>9}{'total':>9}{'rss pk':>9}{'rss +':>9}   (MB)"
    )
    print(header)
    for row in rows:
        print(
            f"{row['method']:<11}{row['split']:<10}{row['phase']:<9}"
            f"{row['saved'] / MB:>9.1f}{row['weights'] / MB:>9.1f}{row['grads'] / MB:>9.1f}"
            f"{row['optimizer'] / MB:>9.1f}{training_bytes(row) / MB:>9.1f}"
            f"{row['rss_peak'] / MB:>9.0f}{row['rss_growth'] / MB:>9.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument(
        "--splits",
        nargs="+",
        default=["balanced"],
        help="split names or explicit splits (model/splits.py), e.g. balanced blocks "
        "stem+layer1,layer2+layer3,layer4",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=2,
        help="steps per measurement (optimizer state exists after the first)",
    )
    parser.add_argument(
        "--schedules",
        nargs="+",
        default=["sequential"],
        choices=("sequential", "simultaneous"),
        help="greedy schedules to measure (model/greedy.py)",
    )
    parser.add_argument("--schedule", default="sequential", help=argparse.SUPPRESS)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    # The optimizer as training builds it by default (AdamW: two state tensors per parameter).
    from model.options import get_args_parser

    training_defaults = get_args_parser().parse_args([])
    for knob in ("optimizer", "lr", "momentum", "weight_decay", "warmup_epochs"):
        setattr(args, knob, getattr(training_defaults, knob))

    if args.child:
        method, split, phase_index = args.child.split(":")
        print(json.dumps(measure(method, split, int(phase_index), args)))
        return

    from model.splits import resolve_split

    print(
        f"one training step, {args.arch}, batch {args.batch_size}, "
        f"{args.image_size}x{args.image_size}, {args.optimizer} (the training default)\n"
    )
    sgd = run_child("sgd", "balanced", 0, args)
    rows = [sgd]
    summary = []
    for schedule in args.schedules:
        args.schedule = schedule
        for split in args.splits:
            K = len(resolve_split(args.arch, split))
            phases = K + 1 if schedule == "sequential" else 1  # modules then heads, or one
            greedy = [run_child("greedy-dib", split, i, args) for i in range(phases)]
            rows += greedy
            peak = max(greedy, key=training_bytes)
            rss_peak = max(greedy, key=lambda row: row["rss_growth"])
            summary.append((f"{split} {schedule}", K, peak, rss_peak))
    print_table(rows)
    print()
    for split, K, peak, rss_peak in summary:
        print(
            f"split {split} (K={K}): greedy peak {training_bytes(peak) / MB:.1f} MB "
            f"({peak['phase']}) / sgd {training_bytes(sgd) / MB:.1f} MB = "
            f"{training_bytes(peak) / training_bytes(sgd):.2f};  "
            f"rss growth {rss_peak['rss_growth'] / MB:.0f} / {sgd['rss_growth'] / MB:.0f} MB "
            f"= {rss_peak['rss_growth'] / sgd['rss_growth']:.2f}"
        )


if __name__ == "__main__":
    main()
