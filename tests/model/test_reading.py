"""Find, then read: where pass 2 reads, and what the answer keeps from each pass."""

from __future__ import annotations

import numpy as np
import pytest

from model.inference import ClassScore, Prediction, Predictor
from model.reading import READ_MARGIN, combine, reading_window, scaled, worth_reading


def test_the_window_is_the_box_grown_by_the_margin_within_the_picture():
    assert READ_MARGIN == 0.15
    assert reading_window((20, 10, 60, 50), 100, 120) == (14, 4, 66, 56)
    assert reading_window((0, 0, 40, 40), 100, 120) == (0, 0, 46, 46)  # clipped at the edge
    assert reading_window((2, 2, 98, 98), 100, 100) is None  # the whole picture: nothing to cut
    assert reading_window(None, 100, 100) is None


def test_a_box_moves_between_resolutions_of_one_picture():
    assert scaled((10, 20, 30, 40), (100, 200), (50, 100)) == (5, 10, 15, 20)
    assert scaled((1, 1, 2, 2), (100, 100), (10, 10)) == (0, 0, 1, 1)  # never empty
    assert scaled((0, 0, 44, 44), (44, 44), (25, 25)) == (0, 0, 25, 25)  # never past the edge


def _prediction(kind, class_id, box=(1, 1, 5, 5)):
    name = "no sign" if kind == "no_sign" else f"class {class_id}"
    mask = np.zeros((8, 8), bool)
    return Prediction(class_id, name, 0.9, [ClassScore(class_id or 0, name, 0.9)], box, mask, kind)


def test_the_answer_is_read_but_the_mask_is_found():
    found, read = _prediction("sign", 3), _prediction("sign", 7, box=(0, 0, 2, 2))
    answer = combine(found, read)
    assert (answer.class_id, answer.top_k) == (7, read.top_k)
    assert answer.box == found.box and answer.mask is found.mask
    assert worth_reading(found) and not worth_reading(_prediction("no_sign", None))
    assert not worth_reading(_prediction("sign", 3, box=None))


def test_read_images_reads_the_cut_out_sign(tiny_model_path, monkeypatch):
    predictor = Predictor.load(tiny_model_path, "cpu")
    picture = np.zeros((60, 80, 3), np.uint8)
    seen: list[tuple[int, ...]] = []
    first = [_prediction("sign", 3, box=(20, 10, 60, 50))]
    second = [_prediction("sign", 9, box=(0, 0, 1, 1))]

    def predict_images(images, top_k=5):
        seen.append(images[0].shape)
        return first if len(seen) == 1 else second

    monkeypatch.setattr(predictor, "predict_images", predict_images)
    (answer,) = predictor.read_images([picture])
    # Pass 2 saw the box grown by 15 % of its size on each side: 52 x 52 within the picture.
    assert seen == [(60, 80, 3), (52, 52, 3)]
    assert answer.class_id == 9 and answer.box == (20, 10, 60, 50)


@pytest.mark.parametrize("kind", ["no_sign"])
def test_nothing_is_read_when_pass_1_finds_no_sign(tiny_model_path, monkeypatch, kind):
    predictor = Predictor.load(tiny_model_path, "cpu")
    calls = []

    def predict_images(images, top_k=5):
        calls.append(len(images))
        return [_prediction(kind, None)]

    monkeypatch.setattr(predictor, "predict_images", predict_images)
    (answer,) = predictor.read_images([np.zeros((40, 40, 3), np.uint8)])
    assert calls == [1] and answer.kind == kind
