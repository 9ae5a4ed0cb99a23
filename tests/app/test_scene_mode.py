"""Scene mode of the browser app in a real Chromium: the Images tab finds every sign of a
street scene (POST /v1/detect) and the Video tab streams with mode=scene, drawing each sign
with its track id and class; without a scene model the page says so.

The models are tiny and their answers fixed: the scene model marks every pixel (each frame is
one sign filling it) and the sign model always answers class 3."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from data.classes import class_names

pytestmark = pytest.mark.browser

CLASS_ID = 3  # what one_class_model_path answers (tests/conftest.py)
CLASS_NAME = class_names("ctsrd")[CLASS_ID]
ANNOTATED_AT_LEAST = "n => Number(document.querySelector('#stat-frames').textContent) >= n"
DRAWN_PIXELS_JS = """canvas => {
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let drawn = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) drawn++;
  return drawn;
}"""


@pytest.fixture(scope="module")
def scene_service(start_service, one_class_model_path, whole_frame_scene_model_path) -> str:
    return start_service(
        one_class_model_path, scene_model=whole_frame_scene_model_path, scene_long_side=64
    )


def street_picture(path: Path, width: int = 320, height: int = 180) -> Path:
    pixels = np.random.default_rng(0).integers(40, 120, (height, width, 3), dtype=np.uint8)
    pixels[40:80, 200:240] = (220, 30, 30)
    Image.fromarray(pixels).save(path)
    return path


def street_clip(path: Path, seconds: int = 6, rate: int = 10) -> Path:
    """VP8 WebM, which every Chromium plays."""
    with av.open(str(path), "w", format="webm") as output:
        stream = output.add_stream("libvpx", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        for index in range(seconds * rate):
            pixels = np.full((96, 160, 3), 80, np.uint8)
            pixels[30:60, index % 120 : index % 120 + 30] = (220, 30, 30)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format="yuv420p")
            output.mux(stream.encode(frame))
        output.mux(stream.encode())
    return path


def test_image_tab_scene_mode_draws_and_lists_every_sign(
    page, expect, scene_service, tmp_path, screenshot
) -> None:
    page.goto(scene_service)
    page.get_by_label("a street scene: find every sign").check()
    page.set_input_files("#image-input", street_picture(tmp_path / "street.png"))
    card = page.locator(".result").filter(has=page.get_by_role("heading", name="street.png"))
    expect(card.locator(".scene-count")).to_have_text("1 sign found")
    expect(card.locator(".signs li")).to_have_count(1)
    expect(card.locator(".signs li")).to_contain_text(f"{CLASS_NAME} ")
    expect(card.locator(".signs li")).to_contain_text("x 0–320, y 0–180")
    # The one sign's mask covers the picture; its box and label are drawn.
    mask_pixels = card.locator("canvas.mask-layer").evaluate(DRAWN_PIXELS_JS)
    assert mask_pixels == 320 * 180
    assert card.locator("canvas.box-layer").evaluate(DRAWN_PIXELS_JS) > 0
    expect(page.locator("#image-announce")).to_contain_text("street.png: 1 sign found")
    screenshot(page, "image-scene")


def test_video_tab_scene_mode_draws_tracked_signs(
    page, expect, scene_service, tmp_path, screenshot
) -> None:
    page.goto(f"{scene_service}/#video")
    page.set_input_files("#video-input", street_clip(tmp_path / "street.webm"))
    expect(page.locator("#video-status")).to_contain_text("ready")
    page.select_option("#video-mode", "scene")
    page.select_option("#video-rate", "5")
    page.select_option("#video-threshold", "0")
    page.get_by_role("button", name="Start").click()
    expect(page.locator("#video-status")).to_contain_text("street scene")
    page.wait_for_function(ANNOTATED_AT_LEAST, arg=3, timeout=60_000)
    # One sign fills every frame: one track, its id shown with its class.
    expect(page.locator("#video-label")).to_contain_text(f"#1 {CLASS_NAME}")
    assert page.locator("#video-mode").is_disabled()
    assert page.locator("#video-stage canvas.box-layer").evaluate(DRAWN_PIXELS_JS) > 0
    screenshot(page, "video-scene")
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#video-status")).to_have_text("Stopped.")
    assert not page.locator("#video-mode").is_disabled()


def test_without_a_scene_model_the_page_says_so(
    page, expect, start_service, tiny_model_path, tmp_path
) -> None:
    service = start_service(tiny_model_path, scenes=False)
    page.goto(service)
    page.get_by_label("a street scene: find every sign").check()
    page.set_input_files("#image-input", street_picture(tmp_path / "street.png"))
    alert = page.locator(".result").get_by_role("alert")
    expect(alert).to_contain_text("no scene model")
    expect(alert).to_contain_text("no_scene_model")
