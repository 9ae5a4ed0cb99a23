"""The training command line: every knob a named argument.

Kept apart from model/train.py, and free of torch imports, so that `greedysign` builds its
parser without loading PyTorch (commands that do not train start in a fraction of a second)
and other scripts can reuse the flags (`get_args_parser(add_help=False)` as a parent).
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

from model.choices import ARCH_NAMES, DATA_SPLITS, METHODS, REGULARISERS, SCHEDULES, TASKS


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1 (a count or a step)."""
    return _int_at_least(text, 1)


def count(text: str) -> int:
    """An argparse type: an integer of at least 0 (a count where 0 means none)."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


# What model/device.py resolve_device takes (the service's settings take the same).
_DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")


def device_name(text: str) -> str:
    """An argparse type: a device name, auto, cpu, cuda or cuda:N (any case); refused here,
    before any work, rather than by torch once a model is loaded. Whether the machine has
    the device is `resolve_device`'s to say."""
    name = text.strip().lower()
    if not _DEVICE_NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(f"{text!r}: a device must be auto, cpu, cuda or cuda:N")
    return name


def share(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1."""
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def positive_number(text: str) -> float:
    """An argparse type: a finite number above 0 (a learning rate, a frame rate)."""
    value = _number(text)
    if not 0 < value < math.inf:  # comparisons that NaN fails, as every check here
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def non_negative_number(text: str) -> float:
    """An argparse type: a finite number of at least 0 (a loss weight, a decay, seconds)."""
    value = _number(text)
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number of at least 0, got {text}")
    return value


def below_one(text: str) -> float:
    """An argparse type: a number in [0, 1) (momentum, label smoothing)."""
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


def renyi_order(text: str) -> float:
    """An argparse type: a Renyi entropy order, finite, above 0 and not 1 (model/entropy.py:
    1 is the Shannon limit, where its formula divides by zero)."""
    value = _number(text)
    if not (0 < value < math.inf and value != 1):
        raise argparse.ArgumentTypeError(
            f"a Renyi order must be a finite number above 0 other than 1, got {text}"
        )
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train GreedySign", add_help=add_help)
    parser.add_argument(
        "--data",
        type=Path,
        action="append",
        default=None,
        help="dataset folder (TSRD plain/official, TT100K crops or GTSRB); give it again to "
        "train on several at once (they must share classes); default: a synthetic CTSRD "
        "set, generated once and cached in .cache/",
    )
    parser.add_argument(
        "--train-data",
        type=Path,
        action="append",
        default=None,
        help="a dataset folder that only trains, never split (e.g. hard negatives mined from "
        "one clip with greedysign mine-negatives: one scene, which a leakage-free split "
        "could only put whole on one side); give it again for several",
    )
    parser.add_argument(
        "--synthetic-fill",
        type=count,
        default=40,
        help="with --data: synthetic images for each class that has no real image (0: none)",
    )
    parser.add_argument(
        "--synthetic-per-class",
        type=positive_int,
        default=40,
        help="images per class of the synthetic set used without --data",
    )
    parser.add_argument(
        "--task",
        choices=TASKS,
        default="crops",
        help="crops: read sign crops (classes, open set, mask); scenes: mark sign pixels in "
        "whole road frames (--data from greedysign data scenes; --image-size is the tile)",
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="greedy-dib",
        help="greedy-dib: module by module, each with its own aux heads and the information "
        "term (--reg); greedy-ce: the same without the term; sgd: the whole network end to end",
    )
    parser.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default="sequential",
        help="greedy methods: train module after module (sequential, the paper's) or every "
        "module on every batch (simultaneous, DGL's decoupled greedy training)",
    )
    parser.add_argument(
        "--reg",
        choices=REGULARISERS,
        default=None,
        help="information term (default: entropy for greedy-dib; greedy-ce and sgd use none)",
    )
    parser.add_argument(
        "--beta", type=non_negative_number, default=0.01, help="weight of the info term"
    )
    parser.add_argument("--alpha", type=renyi_order, default=1.01, help="Renyi entropy order")
    parser.add_argument(
        "--pool-to",
        type=count,
        default=4,
        help="average-pool feature maps to at most this size for the Gram "
        "matrix (0: use the full map)",
    )
    parser.add_argument(
        "--lambda-mask", type=non_negative_number, default=1.0, help="weight of the mask loss"
    )
    parser.add_argument(
        "--lambda-recon",
        type=non_negative_number,
        default=0.0,
        help="greedy modules: weight of rebuilding the input from T_k (InfoPro's "
        "information-preserving term; 0: off)",
    )
    parser.add_argument(
        "--label-smoothing", type=below_one, default=0.1, help="of the classification cross-entropy"
    )
    parser.add_argument("--arch", choices=ARCH_NAMES, default="resnet18", help="the encoder")
    parser.add_argument(
        "--modules",
        dest="module_split",
        metavar="SPLIT",
        help="where the encoder is cut into Greedy-DIB modules: a name from model/splits.py "
        "or a spec such as stem,layer1,layer2+layer3,layer4 (default: balanced; with --init "
        "or --resume, the cut of the model or run continued)",
    )
    parser.add_argument(
        "--image-size",
        type=positive_int,
        default=64,
        help="side of the square the network reads (px; --task scenes: the tile)",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=30,
        help="epochs of SGD, and of each Greedy-DIB module",
    )
    parser.add_argument(
        "--head-epochs",
        type=positive_int,
        default=None,
        help="epochs of the greedy segmentation-decoder (heads) phase (default: --epochs)",
    )
    parser.add_argument(
        "--cache-prefix",
        action="store_true",
        help="sequential schedule: keep each epoch's batches and the frozen modules' output "
        "on them in host memory, so that later modules neither reload the data nor rerun the "
        "frozen prefix (model/prefix_cache.py; prints the memory it will take)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        help="images per step (under torchrun: over all processes together)",
    )
    parser.add_argument(
        "--optimizer",
        choices=("sgd", "adamw"),
        default="adamw",
        help="one per phase (a greedy module, the heads, or SGD's whole network)",
    )
    parser.add_argument(
        "--lr",
        type=positive_number,
        default=3e-3,
        help="peak learning rate, reached after the warm-up",
    )
    parser.add_argument(
        "--momentum",
        type=below_one,
        default=0.9,
        help="Nesterov momentum of --optimizer sgd (0: plain SGD)",
    )
    parser.add_argument(
        "--weight-decay", type=non_negative_number, default=0.05, help="of either optimizer"
    )
    parser.add_argument(
        "--warmup-epochs",
        type=non_negative_number,
        default=1.0,
        help="linear learning-rate warm-up at the start of each phase, then cosine decay to 0",
    )
    parser.add_argument(
        "--split",
        dest="data_split",
        choices=DATA_SPLITS,
        default="leakage-free",
        help="leakage-free: stratified, exact copies and near-twins kept on one side (default); "
        "official: the TSRD release's own train and test files, as the paper used them "
        "(test images also in train are counted and reported)",
    )
    parser.add_argument(
        "--balance",
        choices=("sqrt", "none"),
        default="sqrt",
        help="sqrt: draw records in proportion to 1/sqrt(size of their collection) x "
        "1/sqrt(size of their label within it), with replacement (scenes: each --data folder "
        "a share in proportion to the square root of its frames); none: each record once "
        "per epoch",
    )
    parser.add_argument(
        "--test-fraction",
        type=share,
        default=0.2,
        help="held-out share of the leakage-free stratified split",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the split, init and order")
    parser.add_argument("--workers", type=count, default=1, help="data-loading processes")
    parser.add_argument(
        "--decode",
        choices=("auto", "eager", "lazy"),
        default="auto",
        help="eager: decode every image into memory before training; lazy: read each image "
        "from disk when it is drawn, keeping a bounded cache; auto: lazy above 20,000 images",
    )
    parser.add_argument(
        "--decode-cache-mb",
        type=non_negative_number,
        default=256,
        metavar="MB",
        help="lazy decoding: decoded images kept per data-loading process",
    )
    parser.add_argument(
        "--device",
        type=device_name,
        default="auto",
        help="auto, cpu, cuda, cuda:1, ... (under torchrun, auto and cuda mean each process's "
        "own GPU: cuda:LOCAL_RANK)",
    )
    parser.add_argument(
        "--cpu-bf16",
        action="store_true",
        help="on a CPU, train in bfloat16 autocast and channels-last: with AMX (Xeon 4th "
        "generation and later) a fine-tune on 256-px scene tiles ran 1.5x as fast; without "
        "it, slower (default: float32; a GPU picks bf16 or fp16 itself)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="run folder (default: runs/METHOD-SEED-TIMESTAMP)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint"
    )
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        metavar="MODEL",
        help="start from the weights of this model file or run's checkpoint.pth (same --arch "
        "and task): fine-tuning, e.g. the shipped scene model on new frames. A checkpoint "
        "also brings the aux heads, which a Greedy-DIB fine-tune trains on; from a model "
        "file they start fresh",
    )
    parser.add_argument(
        "--aux-warmup-epochs",
        type=count,
        default=0,
        metavar="N",
        help="with --init from a model file (greedy methods): first train the fresh aux heads "
        "alone for N epochs on the frozen encoder, so that the modules then learn from heads "
        "that already read them",
    )
    parser.add_argument(
        "--snapshot-every",
        type=count,
        default=0,
        metavar="N",
        help="keep the encoder (fp16) every N epochs and at the end of each phase, for "
        "`greedysign analyze RUN` (0: none)",
    )
    parser.add_argument(
        "--stop-after",
        default=None,
        metavar="PHASE",
        help="stop after this phase (module1..moduleK, heads); --resume continues later",
    )
    return parser
