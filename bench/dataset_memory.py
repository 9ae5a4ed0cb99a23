"""Memory and speed of SignDataset's eager and lazy decoding, side by side.

    .venv/bin/python bench/dataset_memory.py [--data ../shared/data/tt100k-crops]
        [--images 10000] [--image-size 48] [--cache-mb 256 32]

Each mode runs in a fresh process: the records are read first, then the process's resident
memory (VmRSS) is taken before and after building the training dataset, and after one pass
over all its items (augmented, as training draws them). Eager decodes every image in the
constructor; lazy reads each from disk when drawn and keeps at most --cache-mb of decoded
pixels.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tt100k-crops"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(data: Path, images: int, image_size: int, decode: str, cache_mb: float) -> dict:
    import torch

    from data.dataset import SignDataset
    from data.load import load_dataset

    torch.set_num_threads(1)
    records = load_dataset(data).records[:images]
    before = rss_mb()
    started = time.perf_counter()
    dataset = SignDataset(records, image_size, train=True, seed=0, decode=decode, cache_mb=cache_mb)
    built = time.perf_counter() - started
    after_build = rss_mb()
    started = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    one_pass = time.perf_counter() - started
    return {
        "decode": decode,
        "cache_mb": cache_mb if decode == "lazy" else None,
        "images": len(records),
        "build_s": built,
        "pass_s": one_pass,
        "rss_build_mb": after_build - before,
        "rss_after_pass_mb": rss_mb() - before,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--cache-mb", type=float, nargs="+", default=[256, 32])
    parser.add_argument("--child", nargs=2, metavar=("DECODE", "CACHE_MB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        decode, cache_mb = args.child[0], float(args.child[1])
        print(json.dumps(measure(args.data, args.images, args.image_size, decode, cache_mb)))
        return 0
    if not args.data.is_dir():
        print(f"no dataset at {args.data}: nothing to measure")
        return 0
    common = ["--data", str(args.data), "--images", str(args.images)]
    common += ["--image-size", str(args.image_size)]
    print(f"{args.images} images of {args.data} at {args.image_size} px, training items")
    print("mode            build s   RSS after build MB   pass s   RSS after one pass MB")
    for decode, cache_mb in [("eager", 0), *(("lazy", mb) for mb in args.cache_mb)]:
        child = [sys.executable, __file__, *common, "--child", decode, str(cache_mb)]
        done = subprocess.run(child, capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.splitlines()[-1])
        name = decode if decode == "eager" else f"lazy {cache_mb:g} MB"
        print(
            f"{name:<14} {row['build_s']:8.1f}   {row['rss_build_mb']:18.0f}   "
            f"{row['pass_s']:6.1f}   {row['rss_after_pass_mb']:21.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
