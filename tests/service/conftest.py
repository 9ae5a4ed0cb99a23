"""Service fixtures: a tiny exported model (random weights, 32 px input), settings with small
limits, an app client with its lifespan run, and generators for image and video files."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.settings import Settings

TEST_LIMITS = {
    "device": "cpu",
    "max_batch_size": 4,
    "max_wait_ms": 2.0,
    "queue_size": 32,
    "request_timeout_s": 20.0,
    "max_upload_bytes": 512 * 1024,
    "max_video_bytes": 2 * 1024 * 1024,
    "max_pixels": 1_000_000,
    "max_video_frames": 40,
    # No scene model unless a test asks for one (tests/service/test_detect.py): the shipped
    # one, when there is one, would be loaded and warmed up by every app.
    "scenes": False,
}


@pytest.fixture(scope="session")
def make_settings(tiny_model_path: Path) -> Callable[..., Settings]:
    def make(**overrides) -> Settings:
        return Settings(**{"model": tiny_model_path, **TEST_LIMITS, **overrides})

    return make


@pytest.fixture(scope="session")
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    """One running app for the tests that need no special settings."""
    with TestClient(create_app(make_settings())) as test_client:
        yield test_client


def sign_scene(width: int = 64, height: int = 48, seed: int = 0) -> np.ndarray:
    """HxWx3 uint8: textured background with a red square, like a cropped sign."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 120, (height, width, 3), dtype=np.uint8)
    image[height // 4 : 3 * height // 4, width // 3 : 2 * width // 3] = (220, 30, 30)
    return image


def encode(image: np.ndarray | Image.Image, fmt: str = "PNG", **options) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def write_video(
    path: Path,
    container: str = "mp4",
    codec: str = "libx264",
    frames: int = 12,
    rate: int = 10,
    size: tuple[int, int] = (64, 48),
    options: dict | None = None,
    display_rotation: int = 0,
) -> Path:
    """A small synthetic video: the sign scene with the square drifting a pixel per frame;
    `display_rotation` (degrees counter-clockwise, -90 for a phone's portrait video) is
    written to its header for players to turn it by."""
    width, height = size
    with av.open(str(path), "w", format=container, options=options or {}) as output:
        stream = output.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if display_rotation:
            stream.set_display_rotation(display_rotation)
        for index in range(frames):
            image = np.roll(sign_scene(width, height), index, axis=1)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return path


@pytest.fixture(scope="session")
def media() -> SimpleNamespace:
    """The generators above, for test modules (which cannot import conftest)."""
    return SimpleNamespace(scene=sign_scene, encode=encode, video=write_video)


@pytest.fixture
def png_bytes() -> bytes:
    return encode(sign_scene())
