"""The Video tab in a real Chromium: the dashcam clip, a clip made from a real sign, and the
(synthetic) webcam are streamed over WS /v1/stream, and the answers are drawn live with
their counters; a camera granted late, a hidden tab, a failed frame and a sound file are
handled."""

from __future__ import annotations

import json
import re
import wave
from pathlib import Path

import av
import numpy as np
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


# Wraps getUserMedia to keep every camera it opens (window.cameras, in call order) and to
# answer the first call FIRST_DELAY_MS late, as when the permission prompt stays open a while.
CAMERA_SPY_JS = """(() => {
  const real = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  window.cameras = [];
  window.camerasAnswered = 0;
  let calls = 0;
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    const call = calls++;
    const camera = await real(constraints);
    window.cameras[call] = camera;
    await new Promise((resolve) => setTimeout(resolve, call === 0 ? FIRST_DELAY_MS : 0));
    window.camerasAnswered += 1;
    return camera;
  };
})();"""
CAMERAS_ON_JS = """() => window.cameras.map(
  camera => camera.getTracks().some(track => track.readyState === "live")
)"""


def spy_on_cameras(page, first_delay_ms: int = 0) -> None:
    page.add_init_script(CAMERA_SPY_JS.replace("FIRST_DELAY_MS", str(first_delay_ms)))


def grey_clip(path: Path, seconds: int = 6, rate: int = 10) -> Path:
    """A small VP8 clip of plain frames, their shade changing (no sign in them)."""
    frames = (
        av.VideoFrame.from_ndarray(
            np.full((96, 160, 3), 40 + index % 160, np.uint8), format="rgb24"
        )
        for index in range(seconds * rate)
    )
    return write_webm(path, frames, rate, (160, 96))


def test_a_camera_granted_after_a_newer_webcam_click_is_turned_off(
    page, expect, tiny_service
) -> None:
    spy_on_cameras(page, first_delay_ms=1500)
    page.goto(f"{tiny_service}/#video")
    webcam = page.get_by_role("button", name="Webcam")
    webcam.click()
    webcam.click()  # while the first request still waits for its answer
    expect(page.locator("#video-status")).to_contain_text("Webcam ready")
    page.wait_for_function("() => window.camerasAnswered === 2")
    # The late camera goes off; the one shown is the newer, and stays on.
    assert page.evaluate(CAMERAS_ON_JS) == [False, True]
    assert page.evaluate("() => document.querySelector('#video').srcObject === window.cameras[1]")
    expect(page.locator("#video-status")).to_contain_text("Webcam ready")


def test_a_file_chosen_while_the_camera_is_asked_for_wins(
    page, expect, tiny_service, tmp_path
) -> None:
    spy_on_cameras(page, first_delay_ms=1500)
    page.goto(f"{tiny_service}/#video")
    page.get_by_role("button", name="Webcam").click()
    page.set_input_files("#video-input", grey_clip(tmp_path / "grey.webm"))
    expect(page.locator("#video-status")).to_contain_text("“grey.webm” ready")
    page.wait_for_function("() => window.camerasAnswered === 1")
    assert page.evaluate(CAMERAS_ON_JS) == [False]
    assert page.evaluate("() => document.querySelector('#video').srcObject") is None
    page.wait_for_timeout(300)  # a camera taking over would report "Webcam ready" by now
    expect(page.locator("#video-status")).to_contain_text("“grey.webm” ready")


def wait_closed(socket) -> None:
    if not socket.is_closed():
        socket.wait_for_event("close", timeout=5_000)


def test_leaving_the_tab_stops_the_stream_and_keeps_the_file(
    page, expect, tiny_service, tmp_path
) -> None:
    sockets = []
    page.on("websocket", lambda socket: sockets.append(socket))
    page.goto(f"{tiny_service}/#video")
    start_streaming(page, expect, grey_clip(tmp_path / "grey.webm", seconds=60), "10", "0")
    page.wait_for_function(ANNOTATED_AT_LEAST, arg=2)

    page.get_by_role("tab", name="Model").click()
    wait_closed(sockets[0])
    assert page.evaluate("() => document.querySelector('#video').paused")

    page.get_by_role("tab", name="Video").click()
    expect(page.locator("#video-status")).to_contain_text("Stopped on leaving the Video tab")
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    # The file is still the source: Start streams it again at once.
    page.get_by_role("button", name="Start").click()
    expect(page.locator("#video-status")).to_contain_text("Streaming at 10 frames/s")
    page.get_by_role("button", name="Stop").click()


def test_leaving_the_tab_turns_the_webcam_off(page, expect, tiny_service) -> None:
    spy_on_cameras(page)
    sockets = []
    page.on("websocket", lambda socket: sockets.append(socket))
    page.goto(f"{tiny_service}/#video")
    page.get_by_role("button", name="Webcam").click()
    expect(page.locator("#video-status")).to_contain_text("Webcam ready")
    page.get_by_role("button", name="Start").click()
    page.wait_for_function(ANNOTATED_AT_LEAST, arg=2)

    page.get_by_role("tab", name="Images").click()
    wait_closed(sockets[0])
    assert page.evaluate(CAMERAS_ON_JS) == [False]

    page.get_by_role("tab", name="Video").click()
    expect(page.locator("#video-status")).to_contain_text("webcam was turned off")
    expect(page.get_by_role("button", name="Start")).to_be_disabled()


def test_a_failed_frame_is_reported_until_frames_are_read_again(
    page, expect, tiny_service, tmp_path
) -> None:
    # Between the page and the service: the third answer becomes a failed frame, and the
    # answers after it are held back until the failure has been seen on the page.
    state = {"answers": 0, "hold": False}

    def between(page_side) -> None:
        service_side = page_side.connect_to_server()

        def from_service(message) -> None:
            if state["hold"]:
                return
            state["answers"] += 1
            if state["answers"] == 3:
                failed = {
                    "frame_id": json.loads(message)["frame_id"],
                    "error": {"code": "inference_failed", "message": "the model failed"},
                }
                page_side.send(json.dumps(failed))
                state["hold"] = True
                return
            page_side.send(message)

        service_side.on_message(from_service)

    page.route_web_socket(re.compile(r"/v1/stream"), between)
    page.goto(f"{tiny_service}/#video")
    start_streaming(page, expect, grey_clip(tmp_path / "grey.webm", seconds=60), "10", "0")
    status = page.locator("#video-status")
    expect(status).to_contain_text("not read: The model failed on this picture")
    state["hold"] = False
    expect(status).to_have_text("Streaming at 10 frames/s.")
    page.get_by_role("button", name="Stop").click()


def test_a_sound_file_is_refused(page, expect, tiny_service, tmp_path) -> None:
    sound = tmp_path / "tone.wav"
    with wave.open(str(sound), "wb") as output:
        output.setnchannels(1)
        output.setsampwidth(2)
        output.setframerate(8000)
        tone = np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000) * 8000
        output.writeframes(tone.astype("<i2").tobytes())
    page.goto(f"{tiny_service}/#video")
    page.set_input_files("#video-input", sound)
    expect(page.locator("#video-status")).to_contain_text("“tone.wav” has no picture")
    expect(page.get_by_role("button", name="Start")).to_be_disabled()


def test_a_video_cut_short_is_called_so_and_a_picture_dropped_here_is_sent_back(
    page, expect, tiny_service, traffic_video, tmp_path
) -> None:
    """A clip that played and then broke was "a file this browser cannot play", and a photo
    dropped on this tab threw away the clip already loaded."""
    page.goto(f"{tiny_service}/#video")
    whole = playable_video(page, traffic_video, tmp_path, seconds=6)
    cut = tmp_path / f"cut{whole.suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    start_streaming(page, expect, cut, "10", "0")
    expect(page.locator("#video-status")).to_contain_text(
        re.compile(r"could not be decoded past [\d.]+ s: the file is damaged or cut short"),
        timeout=30_000,
    )

    page.set_input_files("#video-input", whole)
    expect(page.locator("#video-status")).to_contain_text("ready")
    dropped = page.evaluate_handle(
        """() => {
          const transfer = new DataTransfer();
          transfer.items.add(new File(["\\x89PNG"], "sign.png", {type: "image/png"}));
          return transfer;
        }"""
    )
    page.dispatch_event("#panel-video", "drop", {"dataTransfer": dropped})
    expect(page.locator("#video-status")).to_contain_text(
        "“sign.png” is a picture: drop it on the Images tab"
    )
    expect(page.get_by_role("button", name="Start")).to_be_enabled()  # the clip stayed
