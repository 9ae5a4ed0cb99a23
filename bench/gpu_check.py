"""GPU check of training and of the service's model path: fp16 against fp32, throughput, memory.

    .venv/bin/python bench/gpu_check.py [--model RUN] [--images 512] [--seconds 5] [--train-only]

On a CUDA device:
0. training: images/s of a timed training step (model/train.py's train_one_epoch over one
   fixed random batch, as training runs on this GPU: bf16 autocast where the GPU has it, else
   fp16 with a GradScaler; channels_last) for end-to-end SGD, one greedy-dib module of the
   sequential schedule and the greedy-dib simultaneous schedule, with peak GPU memory;
1. agreement: the same images through the model in fp32 and under fp16 autocast (what the
   service runs): same top-1 class on >= 99 % of them (exit code 1 otherwise), plus the
   largest confidence difference and the mean IoU of the two masks;
2. raw throughput per batch size, fp32 and fp16, with peak GPU memory (allocated by torch);
3. engine throughput (decode + dynamic batching, no HTTP) and service throughput (uvicorn
   on loopback, as bench/service_load.py measures it), fp16, side by side;
4. scene detection at a 1280x720 frame, stage by stage, as bench/detect_speed.py measures
   it (the shipped scene model, or --scene-model; random weights when there is none), with
   the mirrored pass (the default on a GPU) and without it.
Without a CUDA device it says so and exits with code 0: there is nothing to check.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import detect_speed
import numpy as np
import torch
from service_load import (
    drive_closed_loop,
    load_images,
    measure_engine,
    predict_request,
    running_service,
)

from model.detect import SHIPPED_SCENE_MODEL, DetectConfig
from model.device import grad_scaler_for, memory_format_for, resolve_device, training_dtype
from model.greedy import LossSettings, build_phases, network_for
from model.inference import Prediction, Predictor
from model.network import NetConfig
from model.options import get_args_parser as training_flags
from model.runs import resolve_model
from model.train import make_optimizer, train_one_epoch
from service.decode import ImageLimits, PreparedImage, prepare_image

AGREEMENT_BAR = 0.99
# (name, method, schedule, phase): the training steps timed.
TRAINING_STEPS = (
    ("sgd (end to end)", "sgd", "sequential", 0),
    ("greedy-dib module1, sequential", "greedy-dib", "sequential", 0),
    ("greedy-dib, simultaneous", "greedy-dib", "simultaneous", 0),
)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=add_help)
    parser.add_argument("--model", help="model file or run folder (default: resolve_model())")
    parser.add_argument("--scene-model", help="scene model (default: the shipped one, if any)")
    parser.add_argument("--device", default="cuda", help="a CUDA device (cuda, cuda:1, ...)")
    parser.add_argument("--images", type=int, default=512, help="images for the agreement")
    parser.add_argument("--batch-sizes", default="1,8,16,32,64")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each timing")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--queue-size", type=int, default=256)
    parser.add_argument("--mask-format", default="png", choices=("png", "rle", "none"))
    parser.add_argument("--train-batch", type=int, default=64, help="training batch size")
    parser.add_argument("--train-size", type=int, default=64, help="training image size")
    parser.add_argument("--train-steps", type=int, default=30, help="timed training steps")
    parser.add_argument(
        "--train-only", action="store_true", help="time the training steps, nothing else"
    )
    # What bench/service_load.py's engine and service read: the service's own defaults.
    parser.set_defaults(scene_long_side=DetectConfig().long_side, scene_bf16=None)
    return parser


def training_throughput(
    method: str, schedule: str, phase_index: int, args: argparse.Namespace
) -> tuple[float, float]:
    """Training images/s of one phase, and peak allocated GPU memory (MiB), on one fixed
    random batch (the data pipeline is left out: this is the GPU's rate)."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = NetConfig(image_size=args.train_size)
    model = network_for(method, config).to(device, memory_format=memory_format_for(device))
    reg = "entropy" if method == "greedy-dib" else "none"
    phase = build_phases(model, method, LossSettings(reg=reg), schedule=schedule)[phase_index]
    optimizer, scheduler = make_optimizer(phase, training_flags().parse_args([]), 1000, 1)
    scaler = grad_scaler_for(device)
    generator = torch.Generator().manual_seed(0)
    n, size = args.train_batch, args.train_size
    batch = (
        torch.randn(n, 3, size, size, generator=generator),
        (torch.rand(n, 1, size, size, generator=generator) > 0.7).float(),
        torch.randint(0, config.num_classes, (n,), generator=generator),
        torch.zeros(n, 4),
        torch.ones(n, dtype=torch.bool),
    )
    step = (model, phase, optimizer, scheduler, scaler)
    train_one_epoch(*step, [batch] * 3, device, "warm-up")  # cudnn picks its algorithms
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    stats = train_one_epoch(*step, [batch] * args.train_steps, device, "timed")
    return stats["train_images_per_s"], torch.cuda.max_memory_allocated(device) / 2**20


def report_training(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    dtype = str(training_dtype(device)).removeprefix("torch.")
    print(
        f"training on {torch.cuda.get_device_name(device)}: {dtype} autocast, channels_last, "
        f"batch {args.train_batch} at {args.train_size} px, {args.train_steps} steps"
    )
    print("  phase                                train img/s   peak MiB")
    for name, method, schedule, phase_index in TRAINING_STEPS:
        rate, memory = training_throughput(method, schedule, phase_index, args)
        print(f"  {name:<36} {rate:11.0f}   {memory:8.0f}")
    torch.cuda.empty_cache()


def predict_all(predictor: Predictor, prepared: list[PreparedImage], batch: int) -> list:
    predictions: list[Prediction] = []
    for start in range(0, len(prepared), batch):
        group = prepared[start : start + batch]
        predictions += predictor.predict_batch(
            torch.stack([p.tensor for p in group]), [p.size for p in group]
        )
    return predictions


def agreement(fp32: list[Prediction], fp16: list[Prediction]) -> dict:
    pairs = list(zip(fp32, fp16, strict=True))
    ious = []
    for a, b in pairs:
        union = np.logical_or(a.mask, b.mask).sum()
        ious.append(np.logical_and(a.mask, b.mask).sum() / union if union else 1.0)
    return {
        "images": len(pairs),
        "top1_agreement": float(np.mean([a.class_id == b.class_id for a, b in pairs])),
        "max_confidence_diff": max(abs(a.confidence - b.confidence) for a, b in pairs),
        "mask_iou": float(np.mean(ious)),
    }


def raw_throughput(predictor: Predictor, prepared: list[PreparedImage], batch: int, seconds: float):
    """Images/s and peak allocated GPU memory (MiB) of predict_batch at one batch size."""
    group = (prepared * (batch // len(prepared) + 1))[:batch]
    tensors, sizes = torch.stack([p.tensor for p in group]), [p.size for p in group]
    predictor.predict_batch(tensors, sizes)  # cudnn picks its algorithms for this shape
    torch.cuda.reset_peak_memory_stats(predictor.device)
    images, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        predictor.predict_batch(tensors, sizes)  # returns CPU results: synchronised
        images += batch
    rate = images / (time.perf_counter() - started)
    return rate, torch.cuda.max_memory_allocated(predictor.device) / 2**20


def main(args: argparse.Namespace) -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: torch.cuda.is_available() is False, so there is nothing to check")
        return 0
    try:
        device = resolve_device(args.device)
        if device.type != "cuda":
            raise ValueError(f"--device {args.device}: the check is of a CUDA device")
    except (ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.device = str(device)  # "auto" named: the steps below build torch devices from it
    report_training(args)
    if args.train_only:
        return 0
    # The reference is fp32, and so is every fp32 figure below (the fp32 throughput column,
    # fp16/fp32): without this, Ampere and later run fp32 convolutions in TF32.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        model = resolve_model(args.model)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    images, source = load_images(args.images)
    fp32 = Predictor.load(model, args.device, fp16=False)
    fp16 = Predictor.load(model, args.device)
    limits = ImageLimits(max_pixels=10**8)
    prepared = [prepare_image(data, limits, fp32.preprocess) for data in images]
    print(f"model {model} on {torch.cuda.get_device_name(fp16.device)}; {source}")

    result = agreement(predict_all(fp32, prepared, 64), predict_all(fp16, prepared, 64))
    passed = result["top1_agreement"] >= AGREEMENT_BAR
    print(
        f"\nfp16 vs fp32 on {result['images']} images: same top-1 on "
        f"{100 * result['top1_agreement']:.2f} % (bar {100 * AGREEMENT_BAR:.0f} %: "
        f"{'pass' if passed else 'FAIL'}), largest confidence difference "
        f"{result['max_confidence_diff']:.4f}, mask IoU {result['mask_iou']:.4f}"
    )

    print("\nraw predict_batch      fp32 img/s  peak MiB    fp16 img/s  peak MiB   fp16/fp32")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        rate32, memory32 = raw_throughput(fp32, prepared, batch, args.seconds)
        rate16, memory16 = raw_throughput(fp16, prepared, batch, args.seconds)
        print(
            f"  batch {batch:>3}           {rate32:10.0f}  {memory32:8.0f}    {rate16:10.0f}  "
            f"{memory16:8.0f}   {rate16 / rate32:9.2f}"
        )
    del fp32

    engine = asyncio.run(measure_engine(fp16, images, args))
    del fp16
    torch.cuda.empty_cache()  # the service process needs the memory
    with running_service(model, args) as (port, _url):
        requests = [predict_request(image, {"mask_format": args.mask_format}) for image in images]
        service = asyncio.run(drive_closed_loop(port, requests, args.clients, args.seconds))
    print(f"\n{engine.line('engine')}\n{service.line('service')}")
    print(f"service / engine = {service.throughput() / engine.throughput():.2f}")

    print("\nscene detection, 1280x720 (bench/detect_speed.py):")
    scene_flags = ["--device", args.device, "--model", str(model)]
    scene_model = args.scene_model or (
        SHIPPED_SCENE_MODEL if SHIPPED_SCENE_MODEL.is_file() else None
    )
    if scene_model is not None:
        scene_flags += ["--scene-model", str(scene_model)]
    for mirror in ("--mirror", "--no-mirror"):
        detect_speed.measure(detect_speed.get_args_parser().parse_args([*scene_flags, mirror]))
    return 0 if passed else 1


if __name__ == "__main__":
    with ThreadPoolExecutor(max_workers=1) as worker:
        # The main thread only waits: timing runs in a worker thread, as the service's do.
        sys.exit(worker.submit(main, get_args_parser().parse_args()).result())
