"""The Images tab in a real Chromium: real CTSRD images get the right class with the mask and
box drawn over them; files the service refuses get readable messages."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from data.classes import class_names

pytestmark = pytest.mark.browser

# 000_0001.png is class 0 in the CTSRD annotations; the others are there so that one upload
# of several files (and the README screenshot) shows different sign shapes and colours.
CHECKED_IMAGE = "000_0001.png"
CHECKED_CLASS = class_names("ctsrd")[0]  # "Speed limit 5 km/h"
OTHER_IMAGES = ("026_0001.png", "052_0002.png", "056_0001_j.png")

# Reads back the mask layer's pixels: how many are drawn and their bounding box
# ([x1, y1, x2, y2], ends exclusive, like the API's box).
MASK_PIXELS_JS = """canvas => {
  const {width, height} = canvas;
  const alpha = canvas.getContext("2d").getImageData(0, 0, width, height).data;
  let count = 0, x1 = width, y1 = height, x2 = 0, y2 = 0;
  for (let i = 0; i < width * height; i++) {
    if (alpha[i * 4 + 3] === 0) continue;
    const x = i % width, y = Math.floor(i / width);
    count++;
    x1 = Math.min(x1, x); y1 = Math.min(y1, y);
    x2 = Math.max(x2, x + 1); y2 = Math.max(y2, y + 1);
  }
  return {size: [height, width], count, box: count ? [x1, y1, x2, y2] : null};
}"""

DRAWN_PIXELS_JS = """canvas => {
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let drawn = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) drawn++;
  return drawn;
}"""

DROPPED_TEXT_FILE_JS = """() => {
  const transfer = new DataTransfer();
  transfer.items.add(new File(["not an image at all"], "notes.txt", {type: "text/plain"}));
  return transfer;
}"""


def result_card(page, file_name: str):
    return page.locator(".result").filter(has=page.get_by_role("heading", name=file_name))


def test_real_images_get_their_class_mask_and_box(
    page, expect, trained_service, ctsrd_real, screenshot
) -> None:
    paths = [ctsrd_real / "images" / name for name in (CHECKED_IMAGE, *OTHER_IMAGES)]
    # The API's answers, caught on their way to the page, are told apart by image size
    # (Playwright does not keep multipart bodies), so the sample images differ in size.
    name_by_size = {tuple(reversed(Image.open(path).size)): path.name for path in paths}
    assert len(name_by_size) == len(paths)
    answers = {}

    def keep_answer(response) -> None:
        if "/v1/predict" in response.url and response.ok:
            answer = response.json()
            answers[name_by_size[tuple(answer["image_size"])]] = answer

    page.on("response", keep_answer)
    page.goto(trained_service)
    page.set_input_files("#image-input", paths)
    names = [path.name for path in paths]

    expect(page.locator("#image-results .result")).to_have_count(len(names))
    expect(page.locator("#image-results .result[aria-busy]")).to_have_count(0)
    card = result_card(page, CHECKED_IMAGE)
    expect(card.locator(".prediction .class-name")).to_have_text(CHECKED_CLASS)
    expect(card.locator(".top-k li")).to_have_count(5)
    expect(card.locator(".timing")).to_contain_text(re.compile(r"Request \d"))
    expect(page.locator("#image-announce")).not_to_be_empty()

    for name in names:
        card = result_card(page, name)
        answer = answers[name]
        expect(card.locator(".prediction .class-name")).to_have_text(answer["class_name"])
        drawn_mask = card.locator("canvas.mask-layer").evaluate(MASK_PIXELS_JS)
        sign_pixels = sum(answer["mask"]["data"][1::2])  # odd runs are sign (COCO RLE)
        assert drawn_mask == {
            "size": answer["image_size"],
            "count": sign_pixels,
            "box": answer["box"],
        }, name
        assert sign_pixels > 0, f"{name}: the trained model found no sign pixels"
        assert card.locator("canvas.box-layer").evaluate(DRAWN_PIXELS_JS) > 0, name

    screenshot(page, "image", for_docs=True)


def test_files_the_service_refuses_show_readable_errors(
    page, expect, tiny_service, screenshot
) -> None:
    png = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(png, format="PNG")
    page.goto(tiny_service)
    # One file dropped on the drop zone, one chosen with the picker.
    dropped = page.evaluate_handle(DROPPED_TEXT_FILE_JS)
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": dropped})
    page.set_input_files(
        "#image-input",
        {"name": "cut.png", "mimeType": "image/png", "buffer": png.getvalue()[:60]},
    )

    text_error = result_card(page, "notes.txt").get_by_role("alert")
    expect(text_error).to_contain_text("Not an image the service can read")
    expect(text_error).to_contain_text("unsupported_media_type")
    cut_error = result_card(page, "cut.png").get_by_role("alert")
    expect(cut_error).to_contain_text("damaged or cut short")
    expect(page.locator("#image-announce")).to_contain_text(": ")
    screenshot(page, "image-errors")

    page.get_by_role("button", name="Clear results").click()
    expect(page.locator("#image-results .result")).to_have_count(0)
