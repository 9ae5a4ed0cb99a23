"""Scene tiles: cut around signs at a random scale, with the sign pixels marked exactly."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from data.frames import instance_mask, read_coco_frames
from data.images import read_rgb
from data.records import DataError
from data.scenes import SceneConfig, SceneSources, write_scenes
from data.tiles import IGNORE_LABEL, SceneTiles
from data.transforms import IMAGENET_MEAN, IMAGENET_STD


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Four small procedural scenes (no real data needed), two to four signs each."""
    root = tmp_path_factory.mktemp("scenes")
    config = SceneConfig(width=320, height=192, min_size=16, max_size=48, signs=(2, 4))
    write_scenes(root, frames=4, seed=2, config=config, sources=SceneSources(signs=("synthetic",)))
    return read_coco_frames(root)


def test_items_have_the_crop_datasets_shape(scenes):
    tiles = SceneTiles(scenes, 64, train=True, seed=0)
    assert len(tiles) == 4 * tiles.tiles_per_frame
    image, mask, label, box, mask_known = tiles[0]
    assert image.shape == (3, 64, 64) and mask.shape == (1, 64, 64)
    assert label == IGNORE_LABEL and mask_known is True
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    if mask.any():
        ys, xs = torch.nonzero(mask[0], as_tuple=True)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_tiles_depend_on_seed_epoch_and_index_alone(scenes):
    first, same = (SceneTiles(scenes, 48, train=True, seed=s) for s in (1, 1))
    assert all(torch.equal(first[i][0], same[i][0]) for i in (3, 0, 7))
    first.set_epoch(1)
    assert not all(torch.equal(first[i][0], same[i][0]) for i in range(4))
    evaluation = SceneTiles(scenes, 48, train=False, seed=1)
    before = evaluation[2][0]
    evaluation.set_epoch(5)
    assert torch.equal(before, evaluation[2][0]), "evaluation tiles never change"


def test_most_tiles_hold_a_sign_and_marks_follow_the_masks(scenes):
    tiles = SceneTiles(scenes, 64, train=False, seed=0, scale=(1.0, 1.0))
    with_sign = sum(bool(tiles[i][1].any()) for i in range(len(tiles)))
    assert with_sign >= len(tiles) // 2
    # At scale 1 a tile is a window of the frame: its marked pixels are the frame's sign
    # pixels in that window (the union of the instance masks).
    frame = scenes[0]
    union = np.zeros((frame.height, frame.width), bool)
    for sign in frame.instances:
        union |= instance_mask(sign, frame.height, frame.width)
    assert union.sum() > 0
    _, mask, *_ = tiles[0]
    assert 0 < mask.sum() <= union.sum()


def test_touching_signs_are_marked_with_a_seam_between_them():
    from data.frames import FrameInstance, FrameRecord
    from data.tiles import SEAM, _sign_mask, sign_owners

    def square(x1, x2):
        return FrameInstance((x1, 10, x2, 30), "sign", 0, False, None)

    # Two signs side by side (columns 10-29 and 30-49), a third alone.
    frame = FrameRecord(None, 80, 40, (square(10, 30), square(30, 50), square(60, 70)))
    mask = _sign_mask(sign_owners(frame))
    assert mask[20, 10 : 30 - SEAM // 2].all() and mask[20, 30 + SEAM // 2 : 50].all()
    assert not mask[20, 30 - SEAM // 2 : 30 + SEAM // 2].any(), "the seam"
    assert mask[10:30, 60:70].all(), "a lone sign is marked whole"


def test_each_sign_has_its_own_core_apart_from_its_neighbours():
    from data.frames import FrameInstance, FrameRecord
    from data.tiles import CORE_DEPTH, core_mask, sign_owners

    def board(y1, y2):
        return FrameInstance((10, y1, 70, y2), "sign", 0, False, None)

    # Two boards 20 px high stacked flush (rows 10-29 and 30-49), inradius 10.
    frame = FrameRecord(None, 80, 60, (board(10, 30), board(30, 50)))
    core = core_mask(sign_owners(frame))
    depth = CORE_DEPTH * 10  # px from a board's own edges
    rows = np.flatnonzero(core[:, 40])
    assert rows.min() >= 10 + depth - 1 and rows.max() <= 49 - depth + 1
    gap = [y for y in range(rows.min(), rows.max() + 1) if not core[y, 40]]
    assert len(gap) >= 2 * depth - 2, "the boards' cores are apart where the boards touch"
    assert core[15:25, 20:60].all() and core[35:45, 20:60].all()


def test_scene_model_tiles_carry_the_sign_and_core_maps(scenes):
    tiles = SceneTiles(scenes, 64, train=True, seed=0, core=True)
    masks = torch.stack([tiles[i][1] for i in range(len(tiles))])
    assert masks.shape[1:] == (2, 64, 64)
    signs, cores = masks[:, 0] > 0, masks[:, 1] > 0
    assert cores.any() and not (cores & ~signs).any(), "a core lies within its sign"
    assert cores.sum() < signs.sum()


def _turned_frame(folder, orientation: int):
    """A 64x64 frame stored with a red sign at (4, 4)-(24, 24) and an EXIF orientation."""
    from data.frames import FrameInstance, FrameRecord

    pixels = np.full((64, 64, 3), 60, np.uint8)
    pixels[4:24, 4:24] = (220, 30, 30)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(folder / "frame.jpg", exif=exif, quality=95)
    sign = FrameInstance((4, 4, 24, 24), "sign", 0, False, None)
    return FrameRecord(folder / "frame.jpg", 64, 64, (sign,))


def test_tiles_cut_the_stored_pixels_that_the_boxes_describe(tmp_path):
    # An EXIF orientation only tells a viewer how to show the picture; the box describes the
    # stored pixels, so the tile's marked pixels must be the red ones, as read_rgb reads them.
    frame = _turned_frame(tmp_path, 3)
    tiles = SceneTiles([frame], 64, train=False, scale=(1.0, 1.0), tiles_per_frame=1)
    image, mask, *_ = tiles[0]
    red = image[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0] > 0.6
    assert mask[0].sum() > 0 and (red == (mask[0] > 0)).float().mean() > 0.98
    assert np.array_equal(read_rgb(frame.image_path)[10, 10] > 150, [True, False, False])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_in_place_of_a_frame_is_an_error_not_a_hang(tmp_path, within):
    frame = _turned_frame(tmp_path, 1)
    frame.image_path.unlink()
    os.mkfifo(frame.image_path)
    tiles = SceneTiles([frame], 32, train=True, tiles_per_frame=1)
    with within(10), pytest.raises(DataError, match=r"frame\.jpg: frame unreadable .*a FIFO"):
        tiles[0]
