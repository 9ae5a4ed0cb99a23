"""Sign cutouts: family outlines, drawn panels and boards, and the readers of real crops."""

import numpy as np
import pytest

from data.classes import sign_classes
from data.records import DataError
from data.sign_cutouts import (
    board_style,
    ctsrd_shape,
    direction_board,
    gtsrb_shape,
    panel_cutout,
    premultiplied,
    read_tsrd_boxes,
    shape_alpha,
    synthetic_cutout,
    tt100k_shape,
)


def test_family_shapes():
    assert [tt100k_shape(c) for c in ("pl40", "pne", "pn", "pb", "i5", "il60", "w57")] == [
        "disc",
        "disc",
        "disc",
        "disc",
        "disc",
        "disc",
        "triangle",
    ]
    assert [tt100k_shape(c) for c in ("pg", "ps", "ip", "io", "po", "wo")] == [
        "inverted",
        "octagon",
        "square",
        "disc",
        "disc",
        "triangle",
    ]
    by_name = {c.name: c.class_id for c in sign_classes("ctsrd")}
    assert tt100k_shape("negative") is None
    assert ctsrd_shape(by_name["Stop"]) == "octagon"
    assert ctsrd_shape(by_name["Give way"]) == "inverted"
    assert ctsrd_shape(by_name["Speed limit 40 km/h"]) == "disc"
    assert ctsrd_shape(by_name["Turn left"]) == "disc"
    assert ctsrd_shape(by_name["Road works"]) == "triangle"
    disc, triangle = shape_alpha("disc", 40, 40), shape_alpha("triangle", 40, 40)
    assert abs((disc >= 128).mean() - np.pi / 4) < 0.05
    assert abs((triangle >= 128).mean() - 0.5) < 0.06
    assert triangle[3, 3] == 0 and triangle[36, 3] > 0  # point up, base down
    inverted = shape_alpha("inverted", 40, 40)
    assert inverted[3, 3] > 0 and inverted[36, 3] == 0
    octagon, square = shape_alpha("octagon", 40, 40), shape_alpha("square", 40, 40)
    assert octagon[0, 0] == 0 and octagon[20, 20] == 255  # corners cut
    assert (square[2:-2, 2:-2] == 255).all()
    diamond = shape_alpha("diamond", 40, 40)
    assert diamond[3, 3] == 0 and diamond[20, 3] > 0 and diamond[3, 20] > 0  # on its point
    assert abs((diamond >= 128).mean() - 0.5) < 0.06
    gtsrb_names = {c.name: c.class_id for c in sign_classes("gtsrb")}
    assert [
        gtsrb_shape(gtsrb_names[name])
        for name in ("Priority road", "Yield", "Stop", "Road work", "Speed limit 50 km/h")
    ] == ["diamond", "inverted", "octagon", "triangle", "disc"]
    with pytest.raises(ValueError, match="unknown shape"):
        shape_alpha("star", 40, 40)


def test_premultiplied_colour_never_exceeds_its_coverage():
    rng = np.random.default_rng(0)
    rgb = np.full((8, 8, 3), 255, np.uint8)
    alpha = rng.integers(0, 256, (8, 8)).astype(np.uint8)
    cutout = premultiplied(rgb, alpha, 3, "test")
    assert (cutout.rgb.max(axis=2) == alpha).all()
    # The outline bounds the covered pixels and lies inside the crop.
    x, y = cutout.outline[:, 0], cutout.outline[:, 1]
    assert x.min() >= 0 and y.min() >= 0 and x.max() <= 8 and y.max() <= 8


@pytest.mark.parametrize("seed", range(4))
def test_drawn_panels_and_boards_are_unknown_signs_filling_their_rectangle(seed):
    rng = np.random.default_rng(seed)
    panel = panel_cutout(rng)
    style = board_style(rng)
    boards = [direction_board(rng, style) for _ in range(3)]
    for cutout in (panel, *boards):
        assert cutout.class_id is None
        assert (cutout.alpha == 255).all()
    assert panel.source == "synthetic:panel"
    # One post: every board has the same size and colours.
    assert len({board.rgb.shape for board in boards}) == 1
    assert boards[0].rgb.shape[1] == round(48 * style.aspect)


def test_synthetic_cutouts_carry_their_class():
    cutout = synthetic_cutout(0)
    assert cutout.class_id == 0 and cutout.source == "synthetic:0"
    assert cutout.rgb.shape[:2] == cutout.alpha.shape


def test_tsrd_boxes_must_lie_inside_the_image(tmp_path):
    (tmp_path / "annotations.txt").write_text("a.png;10;10;1;1;9;9;4\n")
    assert read_tsrd_boxes(tmp_path) == [(tmp_path / "images" / "a.png", (1, 1, 9, 9), 4)]
    (tmp_path / "annotations.txt").write_text("a.png;10;10;1;1;11;9;4\n")
    with pytest.raises(DataError, match="not inside"):
        read_tsrd_boxes(tmp_path)
