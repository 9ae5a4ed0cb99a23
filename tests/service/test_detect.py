"""Scene mode of the service: POST /v1/detect, /v1/video?mode=scene and the stream with
mode=scene (track ids), the 503 without a scene model, and bad, empty and sign-less frames.

Scene models here are tiny SignNets whose segmentation head marks every pixel ("whole":
each frame is one sign, its box the frame) or none ("empty"): the answers are known."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from data.classes import class_names
from model.detect import DetectConfig, SceneSegmenter
from model.device import cpu_has_amx
from model.inference import Predictor
from service.app import create_app
from service.decode import ImageLimits
from service.engine import Engine
from service.errors import Overloaded
from service.limits import PixelBudget
from service.pipeline import Options, Pipeline
from service.schemas import MaskFormat

torch.set_num_threads(1)
SCENE = {"scenes": True, "scene_long_side": 64}


@pytest.fixture(scope="module")
def scene_client(make_settings, whole_frame_scene_model_path, one_class_model_path):
    """Every frame is one sign, read as class 3."""
    settings = make_settings(
        model=one_class_model_path, scene_model=whole_frame_scene_model_path, **SCENE
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def empty_client(make_settings, empty_scene_model_path):
    with TestClient(
        create_app(make_settings(scene_model=empty_scene_model_path, **SCENE))
    ) as client:
        yield client


def detect(client, data: bytes, **params):
    return client.post("/v1/detect", params=params, files={"file": ("frame", data)})


def decode_rle(counts: list[int], height: int, width: int) -> np.ndarray:
    values = np.zeros(len(counts), bool)
    values[1::2] = True
    return np.repeat(values, counts).reshape(width, height).T


def test_detect_answers_every_sign_with_box_mask_class_and_scores(scene_client, media) -> None:
    response = detect(scene_client, media.encode(media.scene(160, 90)), mask_format="rle")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image_size"] == [90, 160]
    assert set(body["timings_ms"]) >= {"decode", "segment", "instances", "classify", "total"}
    assert len(body["signs"]) == 1
    for sign in body["signs"]:
        assert sign["box"] == [0, 0, 160, 90]
        assert sign["kind"] == "sign" and sign["class_id"] == 3
        assert sign["class_name"] == class_names("ctsrd")[3]
        assert sign["confidence"] > 0.99 and sign["score"] > 0.99
        assert sign["mask"]["format"] == "rle" and sign["mask"]["size"] == [90, 160]
        assert decode_rle(sign["mask"]["data"], 90, 160).all()
        assert "track_id" not in sign  # images are not tracked


def test_masks_as_png_or_none(scene_client, media) -> None:
    data = media.encode(media.scene(64, 48))
    for fmt in ("png", "none"):
        signs = detect(scene_client, data, mask_format=fmt).json()["signs"]
        assert len(signs) == 1 and (signs[0]["mask"] is None) == (fmt == "none")


@pytest.mark.parametrize(
    ("width", "height", "value"), [(8, 8, 0), (640, 360, 128), (3000, 200, 255), (9, 700, 40)]
)
def test_grey_tiny_and_long_frames_get_answers(scene_client, media, width, height, value) -> None:
    image = np.full((height, width, 3), value, np.uint8)
    response = detect(scene_client, media.encode(image), mask_format="none")
    assert response.status_code == 200, response.text
    assert response.json()["image_size"] == [height, width]


def test_a_frame_with_no_sign_gets_an_empty_list(empty_client, media) -> None:
    response = detect(empty_client, media.encode(media.scene(320, 180)))
    assert response.status_code == 200
    assert response.json()["signs"] == []


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"", 422, "empty_file"),
        (b"not an image at all", 415, "unsupported_media_type"),
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x40\0\0\0\x40\x08\x02", 422, "invalid_image"),
    ],
)
def test_bad_frames_get_4xx_errors(scene_client, data, status, code) -> None:
    response = detect(scene_client, data)
    assert response.status_code == status and response.json()["error"]["code"] == code


def test_too_small_and_too_large_frames_are_refused(scene_client, media) -> None:
    small = detect(scene_client, media.encode(np.zeros((4, 4, 3), np.uint8)))
    assert small.status_code == 422 and small.json()["error"]["code"] == "image_too_small"
    large = detect(scene_client, media.encode(np.zeros((1200, 1000, 3), np.uint8)))  # > 1 MP
    assert large.status_code == 422 and large.json()["error"]["code"] == "image_too_large"


def test_without_a_scene_model_scene_routes_answer_503(client, media, tmp_path) -> None:
    response = detect(client, media.encode(media.scene()))
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "no_scene_model" and "--scene-model" in error["message"]
    clip = media.video(tmp_path / "clip.mp4", frames=2)
    with clip.open("rb") as file:
        video = client.post("/v1/video", params={"mode": "scene"}, files={"file": file})
    assert video.status_code == 503 and video.json()["error"]["code"] == "no_scene_model"
    with client.websocket_connect("/v1/stream?mode=scene") as ws:
        assert json.loads(ws.receive_text())["error"]["code"] == "no_scene_model"
        assert ws.receive()["code"] == 1011
    assert client.get("/v1/model").json()["scene_model"] is None


def test_the_model_description_names_the_scene_model(scene_client) -> None:
    scene = scene_client.get("/v1/model").json()["scene_model"]
    assert scene["file"] == "whole.pt" and scene["long_side"] == 64 and scene["tile"] == 0
    assert scene["max_upscale"] == 1.5  # a frame under 64 px is enlarged, by 1.5 at most
    assert scene["read_margin"] == 0.1
    assert scene["min_solidity"] == 0.75  # ragged regions are dropped
    assert scene["mirror"] is False  # off on a CPU unless asked for
    # bfloat16 on a CPU by default only where it has AMX (SCENE_BF16=false: float32 anywhere)
    assert scene["dtype"] == ("bfloat16" if cpu_has_amx() else "float32")


def test_a_mirrored_scene_model_is_served_as_set(
    make_settings, whole_frame_scene_model_path, media
) -> None:
    settings = make_settings(scene_model=whole_frame_scene_model_path, scene_mirror=True, **SCENE)
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/model").json()["scene_model"]["mirror"] is True
        frame = media.encode(np.full((48, 80, 3), 90, np.uint8))
        signs = detect(client, frame, mask_format="none").json()["signs"]
        assert [sign["box"] for sign in signs] in ([], [[0, 0, 80, 48]])


@pytest.mark.parametrize("bf16", [True, False])
def test_a_scene_model_runs_in_the_dtype_set(
    make_settings, whole_frame_scene_model_path, media, bf16
) -> None:
    settings = make_settings(scene_model=whole_frame_scene_model_path, scene_bf16=bf16, **SCENE)
    with TestClient(create_app(settings)) as client:
        dtype = client.get("/v1/model").json()["scene_model"]["dtype"]
        assert dtype == ("bfloat16" if bf16 else "float32")
        frame = media.encode(np.full((48, 80, 3), 90, np.uint8))
        signs = detect(client, frame, mask_format="none").json()["signs"]
        assert [sign["box"] for sign in signs] in ([], [[0, 0, 80, 48]])


def test_video_in_scene_mode_tracks_each_sign(scene_client, media, tmp_path) -> None:
    clip = media.video(tmp_path / "clip.mp4", frames=6, size=(96, 64))
    with clip.open("rb") as file:
        response = scene_client.post(
            "/v1/video",
            params={"mode": "scene", "mask_format": "none"},
            files={"file": ("clip.mp4", file)},
        )
    assert response.status_code == 200, response.text
    lines = [json.loads(line) for line in response.text.splitlines()]
    frames, summary = lines[:-1], lines[-1]["summary"]
    assert [line["frame_index"] for line in frames] == list(range(6))
    signs = [sign for line in frames for sign in line["signs"]]
    # Each frame is one sign filling it: a single track, whose class is the vote.
    assert [sign["track_id"] for sign in signs] == [1] * 6
    assert all(sign["box"] == [0, 0, 96, 64] for sign in signs)
    assert summary["mode"] == "scene" and summary["tracks"] == 1
    assert summary["frames"] == 6


def test_video_mode_classify_is_the_default(scene_client, media, tmp_path) -> None:
    clip = media.video(tmp_path / "clip.mp4", frames=2)
    with clip.open("rb") as file:
        response = scene_client.post("/v1/video", files={"file": ("clip.mp4", file)})
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert "class_name" in lines[0] and "signs" not in lines[0]
    assert lines[-1]["summary"]["mode"] == "classify" and "tracks" not in lines[-1]["summary"]


def test_stream_in_scene_mode_keeps_track_ids_per_connection(scene_client, media) -> None:
    frames = [media.encode(np.roll(media.scene(96, 64), i, axis=1), "JPEG") for i in range(3)]
    for _ in range(2):  # a second connection starts its own tracks: ids from 1 again
        with scene_client.websocket_connect("/v1/stream?mode=scene&mask_format=none") as ws:
            answers = []
            for frame_id, frame in enumerate(frames):
                ws.send_text(json.dumps({"frame_id": frame_id}))
                ws.send_bytes(frame)
                answers.append(json.loads(ws.receive_text()))
        assert [a["frame_id"] for a in answers] == [0, 1, 2]
        assert [sign["track_id"] for a in answers for sign in a["signs"]] == [1, 1, 1]
        assert all(a["image_size"] == [64, 96] for a in answers)


def test_stream_bad_frames_in_scene_mode_get_errors(scene_client) -> None:
    with scene_client.websocket_connect("/v1/stream?mode=scene") as ws:
        ws.send_bytes(b"garbage")
        answer = json.loads(ws.receive_text())
        assert answer["error"]["code"] == "unsupported_media_type"


def test_the_engine_batches_frames_of_one_shape_together(
    tiny_model_path, whole_frame_scene_model_path
) -> None:
    predictor = Predictor.load(tiny_model_path, "cpu")
    scene = SceneSegmenter.load(whole_frame_scene_model_path, "cpu")
    batches: list[int] = []

    async def scenario():
        engine = Engine(
            predictor,
            scene=scene,
            scene_input=(32, 64),
            scene_max_batch_size=2,
            max_wait_ms=30,
            on_batch=lambda n, s: batches.append(n),
        )
        await engine.start()
        try:
            return await asyncio.gather(
                engine.segment(torch.zeros(1, 3, 32, 64)),
                engine.submit(torch.zeros(3, 32, 32), (32, 32)),
                engine.segment(torch.zeros(2, 3, 32, 64)),  # two tiles of one frame
                engine.segment(torch.zeros(1, 3, 64, 64)),
            )
        finally:
            await engine.stop()

    first, crop, tiled, other = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert first.output.shape == (1, 1, 32, 64) and tiled.output.shape == (2, 1, 32, 64)
    assert other.output.shape == (1, 1, 64, 64) and crop.prediction.mask.shape == (32, 32)
    assert first.batch_size == tiled.batch_size == 2 and other.batch_size == 1
    assert sorted(batches) == [1, 1, 2]


def test_whole_frames_past_their_places_are_refused_at_once(
    tiny_model_path, whole_frame_scene_model_path, media
) -> None:
    """A frame costs far more than a sign photo: with its few places taken, the next frame is
    refused before it is decoded, while sign photos are still answered."""
    predictor = Predictor.load(tiny_model_path, "cpu")
    scene = SceneSegmenter.load(whole_frame_scene_model_path, "cpu")
    frame = media.encode(media.scene(96, 64))

    async def scenario():
        engine = Engine(predictor, scene=scene, scene_input=(64, 64), scene_queue_size=1)
        pipeline = Pipeline(
            engine,
            predictor,
            PixelBudget(1_000_000, timeout_s=30),
            ImageLimits(max_pixels=100_000),
            DetectConfig(long_side=64),
        )
        options = Options(1, MaskFormat.none)
        await engine.start()
        try:
            with engine.admit_frame():
                with pytest.raises(Overloaded, match="whole frames"):
                    await asyncio.wait_for(pipeline.answer(frame, pipeline.scene, options), 1)
                photo = await pipeline.answer(frame, pipeline.classify, options)
            detections = await pipeline.answer(frame, pipeline.scene, options)
            return photo, detections
        finally:
            await engine.stop()

    photo, detections = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert photo.image_size == detections.image_size == (64, 96)


def test_memory_is_given_back_after_every_whole_frame(scene_client, media, monkeypatch) -> None:
    """A frame's activations land in the inference thread's heap whatever the upload's size;
    a sign photo of that size gives nothing back."""
    calls = []
    monkeypatch.setattr("service.pipeline.memory.give_back_soon", lambda: calls.append(1))
    frame = media.encode(media.scene(96, 64))
    assert detect(scene_client, frame, mask_format="none").status_code == 200
    assert len(calls) == 1
    photo = scene_client.post("/v1/predict", files={"file": ("photo", frame)})
    assert photo.status_code == 200 and len(calls) == 1
