"""model/inference.py: the Predictor and the mask encodings."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from data.classes import label_names
from data.transforms import preprocess
from model.checkpoint import load_model
from model.device import resolve_device
from model.inference import (
    Predictor,
    mask_to_png,
    mask_to_png_base64,
    mask_to_rle,
)


def sign_scene(width: int = 64, height: int = 48, seed: int = 0) -> np.ndarray:
    """HxWx3 uint8: textured background with a red square, like a cropped sign."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 120, (height, width, 3), dtype=np.uint8)
    image[height // 4 : 3 * height // 4, width // 3 : 2 * width // 3] = (220, 30, 30)
    return image


@pytest.fixture(scope="module")
def predictor(tiny_model_path) -> Predictor:
    return Predictor.load(tiny_model_path, "cpu")


def rle_decode(counts: list[int], height: int, width: int) -> np.ndarray:
    """Independent COCO RLE decoder: walk the runs, filling a column-major pixel list."""
    pixels = []
    value = False
    for run in counts:
        pixels.extend([value] * run)
        value = not value
    assert len(pixels) == height * width
    columns = [pixels[x * height : (x + 1) * height] for x in range(width)]
    return np.array(columns, dtype=bool).T


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")


def test_predictor_loads_in_float32_without_autocast_on_cpu(predictor: Predictor) -> None:
    assert predictor.device.type == "cpu" and predictor.fp16 is False
    assert not predictor.model.training
    assert predictor.image_size == 32 and len(predictor.class_names) == 58


def test_preprocess_is_the_eval_pipeline_in_every_thread(predictor: Predictor) -> None:
    images = [sign_scene(50 + i, 30 + 2 * i, seed=i) for i in range(24)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        tensors = list(pool.map(predictor.preprocess, images))
    for image, tensor in zip(images, tensors, strict=True):
        assert torch.equal(tensor, preprocess(image, 32))


def test_predictions_match_the_model_and_live_at_the_original_size(
    predictor: Predictor, tiny_model_path
) -> None:
    images = [sign_scene(64, 48, seed=1), sign_scene(30, 90, seed=2)]
    predictions = predictor.predict_images(images, top_k=3)

    model, _ = load_model(tiny_model_path)
    with torch.inference_mode():
        logits, mask_logits = model(torch.stack([preprocess(im, 32) for im in images]))
    probabilities = logits.softmax(dim=1)
    for index, (image, prediction) in enumerate(zip(images, predictions, strict=True)):
        height, width = image.shape[:2]
        best = int(probabilities[index].argmax())  # over the classes and the open set
        kind = "sign" if best < 58 else ("unknown_sign", "no_sign")[best - 58]
        assert prediction.kind == kind
        assert prediction.class_id == (best if kind == "sign" else None)
        assert prediction.class_name == label_names("ctsrd")[best]
        assert prediction.confidence == pytest.approx(float(probabilities[index].max()), abs=1e-5)
        # The top-k are the known classes, whatever the answer.
        assert prediction.top_k[0].class_id == int(probabilities[index, :58].argmax())
        assert len(prediction.top_k) == 3
        confidences = [s.confidence for s in prediction.top_k]
        assert confidences == sorted(confidences, reverse=True)
        assert prediction.top_k[0].class_name == predictor.class_names[prediction.top_k[0].class_id]

        upsampled = (
            F.interpolate(
                mask_logits[index : index + 1],
                size=(height, width),
                mode="bilinear",
                align_corners=False,
            )[0, 0]
            > 0
        )
        assert prediction.mask.shape == (height, width) and prediction.mask.dtype == bool
        assert np.array_equal(prediction.mask, upsampled.numpy())
        ys, xs = np.nonzero(prediction.mask)
        assert prediction.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_an_unsure_known_class_is_answered_unknown_sign(predictor: Predictor) -> None:
    images = [sign_scene(64, 48, seed=i) for i in range(6)]
    predictor.threshold = 1.0  # no probability reaches it: every known answer is unsure
    try:
        predictions = predictor.predict_images(images)
    finally:
        predictor.threshold = 0.0
    # The random model's top class is a known one for these pictures: each is turned down.
    assert "unknown_sign" in {p.kind for p in predictions}
    assert {p.kind for p in predictions} <= {"unknown_sign", "no_sign"}
    for prediction in predictions:
        assert prediction.class_id is None
        if prediction.kind == "unknown_sign":
            assert prediction.class_name == "unknown sign"
            assert prediction.confidence == pytest.approx(1 - prediction.top_k[0].confidence)


def test_empty_mask_has_no_box(predictor: Predictor) -> None:
    # A bias far below zero makes every mask logit negative: the mask is empty.
    state = {k: v.clone() for k, v in predictor.model.seg_head.state_dict().items()}
    try:
        with torch.no_grad():
            predictor.model.seg_head[0].bias.fill_(-1e4)
        (prediction,) = predictor.predict_images([np.zeros((20, 30, 3), np.uint8)])
    finally:
        predictor.model.seg_head.load_state_dict(state)
    assert prediction.box is None and not prediction.mask.any()


def test_top_k_is_capped_by_the_number_of_classes(predictor: Predictor) -> None:
    (prediction,) = predictor.predict_images([sign_scene()], top_k=500)
    assert len(prediction.top_k) == 58  # the known classes


def test_batch_and_sizes_must_agree(predictor: Predictor) -> None:
    with pytest.raises(ValueError, match="does not match"):
        predictor.predict_batch(torch.zeros(2, 3, 32, 32), [(32, 32)])


def test_warmup_runs(predictor: Predictor) -> None:
    predictor.warmup(max_batch_size=3)


@pytest.mark.parametrize(
    "mask",
    [
        np.zeros((3, 4), bool),
        np.ones((3, 4), bool),
        np.array([[1, 0, 0], [1, 1, 0]], bool),  # starts with a sign pixel: first count 0
        np.random.default_rng(0).random((17, 23)) > 0.5,
    ],
    ids=["empty", "full", "starts-with-sign", "random"],
)
def test_rle_round_trip(mask: np.ndarray) -> None:
    counts = mask_to_rle(mask)
    assert sum(counts) == mask.size
    assert all(c > 0 for c in counts[1:])
    assert np.array_equal(rle_decode(counts, *mask.shape), mask)


def test_rle_is_column_major_starting_with_background() -> None:
    mask = np.array([[0, 1], [0, 1], [1, 1]], bool)
    # Columns: (0, 0, 1), (1, 1, 1): two background pixels, then four sign pixels.
    assert mask_to_rle(mask) == [2, 4]
    assert mask_to_rle(np.array([[1, 0]], bool)) == [0, 1, 1]


def test_png_mask_round_trip() -> None:
    mask = np.random.default_rng(1).random((9, 14)) > 0.5
    decoded = Image.open(io.BytesIO(base64.b64decode(mask_to_png_base64(mask))))
    assert decoded.format == "PNG" and decoded.mode == "1" and decoded.size == (14, 9)
    assert np.array_equal(np.asarray(decoded), mask)
    assert mask_to_png(mask) == base64.b64decode(mask_to_png_base64(mask))
