"""The Model tab (its measured figures readable, nested ones included), the tabs' keyboard
use, the narrow-screen layout and the API key setting, in a real Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from data.classes import class_names, label_names
from model.checkpoint import ModelInfo, export_model
from model.network import NetConfig, SignNet

pytestmark = pytest.mark.browser

NARROW = {"width": 360, "height": 740}


def test_model_panel_lists_the_classes_and_searches_them(
    page, expect, tiny_service, screenshot
) -> None:
    page.goto(f"{tiny_service}/#model")
    classes = page.locator("#class-list li:visible .class-name")
    expect(classes).to_have_count(58)
    expect(page.locator("#model-summary")).to_contain_text("58 classes")
    expect(page.locator("#model-facts")).to_contain_text("Greedy-DIB")
    expect(page.locator("#model-facts")).to_contain_text("32 × 32 px")
    expect(page.locator("#model-metrics")).to_contain_text("50.0%")  # the tiny model's file
    screenshot(page, "model")

    page.get_by_label("Search classes").fill("speed limit")
    speed_limits = [name for name in class_names("ctsrd") if "speed limit" in name.lower()]
    expect(classes).to_have_text(speed_limits)
    expect(page.locator("#class-count")).to_have_text(
        f"{len(speed_limits)} of 58 classes match “speed limit”"
    )
    page.get_by_label("Search classes").fill("no such sign")
    expect(classes).to_have_count(0)
    page.get_by_label("Search classes").fill("")
    expect(classes).to_have_count(58)


def test_tabs_work_by_keyboard_and_fit_a_narrow_screen(page, expect, tiny_service) -> None:
    page.set_viewport_size(NARROW)
    page.goto(tiny_service)
    expect(page.locator("#model-summary")).to_contain_text("58 classes")
    page.get_by_role("tab", name="Images").focus()
    for key, panel in (("ArrowRight", "video"), ("End", "model"), ("Home", "image")):
        page.keyboard.press(key)
        expect(page.get_by_role("tab", selected=True)).to_have_id(f"tab-{panel}")
        expect(page.locator(f"#panel-{panel}")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"], panel
    # Tab from the tab list reaches the panel, then its first real button.
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Choose images…")).to_be_focused()


def test_api_key_is_asked_for_and_used(page, expect, start_service, tiny_model_path) -> None:
    service = start_service(tiny_model_path, api_key="open sesame")
    page.goto(service)
    expect(page.locator("#model-summary")).to_contain_text("API key")
    page.locator("summary", has_text="Settings").click()
    page.get_by_label("API key").fill("open sesame")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#model-summary")).to_contain_text(re.compile(r"58 classes"))


# Figures as a trained model file keeps them (model/train.py SUMMARY_KEYS).
FIGURES = {"images": 215, "accuracy": 0.972, "macro_accuracy": 0.9701, "threshold": 0.68}
MEASURED = {
    "images": 3700,
    "accuracy": 0.977,
    "rejection_rate": 0.9868,
    "box_iou": 0.8997,
    "train_seconds": 2525.555,
    "datasets": {
        "tsrd": {**FIGURES, "box_iou": 0.8978, "rejection_rate": None},
        "tt100k": {**FIGURES, "images": 3477, "box_iou": None},
    },
    "novel": {"images": 2910, "accuracy": 0.973, "rejection_rate": None},
}
TOP_LEVEL_ROWS_JS = """dl => Object.fromEntries(
  [...dl.querySelectorAll(":scope > dt")].map(dt => [dt.textContent, dt.nextElementSibling])
    .map(([name, dd]) => [name, dd.textContent])
)"""


@pytest.fixture(scope="module")
def measured_model(tmp_path_factory) -> Path:
    config = NetConfig(image_size=32, num_classes=len(label_names("ctsrd")))
    info = ModelInfo(
        config=config, class_names=label_names("ctsrd"), method="greedy-dib", metrics=MEASURED
    )
    model = SignNet(config, with_aux=False).eval()
    return export_model(model, info, tmp_path_factory.mktemp("measured") / "model.pt")


def test_measured_figures_read_as_numbers_not_json(
    page, expect, start_service, measured_model
) -> None:
    page.goto(f"{start_service(measured_model)}/#model")
    metrics = page.locator("#model-metrics")
    expect(metrics).to_contain_text("Training time")
    rows = metrics.evaluate(TOP_LEVEL_ROWS_JS)
    assert rows["Test images"] == "3700"
    assert rows["Accuracy"] == "97.7%"
    assert rows["Unknown signs and non-signs rejected"] == "98.7%"
    assert rows["Box IoU"] == "0.900"
    assert rows["Training time"] == "42 min 6 s"
    assert rows["Signs unlike any training photo"] == "test images 2910 · accuracy 97.3%"
    # Each collection on a row of its own, figures not measured there left out.
    collections = metrics.locator("dd dl").evaluate(TOP_LEVEL_ROWS_JS)
    assert collections == {
        "tsrd": "test images 215 · accuracy 97.2% · mean per-class accuracy 97.0% · "
        "open-set threshold 0.680 · box IoU 0.898",
        "tt100k": "test images 3477 · accuracy 97.2% · mean per-class accuracy 97.0% · "
        "open-set threshold 0.680",
    }
    for raw in ("{", '"', "null", ".000", "2525"):
        expect(metrics).not_to_contain_text(raw)


def test_figures_keep_their_width_on_a_phone(page, expect, start_service, measured_model) -> None:
    """Beside "Unknown signs and non-signs rejected" a figure was one character wide, its
    digits one under another."""
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{start_service(measured_model)}/#model")
    figure = page.locator("#model-metrics > dd").nth(2)
    expect(figure).to_have_text("98.7%")
    lines = figure.evaluate(
        "el => { const r = document.createRange(); r.selectNodeContents(el);"
        " return r.getClientRects().length; }"
    )
    assert lines == 1 and figure.bounding_box()["width"] >= 60


def test_the_model_tab_says_how_unknown_signs_and_scenes_are_handled(
    page, expect, start_service, tiny_model_path, whole_frame_scene_model_path
) -> None:
    service = start_service(
        tiny_model_path, scene_model=whole_frame_scene_model_path, scene_long_side=64
    )
    page.goto(f"{service}/#model")
    facts = page.locator("#model-facts")
    expect(facts).to_contain_text("learned (“unknown sign”, “no sign”)")
    expect(facts).to_contain_text(f"{whole_frame_scene_model_path.name} · Greedy-DIB")
    expect(facts).to_contain_text("frames at 64 px")


def test_the_header_looks_again_when_a_request_finds_the_service_wanting_a_key(
    page, expect, tiny_service, ctsrd_real
) -> None:
    """It stayed a green "ready" while every card said the service needed a key."""
    page.goto(tiny_service)
    summary = page.locator("#model-summary")
    expect(summary).to_contain_text("58 classes")
    refusal = '{"error": {"code": "unauthorized", "message": "a key is needed"}}'
    for route in ("**/v1/predict*", "**/v1/model"):
        page.route(
            route,
            lambda request: request.fulfill(
                status=401, content_type="application/json", body=refusal
            ),
        )
    page.locator("#image-input").set_input_files(str(ctsrd_real / "images" / "000_0001.png"))
    expect(page.locator("#image-results")).to_contain_text("API key")
    expect(summary).to_contain_text("API key")
    assert summary.get_attribute("data-state") == "error"
