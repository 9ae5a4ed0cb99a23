"""Hard negatives: every region the scene model marks on a sign-free frame becomes a
"no sign" crop that the crops reader reads."""

from __future__ import annotations

import numpy as np

from data.classes import no_sign_id
from data.load import load_dataset
from model.detect import DetectConfig, Instance
from model.negatives import mine


class _MarksTwoRegions:
    config = DetectConfig()

    def instances(self, rgb):
        mask = np.ones((10, 10), bool)
        return [Instance((5, 5, 15, 15), mask, 0.9), Instance((30, 20, 40, 30), mask, 0.6)]


def test_each_marked_region_is_written_as_a_no_sign_crop(tmp_path):
    frames = [
        (100, np.full((48, 64, 3), 80, np.uint8), []),
        (102, np.zeros((48, 64, 3), np.uint8), []),
    ]
    seen, written = mine(_MarksTwoRegions(), iter(frames), tmp_path)
    assert (seen, written) == (2, 4)
    index = load_dataset(tmp_path)
    assert {r.class_id for r in index.records} == {no_sign_id("ctsrd")}
    first = next(r for r in index.records if r.image_path.name == "000100_0.png")
    # The crop is the region grown by the detector's 15 % margin, as detection reads it.
    assert (first.width, first.height) == (14, 14)  # 5..15 grown by 1.5 px: 3..17
    assert first.sequence == ("tt100k", 100) and not first.has_sign


def test_a_region_on_a_marked_sign_is_no_negative(tmp_path):
    import json

    import cv2

    from model.negatives import annotated_frames

    # A COCO frames folder whose one frame marks a sign over the first region.
    (tmp_path / "frames" / "images").mkdir(parents=True)
    cv2.imwrite(
        str(tmp_path / "frames" / "images" / "0000175.jpg"), np.zeros((48, 64, 3), np.uint8)
    )
    coco = {
        "images": [{"id": 1, "file_name": "0000175.jpg", "width": 64, "height": 48}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [8, 8, 10, 10], "area": 100,
             "segmentation": [[8, 8, 18, 8, 18, 18, 8, 18]], "iscrowd": 0}
        ],
        "categories": [{"id": 1, "name": "sign"}],
    }  # fmt: skip
    (tmp_path / "frames" / "annotations.json").write_text(json.dumps(coco))
    seen, written = mine(_MarksTwoRegions(), annotated_frames(tmp_path / "frames", 1), tmp_path)
    assert (seen, written) == (1, 1)
    assert [p.name for p in (tmp_path / "negative").iterdir()] == [
        "000175_1.png"
    ]  # frame 175, region 1
