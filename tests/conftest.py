"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from data.classes import class_names
from model.checkpoint import ModelInfo, export_model
from model.network import NetConfig, SignNet

REPO_ROOT = Path(__file__).resolve().parent.parent
# Real data lives beside the checkout (../shared/data) and is never copied into the repo.
SHARED_DATA = Path(os.environ.get("GREEDYSIGN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data not available: {path} is missing (set GREEDYSIGN_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def ctsrd_real() -> Path:
    """The real TSRD sample: plain folder with images/ and annotations.txt."""
    return _shared("ctsrd-real")


@pytest.fixture(scope="session")
def gtsrb_real() -> Path:
    return _shared("gtsrb-real")


@pytest.fixture(scope="session")
def traffic_video() -> Path:
    return _shared("video/traffic.mp4")


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported model with random weights at 32 px: tests never need a trained one."""
    torch.manual_seed(0)
    config = NetConfig(image_size=32)
    info = ModelInfo(
        config=config,
        class_names=class_names("ctsrd"),
        method="greedy-dib",
        metrics={"accuracy": 0.5},
        split={"seed": 0},
    )
    model = SignNet(config, with_aux=False).eval()
    return export_model(model, info, tmp_path_factory.mktemp("model") / "model.pt")
