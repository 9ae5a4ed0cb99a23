"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
