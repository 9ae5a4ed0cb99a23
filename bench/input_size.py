"""Input size by measurement: accuracy of the same recipe at several sizes (from run folders
trained with `greedysign train --image-size S`), beside what each size costs on this machine
(training images/s of a full step with its data pipeline excluded, inference images/s).

    for s in 32 48 64; do .venv/bin/greedysign train --method sgd --epochs 4 --image-size $s \\
        --data ../shared/data/ctsrd-real --data ../shared/data/tt100k-crops \\
        --out runs/size/sgd-$s; done
    .venv/bin/python bench/input_size.py runs/size/sgd-32 runs/size/sgd-48 runs/size/sgd-64
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from model.greedy import LossSettings, build_phases, network_for
from model.network import NetConfig


def step_rate(size: int, batch: int, seconds: float) -> tuple[float, float]:
    """(training images/s of SGD steps, inference images/s) at size x size, random inputs."""
    torch.manual_seed(0)
    model = network_for("sgd", NetConfig(image_size=size, num_classes=60))
    (phase,) = build_phases(model, "sgd", LossSettings(reg="none"))
    optimizer = torch.optim.AdamW(model.parameters())
    images = torch.randn(batch, 3, size, size)
    masks = (torch.rand(batch, 1, size, size) > 0.5).float()
    labels = torch.randint(0, 60, (batch,))
    known = torch.ones(batch, dtype=torch.bool)

    def train_step() -> None:
        optimizer.zero_grad()
        for local in phase.step(images, masks, labels, known):
            local.terms["total"].backward()
        optimizer.step()

    model.train()
    training = _rate(train_step, batch, seconds)
    model.eval()
    with torch.inference_mode():
        inference = _rate(lambda: model(images), batch, seconds)
    return training, inference


def _rate(step, batch: int, seconds: float) -> float:
    step()  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        done += batch
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(
        "| size | accuracy | TSRD | TT100K | rejected | box IoU | train img/s | infer img/s |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    for run in args.runs:
        metrics = json.loads((run / "metrics.json").read_text())
        size = metrics["config"]["image_size"]
        parts = metrics.get("datasets", {})
        training, inference = step_rate(size, args.batch_size, args.seconds)
        cells = [
            metrics["accuracy"],
            parts.get("tsrd", {}).get("accuracy"),
            parts.get("tt100k", {}).get("accuracy"),
            metrics["rejection_rate"],
            metrics["box_iou"],
        ]
        shown = " | ".join("—" if c is None else f"{100 * c:.1f}" for c in cells)
        print(f"| {size} | {shown} | {training:.0f} | {inference:.0f} |", flush=True)


if __name__ == "__main__":
    main()
