"""The named choices of the model layer, free of torch and argparse: the CLI builds its parser
from them without loading PyTorch, and the modules that implement them check against them."""

from __future__ import annotations

METHODS = ("greedy-dib", "greedy-ce", "sgd")
SCHEDULES = ("sequential", "simultaneous")
REGULARISERS = ("entropy", "mi", "none")
ARCH_NAMES = ("resnet18", "resnet34")
EVAL_SUBSETS = ("test", "train", "all")
DATA_SPLITS = ("leakage-free", "official")
TASKS = ("crops", "scenes")

# `greedysign analyze` (model/analysis.py): what it probes and its defaults.
ANALYSIS_UNITS = ("modules", "blocks")
ANALYSIS_SUBSETS = ("test", "all")
ANALYSIS_PROBE_IMAGES = 256
ANALYSIS_ALPHA = 1.01
ANALYSIS_POOL_TO = 4  # as the training term (model/options.py --pool-to)
ANALYSIS_KNN = 10
