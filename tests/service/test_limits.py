"""The pixel budget (service/limits.py) and decoding shrunk (service/decode.py): the two
mechanisms that keep memory in proportion to what the network needs."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from service.decode import ImageLimits, decode_image, image_pixels, prepare_image
from service.errors import InvalidImage, Overloaded
from service.limits import PixelBudget

LIMITS = ImageLimits(max_pixels=25_000_000, min_side=8)


def test_budget_lets_small_images_pass_while_large_ones_wait() -> None:
    async def scenario() -> list[str]:
        budget = PixelBudget(800, timeout_s=5)  # 100 kept for images of at most 100
        order: list[str] = []

        async def image(name: str, pixels: int, hold: asyncio.Event) -> None:
            async with budget.reserve(pixels):
                order.append(name)
                await hold.wait()

        first, second, third, small = (asyncio.Event() for _ in range(4))
        tasks = [asyncio.create_task(image("large-1", 350, first))]
        tasks.append(asyncio.create_task(image("large-2", 350, second)))
        await asyncio.sleep(0)
        assert budget.in_use == 700
        tasks.append(asyncio.create_task(image("large-3", 350, third)))  # must wait
        tasks.append(asyncio.create_task(image("small", 60, small)))  # fits in the eighth
        await asyncio.sleep(0)
        assert order == ["large-1", "large-2", "small"]
        first.set()  # 350 + 60 in use: a large one may take only up to 700
        await asyncio.sleep(0.01)
        assert order[-1] == "small" and budget.in_use == 410
        small.set()
        await asyncio.sleep(0.01)
        assert order[-1] == "large-3" and budget.in_use == 700
        for event in (second, third):
            event.set()
        await asyncio.gather(*tasks)
        assert budget.in_use == 0
        return order

    asyncio.run(scenario())


def test_budget_waiters_time_out_with_a_503_and_cancelled_ones_give_back() -> None:
    async def scenario() -> None:
        budget = PixelBudget(800, timeout_s=0.05)
        await budget.acquire(700)
        with pytest.raises(Overloaded, match="did not come free"):
            await budget.acquire(300)
        waiter = asyncio.create_task(budget.acquire(300))
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        budget.release(700)
        assert budget.in_use == 0 and budget.try_acquire(700)
        # Larger than the most one reservation may take: clamped, so it can still run.
        budget.release(700)
        assert budget.try_acquire(10_000) and budget.in_use == budget.largest == 700

    asyncio.run(scenario())


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def scene(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 120, (height, width, 3), dtype=np.uint8)
    pixels[height // 4 : 3 * height // 4, width // 3 : 2 * width // 3] = (220, 30, 30)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_large_images_decode_shrunk_but_keep_their_full_size(fmt) -> None:
    data = encoded(scene(2400, 1600), fmt)
    assert image_pixels(data, LIMITS) == 2400 * 1600
    decoded = decode_image(data, LIMITS, shrink_to=128)
    assert decoded.size == (1600, 2400)
    assert 128 <= min(decoded.rgb.shape[:2]) < 256 and decoded.rgb.shape[2] == 3
    full = decode_image(data, LIMITS)
    assert full.rgb.shape == (1600, 2400, 3)


def test_shrinking_does_not_change_what_the_network_sees_much() -> None:
    from data.transforms import preprocess

    data = encoded(scene(2400, 1600), "PNG")
    shrunk = prepare_image(data, LIMITS, lambda rgb: preprocess(rgb, 64), shrink_to=256)
    full = prepare_image(data, LIMITS, lambda rgb: preprocess(rgb, 64))
    assert shrunk.size == full.size == (1600, 2400)
    assert float((shrunk.tensor - full.tensor).abs().mean()) < 0.02


def test_exif_rotation_is_applied_to_a_shrunk_image() -> None:
    # Stored 1000 wide and 600 high with a red left half; orientation 6 shows it turned a
    # quarter clockwise: 600 wide, 1000 high, red on top.
    stored = np.zeros((600, 1000, 3), dtype=np.uint8)
    stored[:, :500] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encoded(Image.fromarray(stored), "JPEG", exif=exif.tobytes(), quality=95)
    decoded = decode_image(data, LIMITS, shrink_to=64)
    assert decoded.size == (1000, 600)
    height, width = decoded.rgb.shape[:2]
    assert height > width
    assert decoded.rgb[height // 8, width // 2, 0] > 200
    assert decoded.rgb[-height // 8, width // 2, 0] < 60


@pytest.mark.parametrize("mode", ["P", "1", "LA", "RGBA", "I;16"])
def test_every_mode_shrinks(mode) -> None:
    fmt = "TIFF" if mode == "I;16" else "PNG"
    decoded = decode_image(encoded(Image.new(mode, (900, 700)), fmt), LIMITS, shrink_to=100)
    assert decoded.size == (700, 900) and decoded.rgb.dtype == np.uint8
    assert decoded.rgb.shape[2] == 3 and min(decoded.rgb.shape[:2]) < 700


def test_jpeg_too_short_for_its_size_and_endless_ppm_headers_are_refused() -> None:
    whole = encoded(Image.new("L", (4000, 4000)), "JPEG")
    decode_image(whole, LIMITS)  # a legal grey picture, however small its file
    with pytest.raises(InvalidImage, match="truncated"):
        decode_image(whole[:3000] + b"\xff\xd9", LIMITS)
    header = b"P5\n# a comment\n64 48\n255\n"
    assert decode_image(header + bytes(64 * 48), LIMITS).size == (48, 64)
    with pytest.raises(InvalidImage, match="PPM header"):
        decode_image(b"P5\n#" + b"x" * 10_000 + b"\n64 48\n255\n" + bytes(64 * 48), LIMITS)
