"""The shipped model: it loads, and on the held-out side of its own leakage-free split of the
real CTSRD sample it scores what its model card says (within 2 points)."""

from __future__ import annotations

import re

import pytest

from model.checkpoint import load_model
from model.evaluate import evaluate_model
from model.runs import SHIPPED_MODEL

MODEL_CARD = SHIPPED_MODEL.parent / "MODEL_CARD.md"


def _card_figure(name: str) -> float:
    """A figure from the card's metrics table, e.g. `| accuracy | 93.36 % |` -> 0.9336."""
    match = re.search(rf"^\| {name} \| ([\d.]+) % \|", MODEL_CARD.read_text(), re.MULTILINE)
    assert match, f"{MODEL_CARD} has no '| {name} | NN.NN % |' row"
    return float(match.group(1)) / 100


@pytest.fixture(scope="module")
def shipped():
    if not SHIPPED_MODEL.is_file():
        pytest.skip(f"no shipped model at {SHIPPED_MODEL}")
    return load_model(SHIPPED_MODEL)


def test_shipped_model_is_a_compact_greedy_dib_model(shipped):
    model, info = shipped
    assert info.method == "greedy-dib" and len(info.class_names) == 58
    assert not hasattr(model, "aux_cls") or model.aux_cls is None
    assert SHIPPED_MODEL.stat().st_size < 40 * 1024 * 1024


def test_held_out_accuracy_matches_the_model_card(shipped, ctsrd_real):
    metrics = evaluate_model(SHIPPED_MODEL, ctsrd_real, subset="test", device="cpu")
    _, info = shipped
    assert metrics["images"] == info.split["test_images"]
    assert metrics["accuracy"] == pytest.approx(_card_figure("accuracy"), abs=0.02)
    assert metrics["box_iou"] == pytest.approx(_card_figure("box IoU"), abs=0.02)
