"""The synthetic CTSRD generator: TSRD format, exact masks, framing, determinism."""

from __future__ import annotations

from collections import Counter
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from data.classes import sign_classes
from data.frames import mask_box
from data.synth import generate_synthetic, render_sample, sample_rng
from data.synth_signs import sign_template

PER_CLASS = 2


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    assert generate_synthetic(out, per_class=PER_CLASS, seed=0) == 58 * PER_CLASS
    return out


def _annotations(root: Path) -> list[tuple[str, int, int, tuple[int, int, int, int], int]]:
    """(filename, width, height, box, class) per line, by a plain split of the TSRD line."""
    rows = []
    for line in (root / "annotations.txt").read_text("utf-8").splitlines():
        name, width, height, x1, y1, x2, y2, class_id, after_last = line.split(";")
        assert after_last == "", f"line must end with ';': {line!r}"
        box = (int(x1), int(y1), int(x2), int(y2))
        rows.append((name, int(width), int(height), box, int(class_id)))
    return rows


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_annotation_lines_are_tsrd_format(synth_set):
    raw = (synth_set / "annotations.txt").read_bytes()
    assert b"\r" not in raw and raw.endswith(b";\n")
    for name, width, height, (x1, y1, x2, y2), class_id in _annotations(synth_set):
        assert name == f"{class_id:03d}_{name[4:8]}.png"
        with Image.open(synth_set / "images" / name) as image:
            assert image.size == (width, height) and image.mode == "RGB"
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


def test_every_class_has_per_class_images(synth_set):
    counts = Counter(class_id for *_, class_id in _annotations(synth_set))
    assert counts == {c.class_id: PER_CLASS for c in sign_classes("ctsrd")}
    assert len(list((synth_set / "images").iterdir())) == 58 * PER_CLASS


def test_mask_is_binary_and_its_tight_box_is_the_annotation(synth_set):
    for name, width, height, box, _ in _annotations(synth_set):
        with Image.open(synth_set / "masks" / name) as mask_file:
            assert mask_file.mode == "L" and mask_file.size == (width, height)
            mask = np.asarray(mask_file)
        assert set(np.unique(mask)) <= {0, 255}
        assert mask_box(mask > 0) == box
        x1, y1, x2, y2 = box
        assert mask[y1:y2, x1:x2].sum() == mask.sum(), "every sign pixel lies inside the box"


def test_crops_are_framed_like_tsrd(synth_set):
    rows = _annotations(synth_set)
    coverage = [(x2 - x1) * (y2 - y1) / (w * h) for _, w, h, (x1, y1, x2, y2), _ in rows]
    assert min(coverage) >= 0.4 and max(coverage) <= 0.9
    widths = [w for _, w, *_ in rows]
    assert min(widths) >= 50 and max(widths) <= 250
    assert 90 <= np.median(widths) <= 170


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(tmp_path):
    generate_synthetic(tmp_path / "a", per_class=1, seed=7)
    generate_synthetic(tmp_path / "b", per_class=1, seed=7)
    generate_synthetic(tmp_path / "c", per_class=1, seed=8)
    first, again, other = (_files(tmp_path / run) for run in "abc")
    assert len(first) == 2 * 58 + 1
    assert first == again
    assert first.keys() == other.keys()
    changed = [path for path in first if first[path] != other[path]]
    assert len(changed) == len(first)


def test_an_image_does_not_depend_on_how_many_others_are_drawn(synth_set, tmp_path):
    generate_synthetic(tmp_path, per_class=1, seed=0)
    for folder in ("images", "masks"):
        for path in (tmp_path / folder).iterdir():
            assert path.read_bytes() == (synth_set / folder / path.name).read_bytes()


def test_masks_lie_on_the_sign_colours(synth_set):
    """Inside the mask, mandatory signs are blue, warning signs yellow and no-entry red."""
    means: dict[str, list[np.ndarray]] = {"mandatory": [], "warning": [], "no entry": []}
    family = {c.class_id: c.family for c in sign_classes("ctsrd")}
    for name, *_, class_id in _annotations(synth_set):
        key = "no entry" if class_id == 55 else family[class_id]
        if key in means:
            image = np.asarray(Image.open(synth_set / "images" / name), np.float32)
            mask = np.asarray(Image.open(synth_set / "masks" / name)) > 0
            means[key].append(image[mask].mean(axis=0))
    red, green, blue = np.mean(means["mandatory"], axis=0)
    assert blue > red + 40 and blue > green + 20
    red, green, blue = np.mean(means["warning"], axis=0)
    assert min(red, green) > blue + 40
    red, green, blue = np.mean(means["no entry"], axis=0)
    assert red > green + 40 and red > blue + 40


def test_occluders_cut_the_mask_and_unoccluded_masks_keep_the_sign_shape():
    """A round sign's mask is convex unless something stands in front of it."""
    solidity = []
    for index in range(40):
        _, mask = render_sample(53, sample_rng(0, 53, index))
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        hull_area = cv2.contourArea(cv2.convexHull(np.vstack(contours)))
        solidity.append(mask.sum() / hull_area)
    solidity = np.array(solidity)
    assert (solidity < 0.95).sum() >= 3, "some samples should be partly occluded"
    assert np.median(solidity) > 0.98


def test_every_class_is_drawn_differently():
    """Any two signs differ clearly in at least 1.5 % of their pixels (the closest pairs, such
    as 30 and 50 km/h, differ in about 2 %)."""
    small = {}
    for c in sign_classes("ctsrd"):
        template = sign_template(c.class_id)
        alpha = template.alpha[..., None].astype(np.float32) / 255
        composed = template.rgb + (1 - alpha) * 128  # premultiplied sign over grey
        small[c.class_id] = cv2.resize(composed, (64, 64), interpolation=cv2.INTER_AREA)
    for a, b in combinations(small, 2):
        differing = (np.abs(small[a] - small[b]).max(axis=2) > 60).mean()
        assert differing > 0.015, f"classes {a} and {b} look alike"


def test_rejects_an_empty_request(tmp_path):
    with pytest.raises(ValueError, match="per_class"):
        generate_synthetic(tmp_path, per_class=0)
