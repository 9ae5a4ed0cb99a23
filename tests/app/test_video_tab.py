"""The Video tab in a real Chromium: the dashcam clip, a clip made from a real sign, and the
(synthetic) webcam are streamed over WS /v1/stream, and the answers are drawn live with
their counters."""

from __future__ import annotations

import re
from pathlib import Path

import av
import pytest
from PIL import Image

from data.classes import class_names

pytestmark = pytest.mark.browser

MIN_ANNOTATED = 10
H264 = 'video/mp4; codecs="avc1.42E01E"'
# A function, not an expression: the page's CSP forbids the eval Playwright would need.
ANNOTATED_AT_LEAST = "n => Number(document.querySelector('#stat-frames').textContent) >= n"
SIGN_IMAGE = "000_0001.png"  # class 0 in the CTSRD annotations
SIGN_CLASS = class_names("ctsrd")[0]


def write_webm(path: Path, frames, rate: float, size: tuple[int, int]) -> Path:
    """VP8 WebM, which every Chromium plays (H.264 depends on the build)."""
    with av.open(str(path), "w", format="webm") as output:
        stream = output.add_stream("libvpx", rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 2_000_000
        for frame in frames:
            output.mux(stream.encode(frame.reformat(format="yuv420p")))
        output.mux(stream.encode())
    return path


def playable_video(page, video: Path, tmp_path: Path, seconds: float = 5) -> Path:
    """The clip itself when this Chromium plays H.264 (Debian's does), else its first
    seconds as VP8 WebM."""
    if page.evaluate(f"document.createElement('video').canPlayType('{H264}')"):
        return video
    with av.open(str(video)) as source:
        stream = source.streams.video[0]
        frames = (f for f in source.decode(stream) if f.time is not None and f.time <= seconds)
        size = (stream.width, stream.height)
        return write_webm(tmp_path / f"{video.stem}.webm", frames, stream.average_rate, size)


def sign_clip(picture_path: Path, path: Path, seconds: int = 4, rate: int = 15) -> Path:
    """A real sign picture as a video: a slow zoom into it, as when driving towards it."""
    picture = Image.open(picture_path).convert("RGB")
    width, height = picture.size
    side = 360
    count = seconds * rate

    def frame(index: int) -> av.VideoFrame:
        zoom = 1 - 0.15 * index / count
        left, top = width * (1 - zoom) / 2, height * (1 - zoom) / 2
        crop = (left, top, left + width * zoom, top + height * zoom)
        return av.VideoFrame.from_image(picture.resize((side, side), Image.BICUBIC, box=crop))

    return write_webm(path, (frame(index) for index in range(count)), rate, (side, side))


def start_streaming(page, expect, video: Path, rate: str, threshold: str) -> None:
    page.set_input_files("#video-input", video)
    expect(page.locator("#video-status")).to_contain_text("ready")
    page.select_option("#video-rate", rate)
    page.select_option("#video-threshold", threshold)
    page.get_by_role("button", name="Start").click()
    expect(page.locator("#video-status")).to_contain_text(f"Streaming at {rate} frames/s")


def test_dashcam_video_is_annotated_live(
    page, expect, tiny_service, traffic_video, tmp_path, screenshot
) -> None:
    page.goto(f"{tiny_service}/#video")
    start_streaming(page, expect, playable_video(page, traffic_video, tmp_path), "10", "0")

    page.wait_for_function(ANNOTATED_AT_LEAST, arg=MIN_ANNOTATED)
    assert float(page.locator("#stat-fps").text_content()) > 0
    expect(page.locator("#stat-latency")).to_contain_text("ms")
    expect(page.locator("#video-label")).to_contain_text("%")
    # With no threshold every answer is drawn; the mask layer takes the size of the frames
    # sent, the clip's own 480x360.
    mask_size = page.locator("#video-stage canvas.mask-layer").evaluate(
        "canvas => [canvas.width, canvas.height]"
    )
    assert mask_size == [480, 360]
    screenshot(page, "video-dashcam")

    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#video-status")).to_have_text("Stopped.")
    expect(page.get_by_role("button", name="Start")).to_be_enabled()
    assert int(page.locator("#stat-frames").text_content()) >= MIN_ANNOTATED


def test_a_sign_in_a_video_is_read_live(
    page, expect, trained_service, ctsrd_real, tmp_path, screenshot
) -> None:
    clip = sign_clip(ctsrd_real / "images" / SIGN_IMAGE, tmp_path / "sign.webm")
    page.goto(f"{trained_service}/#video")
    start_streaming(page, expect, clip, "10", "0.5")

    expect(page.locator("#video-label")).to_contain_text(re.compile(f"^{SIGN_CLASS} · "))
    page.wait_for_function(ANNOTATED_AT_LEAST, arg=MIN_ANNOTATED)
    screenshot(page, "video", for_docs=True)
    page.get_by_role("button", name="Stop").click()


def test_webcam_frames_are_annotated(page, expect, tiny_service) -> None:
    page.goto(f"{tiny_service}/#video")
    page.get_by_role("button", name="Webcam").click()
    expect(page.locator("#video-status")).to_contain_text("Webcam ready")
    page.get_by_role("button", name="Start").click()
    page.wait_for_function(ANNOTATED_AT_LEAST, arg=5)
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#video-status")).to_have_text("Stopped.")
