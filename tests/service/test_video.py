"""POST /v1/video: containers, frame sampling, the frame cap, the real dashcam clip."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import features

from service.app import create_app
from service.video_frames import VideoReader, sniff_container


def post_video(client, path: Path, **params) -> list[dict]:
    with path.open("rb") as file:
        response = client.post(
            "/v1/video",
            params={"mask_format": "none", "top_k": 1, **params},
            files={"file": (path.name, file, "application/octet-stream")},
        )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    return [json.loads(line) for line in response.text.splitlines()]


@pytest.mark.parametrize(
    ("container", "codec", "suffix"),
    [
        ("mp4", "libx264", "mp4"),
        ("matroska", "libx264", "mkv"),
        ("webm", "libvpx-vp9", "webm"),
        ("avi", "mpeg4", "avi"),
    ],
)
def test_every_container_streams_one_line_per_frame_then_a_summary(
    client, media, tmp_path, container, codec, suffix
) -> None:
    clip = media.video(tmp_path / f"clip.{suffix}", container, codec, frames=12, rate=10)
    lines = post_video(client, clip)
    frames, summary = lines[:-1], lines[-1]["summary"]
    assert [line["frame_index"] for line in frames] == list(range(12))
    assert [line["pts_s"] for line in frames] == pytest.approx([i / 10 for i in range(12)])
    assert all(line["image_size"] == [48, 64] and line["mask"] is None for line in frames)
    assert summary["frames"] == summary["decoded"] == 12
    assert summary["video"]["width"] == 64 and summary["video"]["fps"] == pytest.approx(10)


@pytest.mark.skipif(
    not hasattr(av.VideoStream, "set_display_rotation"), reason="PyAV cannot write the rotation"
)
def test_a_phone_video_is_read_upright(client, media, tmp_path) -> None:
    """Stored landscape with a display rotation, as phones store portrait video: its frames
    are turned as players turn them (as photos are by EXIF), and so are their sizes."""
    plain = media.video(tmp_path / "plain.mp4", frames=2)
    turned = media.video(tmp_path / "turned.mp4", frames=2, display_rotation=-90)
    with plain.open("rb") as stored, turned.open("rb") as phone:
        for as_stored, shown in zip(
            VideoReader(stored, 10**6).frames(None, 2),
            VideoReader(phone, 10**6).frames(None, 2),
            strict=True,
        ):
            assert shown.size == (64, 48) and as_stored.size == (48, 64)
            assert (shown.rgb == np.rot90(as_stored.rgb, -1)).all()  # a quarter turn clockwise
    *frames, summary = post_video(client, turned)
    assert all(line["image_size"] == [64, 48] for line in frames)
    video = summary["summary"]["video"]
    assert (video["width"], video["height"]) == (48, 64)  # as shown, as the frames are


def test_a_video_frame_is_answered_as_the_same_picture_posted_alone(client, media, tmp_path):
    """Lossless frames (FFV1, RGB) against the same pictures as PNGs: a channel swap or any
    drift in how video frames are prepared would change the random model's answers."""
    pictures = [media.scene(64, 48, seed=seed) for seed in range(3)]
    clip = tmp_path / "lossless.mkv"
    with av.open(str(clip), "w", format="matroska") as output:
        stream = output.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "bgr0"
        for picture in pictures:
            output.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        output.mux(stream.encode())
    *frames, _ = post_video(client, clip, top_k=3, mask_format="rle")
    assert len(frames) == len(pictures)
    for frame, picture in zip(frames, pictures, strict=True):
        alone = client.post(
            "/v1/predict",
            params={"top_k": 3, "mask_format": "rle"},
            files={"file": ("frame.png", media.encode(picture))},
        ).json()
        assert (frame["kind"], frame["class_id"], frame["box"]) == (
            alone["kind"],
            alone["class_id"],
            alone["box"],
        )
        assert [k["class_id"] for k in frame["top_k"]] == [k["class_id"] for k in alone["top_k"]]
        assert frame["confidence"] == pytest.approx(alone["confidence"], abs=1e-5)
        assert frame["mask"] == alone["mask"]


def test_frames_are_sampled_at_the_asked_rate(client, media, tmp_path) -> None:
    clip = media.video(tmp_path / "clip.mp4", frames=20, rate=10)
    lines = post_video(client, clip, fps=2.5)
    frames = [line for line in lines if "frame_index" in line]
    assert [line["frame_index"] for line in frames] == [0, 4, 8, 12, 16]
    assert lines[-1]["summary"]["decoded"] == 20 and lines[-1]["summary"]["sample_fps"] == 2.5


def test_masks_come_with_video_frames_when_asked(client, media, tmp_path) -> None:
    clip = media.video(tmp_path / "clip.mp4", frames=2)
    lines = post_video(client, clip, mask_format="rle")
    assert lines[0]["mask"]["format"] == "rle" and lines[0]["mask"]["size"] == [48, 64]


def test_the_frame_cap_bounds_the_work(client, media, tmp_path) -> None:
    clip = media.video(tmp_path / "clip.mp4", frames=60, rate=30)  # cap in tests: 40
    summary = post_video(client, clip)[-1]["summary"]
    assert summary["frames"] == 40 and summary["frame_cap_reached"] is True


def test_bad_fps_is_a_validation_error(client, media, tmp_path) -> None:
    clip = media.video(tmp_path / "clip.mp4", frames=2)
    with clip.open("rb") as file:
        response = client.post("/v1/video", params={"fps": 0}, files={"file": file})
    assert response.status_code == 422


def test_containers_are_sniffed_by_content() -> None:
    assert sniff_container(b"\x00\x00\x00\x20ftypisom\x00\x00") == "mov"
    assert sniff_container(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81") == "matroska"
    assert sniff_container(b"RIFF\x10\x00\x00\x00AVI LIST") == "avi"
    assert sniff_container(b"RIFF\x10\x00\x00\x00WEBPVP8 ") is None  # a WebP image
    assert sniff_container(b"\x89PNG\r\n\x1a\n\x00\x00") is None
    assert sniff_container(b"#EXTM3U\n") is None  # playlists would make FFmpeg fetch URLs


def test_heif_photos_are_not_videos() -> None:
    # AVIF and HEIC photos are ISO base media files; their ftyp brands tell them apart.
    def ftyp(major: bytes, *compatible: bytes) -> bytes:
        brands = major + b"\x00\x00\x00\x00" + b"".join(compatible)
        return (8 + len(brands)).to_bytes(4, "big") + b"ftyp" + brands + b"\x00\x00\x00\x08meta"

    assert sniff_container(ftyp(b"avif", b"avif", b"mif1", b"miaf")) is None
    assert sniff_container(ftyp(b"heic", b"mif1", b"heic")) is None
    assert sniff_container(ftyp(b"miaf", b"MA1B", b"avis")) is None  # a compatible brand
    assert sniff_container(ftyp(b"isom", b"isom", b"iso2", b"mp41")) == "mov"
    # A brand-like word after the ftyp box is no brand of it.
    assert sniff_container(ftyp(b"isom", b"mp41") + b"mif1") == "mov"


def test_an_avif_photo_is_refused_by_the_video_and_the_image_routes(client, media) -> None:
    if not features.check("avif"):
        pytest.skip("Pillow without its AVIF plugin")
    # FFmpeg opened it as a one-frame video; the image route accepts no AVIF.
    photo = media.encode(media.scene(), "AVIF")
    for route in ("/v1/video", "/v1/predict"):
        response = client.post(route, files={"file": ("photo.avif", photo, "image/avif")})
        assert response.status_code == 415, (route, response.text)
        assert response.json()["error"]["code"] == "unsupported_media_type"


def test_the_real_dashcam_clip(client, traffic_video) -> None:
    lines = post_video(client, traffic_video, fps=1)
    frames, summary = lines[:-1], lines[-1]["summary"]
    assert summary["video"]["width"] == 480 and summary["video"]["height"] == 360
    assert len(frames) == summary["frames"] >= 25  # about 30 s at 1 frame/s
    assert all(line["image_size"] == [360, 480] for line in frames)
    seconds = [line["pts_s"] for line in frames]
    assert all(0.95 < b - a < 1.1 for a, b in zip(seconds, seconds[1:], strict=False))


def test_videos_past_max_videos_are_refused_at_once_and_their_places_come_back(
    make_settings, media, tmp_path
) -> None:
    clip = media.video(tmp_path / "clip.mp4", frames=3)
    with TestClient(create_app(make_settings(max_videos=1))) as client:
        engine = client.app.state.engine
        with engine.admit_video():  # one video in work already
            with clip.open("rb") as file:
                refused = client.post("/v1/video", files={"file": ("clip.mp4", file)})
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
            assert "1 videos" in refused.json()["error"]["message"]
        assert len(post_video(client, clip)) == 4  # its place came back: 3 frames, a summary
        with engine.admit_video():  # and so did the answered video's, and a refused one's
            pass
        not_a_video = client.post("/v1/video", files={"file": ("x.mp4", b"not a video")})
        assert not_a_video.status_code == 415
        assert len(post_video(client, clip)) == 4
