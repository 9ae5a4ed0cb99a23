"""Fixtures shared by every test package."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
import torch

from data.classes import label_names
from data.synth import generate_synthetic
from model.checkpoint import ModelInfo, export_model
from model.network import NetConfig, SignNet

REPO_ROOT = Path(__file__).resolve().parent.parent
# Real data lives beside the checkout (../shared/data) and is never copied into the repo.
SHARED_DATA = Path(os.environ.get("GREEDYSIGN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


# Tiny models on a shared 2-core machine: one torch thread is faster for them, and every test
# runs with the same count whichever files a run collects.
torch.set_num_threads(1)


def _required(path: Path, what: str) -> Path:
    """`path`, or a skip when it is absent; a failure instead where GREEDYSIGN_REQUIRE_DATA=1
    (`make test` beside ../shared/data), so that a moved folder cannot turn the real-data
    tests into skips that a run reports as a pass."""
    if not path.exists():
        message = f"{what} not available: {path} is missing"
        if os.environ.get("GREEDYSIGN_REQUIRE_DATA") == "1":
            pytest.fail(f"{message} (GREEDYSIGN_REQUIRE_DATA=1)", pytrace=False)
        pytest.skip(message)
    return path


def _shared(name: str) -> Path:
    return _required(SHARED_DATA / name, "real data (set GREEDYSIGN_SHARED_DATA)")


@contextmanager
def _within(seconds: int) -> Iterator[None]:
    def give_up(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def within() -> Callable[[int], AbstractContextManager[None]]:
    """`with within(10): ...` fails with TimeoutError, instead of hanging, if the block
    blocks (reading a FIFO, say)."""
    return _within


@pytest.fixture(scope="session")
def ctsrd_real() -> Path:
    """The real TSRD sample: plain folder with images/ and annotations.txt."""
    return _shared("ctsrd-real")


@pytest.fixture(scope="session")
def gtsrb_real() -> Path:
    return _shared("gtsrb-real")


@pytest.fixture(scope="session")
def tt100k_crops() -> Path:
    """Real TT100K sign crops: train/<code>/*.png, train/negative/*.jpg, classes.csv."""
    return _shared("tt100k-crops")


@pytest.fixture(scope="session")
def traffic_video() -> Path:
    return _shared("video/traffic.mp4")


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic CTSRD set (2 images per class), for short training runs."""
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, per_class=2, seed=3)
    return root


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported model with random weights at 32 px: tests never need a trained one. Its
    outputs are the 58 CTSRD classes, "unknown sign" and "no sign"."""
    torch.manual_seed(0)
    config = NetConfig(image_size=32, num_classes=len(label_names("ctsrd")))
    info = ModelInfo(
        config=config,
        class_names=label_names("ctsrd"),
        method="greedy-dib",
        metrics={"accuracy": 0.5},
        split={"seed": 0},
    )
    model = SignNet(config, with_aux=False).eval()
    return export_model(model, info, tmp_path_factory.mktemp("model") / "model.pt")


ONE_CLASS_ID = 3


@pytest.fixture(scope="session")
def one_class_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sign model that answers class `ONE_CLASS_ID` (3), sure of it, for every picture: for
    tests whose point is what is done with an answer, so that none can pass on no answer."""
    torch.manual_seed(0)
    config = NetConfig(image_size=32, num_classes=len(label_names("ctsrd")))
    model = SignNet(config, with_aux=False).eval()
    with torch.no_grad():
        model.cls_head[-1].bias[ONE_CLASS_ID] += 50
    info = ModelInfo(config=config, class_names=label_names("ctsrd"), method="greedy-dib")
    return export_model(model, info, tmp_path_factory.mktemp("one-class") / "model.pt")


def export_tiny_scene_model(path: Path, sign_logit: float | None = None) -> Path:
    """A scene model (task "scenes") with random weights; with `sign_logit`, its segmentation
    head answers that logit for every pixel (positive: the whole frame is one sign; negative:
    no sign anywhere), whatever the picture."""
    torch.manual_seed(1)
    config = NetConfig(image_size=32, num_classes=len(label_names("ctsrd")))
    model = SignNet(config, with_aux=False).eval()
    if sign_logit is not None:
        with torch.no_grad():
            model.seg_head[0].weight.zero_()
            model.seg_head[0].bias.fill_(sign_logit)
    info = ModelInfo(
        config=config, class_names=label_names("ctsrd"), task="scenes", method="greedy-dib"
    )
    return export_model(model, info, path)


@pytest.fixture(scope="session")
def tiny_scene_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight scene model (whose segmentation head marks some pixels or none)."""
    return export_tiny_scene_model(tmp_path_factory.mktemp("scene") / "scene.pt")


@pytest.fixture(scope="session")
def whole_frame_scene_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scene model that marks every pixel: each frame is one sign, its box the frame."""
    return export_tiny_scene_model(tmp_path_factory.mktemp("scene") / "whole.pt", 8.0)


@pytest.fixture(scope="session")
def empty_scene_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scene model that marks no pixel: no frame has a sign."""
    return export_tiny_scene_model(tmp_path_factory.mktemp("scene") / "empty.pt", -8.0)


@pytest.fixture(scope="session")
def dfg_frames() -> Path:
    """The real DFG road frames: annotations.json (COCO, polygons, `ignore`) + images/."""
    return _shared("dfg-frames")


@pytest.fixture(scope="session")
def scene_data_root() -> Path:
    """The shared data folder holding every real source of `greedysign data scenes`."""
    for part in ("video/traffic.mp4", "tt100k-crops", "ctsrd-real", "dfg-frames"):
        _shared(part)
    return SHARED_DATA
