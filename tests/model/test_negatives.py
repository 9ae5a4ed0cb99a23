"""Hard negatives: every region the scene model marks on a sign-free frame becomes a
"no sign" crop that the crops reader reads."""

from __future__ import annotations

import numpy as np

from data.classes import no_sign_id
from data.load import load_dataset
from model.detect import DetectConfig, Instance
from model.negatives import annotated_frames, mine


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
    # The crop is the region grown by the detector's 10 % margin, as detection reads it.
    assert (first.width, first.height) == (12, 12)  # 5..15 grown by 1 px: 4..16
    assert first.sequence == ("tt100k", 100) and not first.has_sign


def _one_frame_folder(root, annotations):
    import json

    import cv2

    (root / "images").mkdir(parents=True)
    cv2.imwrite(str(root / "images" / "0000175.jpg"), np.zeros((48, 64, 3), np.uint8))
    coco = {
        "images": [{"id": 1, "file_name": "0000175.jpg", "width": 64, "height": 48}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": 1, "bbox": list(bbox), "area": 1,
             "iscrowd": 0, **extra}
            for i, (bbox, extra) in enumerate(annotations)
        ],
        "categories": [{"id": 1, "name": "sign"}],
    }  # fmt: skip
    (root / "annotations.json").write_text(json.dumps(coco))
    return root


def test_a_region_on_a_marked_sign_is_no_negative(tmp_path):
    # The frame's one sign lies under the first region.
    frames = _one_frame_folder(tmp_path / "frames", [([8, 8, 10, 10], {})])
    seen, written = mine(_MarksTwoRegions(), annotated_frames(frames, 1), tmp_path / "crops")
    assert (seen, written) == (1, 1)
    # frame 175, region 1
    assert [p.name for p in (tmp_path / "crops" / "negative").iterdir()] == ["000175_1.png"]


def test_frames_can_be_kept_to_the_backgrounds_asked(tmp_path):
    import json

    import cv2

    root = tmp_path / "scenes"
    (root / "images").mkdir(parents=True)
    drawn_on = ["dfg:0000175.jpg", "video:traffic.mp4#212", "negatives", "procedural"]
    for index in range(len(drawn_on)):
        cv2.imwrite(str(root / "images" / f"{index:06d}.jpg"), np.zeros((48, 64, 3), np.uint8))
    images = [
        {"id": i, "file_name": f"{i:06d}.jpg", "width": 64, "height": 48, "background": kind}
        for i, kind in enumerate(drawn_on)
    ]
    coco = {"images": images, "annotations": [], "categories": [{"id": 1, "name": "sign"}]}
    (root / "annotations.json").write_text(json.dumps(coco))
    assert [number for number, _, _ in annotated_frames(root, 1)] == [0, 1, 2, 3]
    assert [number for number, _, _ in annotated_frames(root, 1, ("video", "negatives"))] == [1, 2]
    # The step counts every frame of the folder, kept or not.
    assert [number for number, _, _ in annotated_frames(root, 2, ("video", "negatives"))] == [2]


def test_marked_signs_are_written_as_sign_crops_at_each_margin(tmp_path):
    from data.classes import unknown_sign_id
    from model.negatives import SIGN_MARGINS, write_marked_signs

    frames = _one_frame_folder(
        tmp_path / "frames",
        [
            ([10, 10, 20, 20], {}),  # a European sign: "unknown sign"
            ([32, 10, 20, 20], {"ctsrd_class": 3}),  # one the annotation maps to class 3
            ([5, 30, 6, 6], {}),  # too small to teach
            ([30, 30, 20, 12], {"ignore": True}),
        ],
    )
    out = tmp_path / "crops"
    assert write_marked_signs(frames, out) == 2 * len(SIGN_MARGINS)
    labels = sorted(r.class_id for r in load_dataset(out).records)
    assert labels == [3] * len(SIGN_MARGINS) + [unknown_sign_id("ctsrd")] * len(SIGN_MARGINS)
    # Tight, the detection's and a loose cut: 20 px grown by 1, 3 and 6 px on each side.
    sizes = sorted(r.width for r in load_dataset(out).records if r.class_id == 3)
    assert sizes == [22, 26, 32]


def test_negatives_and_signs_share_one_class_table(tmp_path):
    from model.negatives import write_marked_signs

    frames = _one_frame_folder(tmp_path / "frames", [([8, 8, 14, 14], {})])
    out = tmp_path / "crops"
    mine(_MarksTwoRegions(), annotated_frames(frames, 1), out)
    write_marked_signs(frames, out)
    table = (out / "classes.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in table] == ["code", "negative", "sign"]
    assert {r.has_sign for r in load_dataset(out).records} == {True, False}
