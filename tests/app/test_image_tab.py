"""The Images tab in a real Chromium: real CTSRD images get the right class with the mask and
box drawn over them; files the service refuses get readable messages; clearing cancels the
requests still out; a picture turned by its EXIF orientation is shown upright."""

from __future__ import annotations

import contextlib
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


def png_bytes(size: tuple[int, int] = (64, 48), color=(200, 30, 30)) -> bytes:
    output = io.BytesIO()
    Image.new("RGB", size, color).save(output, format="PNG")
    return output.getvalue()


def wait_until(page, condition, what: str, timeout_ms: int = 20_000) -> None:
    """Lets the page run (and Playwright's handlers with it) until `condition()` holds."""
    waited = 0
    while not condition():
        assert waited < timeout_ms, f"still not {what} after {timeout_ms} ms"
        page.wait_for_timeout(50)
        waited += 50


def test_clearing_cancels_the_requests_of_the_cleared_cards(page, expect, tiny_service) -> None:
    held = []  # every /v1/predict waits here until the test lets it go
    sent, cancelled = [], []
    page.route(re.compile(r"/v1/predict"), lambda route: held.append(route))
    page.on("request", lambda request: sent.append(request) if "/v1/predict" in request.url else 0)
    page.on(
        "requestfailed",
        lambda request: cancelled.append(request) if "/v1/predict" in request.url else 0,
    )
    page.goto(tiny_service)
    files = [
        {"name": f"{index}.png", "mimeType": "image/png", "buffer": png_bytes()}
        for index in range(6)
    ]
    page.set_input_files("#image-input", files)
    expect(page.locator("#image-results .result")).to_have_count(6)
    # Four in flight, two waiting for a lane.
    wait_until(page, lambda: len(held) == 4, "4 requests sent")

    page.get_by_role("button", name="Clear results").click()
    wait_until(page, lambda: len(cancelled) == 4, "4 requests cancelled")
    for route in held:
        # A request the page cancelled cannot go on: Playwright may say so.
        with contextlib.suppress(Exception):
            route.continue_()
    page.wait_for_timeout(500)  # time for answers, or for the two waiting files to be sent
    assert len(sent) == 4
    expect(page.locator("#image-results .result")).to_have_count(0)
    expect(page.locator("#image-announce")).to_have_text("Results cleared")

    # The next batch goes through as usual.
    page.unroute(re.compile(r"/v1/predict"))
    page.set_input_files("#image-input", files[0])
    expect(result_card(page, "0.png").locator(".prediction .class-name")).not_to_be_empty()
    expect(page.locator("#image-announce")).to_contain_text("0.png: ")
    expect(page.get_by_role("alert")).to_have_count(0)


def turned_picture(image_format: str) -> bytes:
    """A 120x60 picture stored on its side: its EXIF orientation (6) says to turn it 90°
    clockwise, which shows it 60x120 with green at the top left, red at the top right and
    blue below."""
    picture = Image.new("RGB", (120, 60), (20, 40, 230))
    picture.paste((230, 30, 30), (0, 0, 60, 30))
    picture.paste((30, 200, 40), (0, 30, 60, 60))
    exif = Image.Exif()
    exif[0x0112] = 6
    output = io.BytesIO()
    picture.save(output, format=image_format, exif=exif.tobytes(), quality=95)
    return output.getvalue()


HIDE_OVERLAYS_JS = """frame => {
  for (const layer of frame.querySelectorAll(".mask-layer, .box-layer")) {
    layer.style.visibility = "hidden";
  }
}"""


def test_an_exif_turned_picture_is_shown_upright_under_its_boxes(
    page, expect, tiny_service
) -> None:
    """Chromium shows a WebP as stored, ignoring its EXIF orientation (it applies that of a
    JPEG), while the service answers for the upright picture: the page turns the preview."""
    page.goto(tiny_service)
    page.set_input_files(
        "#image-input",
        [
            {"name": "turned.webp", "mimeType": "image/webp", "buffer": turned_picture("WEBP")},
            {"name": "turned.jpg", "mimeType": "image/jpeg", "buffer": turned_picture("JPEG")},
        ],
    )
    for name in ("turned.webp", "turned.jpg"):
        card = result_card(page, name)
        expect(card.locator(".hint").first).to_contain_text("60 × 120 px")  # upright, answered
        frame = card.locator(".frame")
        expect(frame).not_to_have_class(re.compile("no-preview"))
        if name.endswith(".webp"):
            expect(frame.locator(".preview")).to_have_count(1)  # drawn upright by the page
        frame.evaluate(HIDE_OVERLAYS_JS)
        shot = Image.open(io.BytesIO(frame.screenshot())).convert("RGB")
        width, height = shot.size
        assert abs(height / width - 2) < 0.05, (name, shot.size)

        def dominant(x: float, y: float, shot=shot) -> str:
            pixel = shot.getpixel((int(x * shot.width), int(y * shot.height)))
            return "rgb"[pixel.index(max(pixel))]

        assert (dominant(0.25, 0.12), dominant(0.75, 0.12), dominant(0.5, 0.75)) == (
            "g",
            "r",
            "b",
        ), name


@pytest.fixture(scope="module")
def no_sign_model(tmp_path_factory):
    """A sign model that answers "no sign" for every picture."""
    import torch

    from data.classes import label_names
    from model.checkpoint import ModelInfo, export_model
    from model.network import NetConfig, SignNet

    config = NetConfig(image_size=32, num_classes=len(label_names("ctsrd")))
    model = SignNet(config, with_aux=False).eval()
    with torch.no_grad():
        model.cls_head[-1].bias[label_names("ctsrd").index("no sign")] += 50
    info = ModelInfo(config=config, class_names=label_names("ctsrd"), method="greedy-dib")
    return export_model(model, info, tmp_path_factory.mktemp("no-sign") / "model.pt")


def test_a_road_frame_read_as_no_sign_points_to_scene_mode(
    page, expect, start_service, no_sign_model
) -> None:
    """A whole road frame dropped in one-sign mode said "no sign" and nothing more."""
    page.goto(start_service(no_sign_model))
    frame, photo = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (1280, 720), (90, 110, 130)).save(frame, "PNG")
    Image.new("RGB", (120, 120), (90, 110, 130)).save(photo, "PNG")
    page.set_input_files(
        "#image-input",
        [
            {"name": "frame.png", "mimeType": "image/png", "buffer": frame.getvalue()},
            {"name": "photo.png", "mimeType": "image/png", "buffer": photo.getvalue()},
        ],
    )
    expect(result_card(page, "frame.png").locator(".scene-hint")).to_contain_text(
        "A whole road scene?"
    )
    expect(result_card(page, "photo.png")).to_contain_text("no sign")
    expect(result_card(page, "photo.png").locator(".scene-hint")).to_have_count(0)
