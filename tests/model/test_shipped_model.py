"""The shipped models: they load, and on the held-out side of their own leakage-free split of
the real data (TSRD + TT100K crops) they score what the model card says (within 2 points)."""

from __future__ import annotations

import re

import pytest

from model.checkpoint import load_model
from model.evaluate import evaluate_model
from model.runs import SHIPPED_MODEL, SHIPPED_SGD_MODEL

MODEL_CARD = SHIPPED_MODEL.parent / "MODEL_CARD.md"


def _card_figure(name: str, column: int = 1) -> float:
    """A figure of the card's held-out metrics table, e.g. `| TSRD accuracy | 93.36 % | ...`
    -> 0.9336; column 1 is the shipped Greedy-DIB model, column 2 the SGD reference."""
    row = re.search(rf"^\| {re.escape(name)} \|(.*)\|$", MODEL_CARD.read_text(), re.MULTILINE)
    assert row, f"{MODEL_CARD} has no '| {name} | NN.NN % | NN.NN % |' row"
    cell = row.group(1).split("|")[column - 1]
    value = re.fullmatch(r"\s*\**([\d.]+) %\**\s*", cell)
    assert value, f"{MODEL_CARD}: row {name!r}, column {column} is not a percentage: {cell!r}"
    return float(value.group(1)) / 100


def test_shipped_model_is_a_compact_greedy_dib_model():
    model, info = load_model(SHIPPED_MODEL)
    assert info.method == "greedy-dib" and len(info.class_names) == 60  # 58 + unknown + none
    assert info.open_set["threshold"] > 0
    assert not hasattr(model, "aux_cls") or model.aux_cls is None
    assert SHIPPED_MODEL.stat().st_size < 40 * 1024 * 1024


def test_the_sgd_reference_learned_from_the_same_data():
    _, greedy = load_model(SHIPPED_MODEL)
    _, sgd = load_model(SHIPPED_SGD_MODEL)
    assert sgd.method == "sgd"
    assert sgd.split["test_sha1"] == greedy.split["test_sha1"]
    assert sgd.config.image_size == greedy.config.image_size


@pytest.fixture(scope="module")
def held_out_metrics(ctsrd_real, tt100k_crops):
    return evaluate_model(SHIPPED_MODEL, [ctsrd_real, tt100k_crops], subset="test", device="cpu")


def test_held_out_figures_match_the_model_card(held_out_metrics):
    _, info = load_model(SHIPPED_MODEL)
    metrics = held_out_metrics
    # Every held-out real image; the synthetic ones (class 25) are not in these folders.
    by_origin = info.split["test_images_by_origin"]
    assert metrics["images"] == by_origin["tsrd"] + by_origin["tt100k"]
    tsrd, tt100k = metrics["datasets"]["tsrd"], metrics["datasets"]["tt100k"]
    assert tsrd["accuracy"] == pytest.approx(_card_figure("TSRD accuracy"), abs=0.02)
    assert tsrd["box_iou"] == pytest.approx(_card_figure("TSRD box IoU"), abs=0.02)
    assert tt100k["accuracy"] == pytest.approx(_card_figure("TT100K accuracy"), abs=0.02)
    assert metrics["rejection_rate"] == pytest.approx(_card_figure("rejection rate"), abs=0.02)
    assert metrics["novel"]["accuracy"] == pytest.approx(
        _card_figure("novel-sign accuracy"), abs=0.02
    )
