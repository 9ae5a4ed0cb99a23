"""The Model tab, the tabs' keyboard use, the narrow-screen layout and the API key setting,
in a real Chromium."""

from __future__ import annotations

import re

import pytest

from data.classes import class_names

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
