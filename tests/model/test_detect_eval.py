"""eval-detect on a frames folder (model/detect_eval.py evaluate_folder): frames are read as
their annotations describe them, and a frame that decodes to another size is refused."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.frames import mask_box
from data.images import read_rgb
from data.records import DataError
from model import detect_eval
from model.detect import Detection
from model.detect_eval import evaluate_folder


def _turned_frames(root: Path, orientation: int) -> Path:
    """Two 160x96 frames, each stored with a red sign at (100, 10)-(140, 50) and an EXIF
    orientation; the COCO entries give the stored size and box, as COCO tools do."""
    (root / "images").mkdir(parents=True)
    pixels = np.full((96, 160, 3), 60, np.uint8)
    pixels[10:50, 100:140] = (220, 30, 30)
    exif = Image.Exif()
    exif[0x0112] = orientation
    images, annotations = [], []
    for number in (1, 2):
        Image.fromarray(pixels).save(root / "images" / f"{number}.jpg", exif=exif, quality=95)
        images.append({"id": number, "file_name": f"{number}.jpg", "width": 160, "height": 96})
        annotations.append(
            {"id": number, "image_id": number, "category_id": 1, "bbox": [100, 10, 40, 40]}
        )
    categories = [{"id": 1, "name": "sign"}]
    document = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations.json").write_text(json.dumps(document))
    return root


def _red_finder(rgb: np.ndarray) -> list[Detection]:
    """A detector that finds the red square."""
    red = (rgb[..., 0] > 150) & (rgb[..., 1] < 100)
    x1, y1, x2, y2 = mask_box(red)
    return [Detection((x1, y1, x2, y2), red[y1:y2, x1:x2], 0.9, None, "", "unknown_sign", 0.9)]


@pytest.mark.parametrize("orientation", [1, 3, 6])
def test_frames_with_an_exif_orientation_are_scored_where_their_boxes_are(tmp_path, orientation):
    result = evaluate_folder(_turned_frames(tmp_path, orientation), _red_finder)
    assert (result["precision"], result["recall"]) == (1.0, 1.0)


def test_a_frame_decoded_to_another_size_than_its_entry_is_refused(tmp_path, monkeypatch):
    # A reader that turned frames upright (as read_rgb turns users' photos) would score these
    # sideways frames 0 without a word; the evaluation refuses them by name instead.
    root = _turned_frames(tmp_path, 6)
    monkeypatch.setattr(detect_eval, "read_rgb", functools.partial(read_rgb, upright=True))
    with pytest.raises(DataError, match=r"1\.jpg: decoded image is 96x160, but .* says 160x96"):
        evaluate_folder(root, _red_finder)


def test_signs_are_scored_at_their_exact_boxes(tmp_path):
    """A shrunk set's fractional boxes are matched and sized as annotated. Rounded outward,
    the 2.2-px sign below would be 4 px, its tight detection's IoU 0.25 rather than 0.83
    (missed), and the 31.4-px sign 32 px, a sign of the bar."""
    (tmp_path / "images").mkdir()
    Image.new("RGB", (64, 48)).save(tmp_path / "images" / "a.png")
    document = {
        "images": [{"id": 0, "file_name": "a.png", "width": 64, "height": 48}],
        "annotations": [
            {"id": 1, "image_id": 0, "category_id": 1, "bbox": [2.9, 2.9, 2.2, 2.2]},
            {"id": 2, "image_id": 0, "category_id": 1, "bbox": [0.3, 20.5, 31.4, 10]},
        ],
        "categories": [{"id": 1, "name": "sign"}],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(document))
    frames = detect_eval.read_coco_frames(tmp_path)
    tight = Detection((3, 3, 5, 5), np.ones((2, 2), bool), 0.9, None, "", "unknown_sign", 0.9)
    counts, matched = detect_eval.match(frames, [[tight]])
    assert matched == [(0, 0, 0)]
    assert (counts["small (<32)"].signs, counts["small (<32)"].found) == (2, 1)
    assert counts["32 and more"].signs == 0
