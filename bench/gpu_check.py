"""GPU check of the service's model path: fp16 against fp32, throughput, memory.

    .venv/bin/python bench/gpu_check.py [--model RUN] [--images 512] [--seconds 5]

On a CUDA device:
1. agreement: the same images through the model in fp32 and under fp16 autocast (what the
   service runs): same top-1 class on >= 99 % of them (exit code 1 otherwise), plus the
   largest confidence difference and the mean IoU of the two masks;
2. raw throughput per batch size, fp32 and fp16, with peak GPU memory (allocated by torch);
3. engine throughput (decode + dynamic batching, no HTTP) and service throughput (uvicorn
   on loopback, as bench/service_load.py measures it), fp16, side by side.
Without a CUDA device it says so and exits with code 0: there is nothing to check.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from service_load import (
    drive_closed_loop,
    load_images,
    measure_engine,
    predict_request,
    running_service,
)

from model.inference import Prediction, Predictor
from model.runs import resolve_model
from service.decode import ImageLimits, PreparedImage, prepare_image

AGREEMENT_BAR = 0.99


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=add_help)
    parser.add_argument("--model", help="model file or run folder (default: resolve_model())")
    parser.add_argument("--device", default="cuda", help="a CUDA device (cuda, cuda:1, ...)")
    parser.add_argument("--images", type=int, default=512, help="images for the agreement")
    parser.add_argument("--batch-sizes", default="1,8,16,32,64")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each timing")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--queue-size", type=int, default=256)
    parser.add_argument("--mask-format", default="png", choices=("png", "rle", "none"))
    return parser


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
    return 0 if passed else 1


if __name__ == "__main__":
    with ThreadPoolExecutor(max_workers=1) as worker:
        # The main thread only waits: timing runs in a worker thread, as the service's do.
        sys.exit(worker.submit(main, get_args_parser().parse_args()).result())
