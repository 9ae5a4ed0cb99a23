"""POST /v1/predict and /v1/predict/batch, and GET /v1/model."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from model.checkpoint import export_model, load_model
from model.inference import Predictor
from service.app import create_app


def rle_decode(counts: list[int], height: int, width: int) -> np.ndarray:
    flat = np.repeat(np.arange(len(counts)) % 2 == 1, counts)
    return flat.reshape(width, height).T


def test_predict_answers_in_the_documented_shape(client, media, tiny_model_path) -> None:
    image = media.scene(64, 48, seed=3)
    response = client.post(
        "/v1/predict",
        params={"top_k": 3},
        files={"file": ("sign.png", media.encode(image), "image/png")},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "kind", "class_id", "class_name", "confidence", "top_k", "box", "mask", "image_size",
        "timings_ms",
    }  # fmt: skip
    assert body["image_size"] == [48, 64]
    assert len(body["top_k"]) == 3
    assert set(body["timings_ms"]) == {"decode", "queue", "inference", "total"}
    assert body["timings_ms"]["total"] >= body["timings_ms"]["inference"]

    # The same image through the Predictor directly: the service adds nothing and loses nothing.
    # Found, then read (model/reading.py), as `greedysign predict` answers.
    (expected,) = Predictor.load(tiny_model_path, "cpu").read_images([image], top_k=3)
    assert (body["kind"], body["class_id"]) == (expected.kind, expected.class_id)
    assert body["class_name"] == expected.class_name
    assert [item["class_id"] for item in body["top_k"]] == [s.class_id for s in expected.top_k]
    assert body["confidence"] == pytest.approx(expected.confidence, abs=1e-6)
    assert body["box"] == list(expected.box)

    mask = body["mask"]
    assert mask["format"] == "png" and mask["size"] == [48, 64]
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(mask["data"]))))
    assert np.array_equal(decoded, expected.mask)


def test_rle_mask_and_box_agree(client, png_bytes) -> None:
    body = client.post(
        "/v1/predict", params={"mask_format": "rle"}, files={"file": ("a.png", png_bytes)}
    ).json()
    height, width = body["mask"]["size"]
    mask = rle_decode(body["mask"]["data"], height, width)
    ys, xs = np.nonzero(mask)
    assert body["box"] == [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def test_mask_format_none(client, png_bytes) -> None:
    body = client.post(
        "/v1/predict", params={"mask_format": "none"}, files={"file": ("a.png", png_bytes)}
    ).json()
    assert body["mask"] is None and body["box"] is not None


def test_batch_answers_each_file_and_reports_errors_per_item(client, media) -> None:
    files = [
        ("files", ("one.png", media.encode(media.scene(seed=1)), "image/png")),
        ("files", ("notes.txt", b"not an image", "text/plain")),
        ("files", ("two.jpg", media.encode(media.scene(40, 40, seed=2), "JPEG"), "image/jpeg")),
        ("files", ("empty.png", b"", "image/png")),
    ]
    response = client.post("/v1/predict/batch", params={"mask_format": "none"}, files=files)
    assert response.status_code == 200
    items = response.json()
    assert [item["filename"] for item in items] == ["one.png", "notes.txt", "two.jpg", "empty.png"]
    assert items[0]["image_size"] == [48, 64] and items[2]["image_size"] == [40, 40]
    assert items[1]["error"]["code"] == "unsupported_media_type"
    assert items[3]["error"]["code"] == "empty_file"


def test_batch_needs_files(client) -> None:
    response = client.post("/v1/predict/batch")
    assert response.status_code == 422


def test_model_description(client) -> None:
    body = client.get("/v1/model").json()
    assert body["arch"] == "resnet18" and body["image_size"] == 32
    assert body["num_classes"] == 58 and len(body["classes"]) == 58
    assert body["open_set"] == {
        "answers": ["unknown sign", "no sign"],
        "threshold": 0.0,
        "trained": True,
    }
    assert body["classes"][0] == {"class_id": 0, "class_name": "Speed limit 5 km/h"}
    assert body["method"] == "greedy-dib" and body["metrics"] == {"accuracy": 0.5}
    assert body["device"] == "cpu" and body["fp16"] is False


def test_the_model_files_open_set_threshold_is_applied_and_described(
    make_settings, tiny_model_path, tmp_path, png_bytes
) -> None:
    """The threshold training writes into the model file is the one the service answers by;
    the tiny model's random guesses are far below 0.99."""
    model, info = load_model(tiny_model_path)
    info.open_set = {"threshold": 0.99}
    unsure = export_model(model, info, tmp_path / "unsure.pt")
    files = {"file": ("a.png", png_bytes)}
    with TestClient(create_app(make_settings(model=unsure))) as unsure_client:
        assert unsure_client.get("/v1/model").json()["open_set"]["threshold"] == 0.99
        unsure_answer = unsure_client.post("/v1/predict", files=files).json()
    with TestClient(create_app(make_settings())) as plain_client:  # the same weights, at 0
        plain_answer = plain_client.post("/v1/predict", files=files).json()
    assert plain_answer["kind"] == "sign" and plain_answer["confidence"] < 0.99
    assert unsure_answer["kind"] == "unknown_sign" and unsure_answer["class_id"] is None
    assert unsure_answer["top_k"][0]["class_id"] == plain_answer["class_id"]


def test_the_model_says_whether_its_open_set_outputs_learned_from_examples(
    make_settings, tiny_model_path, tmp_path
) -> None:
    """A model trained without TT100K has "unknown sign" and "no sign" outputs that never saw
    an example; /v1/model said `trained` all the same."""
    model, info = load_model(tiny_model_path)
    for recorded, trained in ((0, False), (12, True), (None, True)):  # None: a model from before
        split = {"seed": 0} if recorded is None else {"open_set_train_images": recorded}
        info.split = split
        path = export_model(model, info, tmp_path / f"model-{recorded}.pt")
        with TestClient(create_app(make_settings(model=path))) as client:
            assert client.get("/v1/model").json()["open_set"]["trained"] is trained


def test_batch_file_count_is_limited(make_settings, png_bytes) -> None:
    with TestClient(create_app(make_settings(max_batch_files=2))) as client:
        files = [("files", (f"{i}.png", png_bytes, "image/png")) for i in range(3)]
        response = client.post("/v1/predict/batch", files=files)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"
    assert "files" in response.json()["error"]["message"].lower()
