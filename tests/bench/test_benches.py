"""The benchmark scripts run as BENCHMARKS.md tells users to run them (small sizes here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_train_memory_reports_the_greedy_to_sgd_ratio_of_a_split() -> None:
    # One explicit two-module split: SGD and three greedy phases, each in its own process.
    split = "stem+layer1,layer2+layer3+layer4"
    done = _run(
        "train_memory.py",
        *("--batch-size", "8", "--image-size", "32", "--steps", "1", "--splits", split),
    )
    assert done.returncode == 0, done.stderr
    ratios = re.findall(r"^split (\S+) \(K=(\d)\): .* = (\d\.\d\d);", done.stdout, re.MULTILINE)
    assert [(name, int(k)) for name, k, _ in ratios] == [(split, 2)]
    assert 0 < float(ratios[0][2]) < 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="there is a GPU: the real check applies")
def test_gpu_check_says_there_is_no_cuda_device_and_exits_0() -> None:
    done = _run("gpu_check.py")
    assert done.returncode == 0
    assert "no CUDA device" in done.stdout
