"""Near-twins: photos of one sign that are not byte-identical end up in one group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from data.near_twins import novel, twin_groups
from data.records import SignRecord


def _scene(seed: int, noise_seed: int | None = None, noise: float = 0.0) -> np.ndarray:
    """A 48x48 picture with its own layout (seed), optionally with pixel noise on top."""
    rng = np.random.default_rng(seed)
    image = np.kron(rng.integers(0, 255, (6, 6, 3)), np.ones((8, 8, 1))).astype(np.float32)
    if noise_seed is not None:
        image += np.random.default_rng(noise_seed).normal(0, noise, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _record(
    tmp_path: Path, name: str, pixels: np.ndarray, class_id: int = 0, **fields
) -> SignRecord:
    path = tmp_path / name
    Image.fromarray(pixels).save(path)
    defaults = {"origin": "tsrd", "sha1": name, "box": (8, 8, 40, 40)}
    return SignRecord(path, class_id, width=48, height=48, **{**defaults, **fields})


def test_a_slightly_different_photo_is_a_twin_a_different_scene_is_not(tmp_path):
    records = [
        _record(tmp_path, "a.png", _scene(1)),
        _record(tmp_path, "a_again.png", _scene(1, noise_seed=7, noise=12)),  # same sign
        _record(tmp_path, "other.png", _scene(2)),  # another sign of the class
        _record(tmp_path, "a_class9.png", _scene(1, noise_seed=8, noise=12), class_id=9),
    ]
    groups = twin_groups(records)
    assert groups[0] == groups[1]
    assert len({groups[0], groups[2], groups[3]}) == 3  # classes never join


def test_neighbouring_shots_join_at_a_lower_similarity(tmp_path):
    halfway = ((_scene(1).astype(int) + _scene(2).astype(int)) // 2).astype(np.uint8)
    near = [
        _record(tmp_path, "s1.png", _scene(1), sequence=("000", 10)),
        _record(tmp_path, "s2.png", halfway, sequence=("000", 11)),
    ]
    far = [near[0], _record(tmp_path, "s3.png", halfway, sequence=("000", 40))]
    assert len(set(twin_groups(near))) == 1
    assert len(set(twin_groups(far))) == 2


def test_reader_groups_and_identical_bytes_join_whatever_they_look_like(tmp_path):
    records = [
        _record(tmp_path, "p1.png", _scene(1), group="tt100k:7", origin="tt100k", box=None),
        _record(tmp_path, "p2.png", _scene(2), group="tt100k:7", origin="tt100k", box=None),
        _record(tmp_path, "c1.png", _scene(3), sha1="same"),
        _record(tmp_path, "c2.png", _scene(4), sha1="same"),
    ]
    groups = twin_groups(records)
    assert groups[0] == groups[1] and groups[2] == groups[3] and groups[0] != groups[2]


def test_novel_test_images_have_no_twin_in_training(tmp_path):
    train = [_record(tmp_path, "t.png", _scene(1))]
    test = [
        _record(tmp_path, "twin.png", _scene(1, noise_seed=3, noise=12)),
        _record(tmp_path, "new.png", _scene(5)),
        _record(tmp_path, "synthetic.png", _scene(1), origin="synthetic"),  # no rules: novel
    ]
    assert novel(train, test) == [False, True, True]
