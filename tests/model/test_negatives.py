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
    frames = [(100, np.full((48, 64, 3), 80, np.uint8)), (102, np.zeros((48, 64, 3), np.uint8))]
    seen, written = mine(_MarksTwoRegions(), iter(frames), tmp_path)
    assert (seen, written) == (2, 4)
    index = load_dataset(tmp_path)
    assert {r.class_id for r in index.records} == {no_sign_id("ctsrd")}
    first = next(r for r in index.records if r.image_path.name == "000100_0.png")
    # The crop is the region grown by the detector's 15 % margin, as detection reads it.
    assert (first.width, first.height) == (14, 14)  # 5..15 grown by 1.5 px: 3..17
    assert first.sequence == ("tt100k", 100) and not first.has_sign
