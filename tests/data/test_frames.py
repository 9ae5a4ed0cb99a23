"""The COCO frames reader and mask codecs: real DFG frames, round trips, clear errors."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.cli import main
from data.frames import (
    instance_mask,
    mask_box,
    polygon_mask,
    read_coco,
    read_coco_frames,
    resize_frames,
    rle_decode,
    rle_encode,
    rle_encode_box,
    split_frames,
)
from data.records import DataError

# --- masks -----------------------------------------------------------------------------------


def _ring() -> np.ndarray:
    mask = np.zeros((40, 60), bool)
    mask[5:30, 10:50] = True
    mask[12:20, 20:30] = False
    mask[0, 0] = mask[39, 59] = True
    return mask


def test_rle_matches_pycocotools_strings():
    # Strings written by pycocotools.mask.encode for the same masks.
    ring = "01d<h0kC000000000000000000^OI37MI37MI37MI37MI37MI37MI37MI37MI37MI37?"
    ring += "00000000000000000000000000000000000000Z<XO"
    assert rle_encode(_ring()) == {"size": [40, 60], "counts": ring}
    small = np.zeros((3, 4), bool)
    small[0, 0] = True
    small[1:3, 2] = True
    assert rle_encode(small)["counts"] == "0161M"
    assert (rle_decode({"size": [40, 60], "counts": ring}) == _ring()).all()


def test_rle_round_trips_and_box_encoding_agrees():
    rng = np.random.default_rng(0)
    for _ in range(50):
        height, width = rng.integers(1, 30, 2)
        mask = rng.random((height, width)) < rng.random()
        rle = rle_encode(mask)
        assert (rle_decode(rle) == mask).all()
        box = mask_box(mask)
        if box is not None:
            x1, y1, x2, y2 = box
            assert rle_encode_box(mask[y1:y2, x1:x2], box, height, width) == rle
    uncompressed = {"size": [2, 3], "counts": [1, 2, 3]}  # column-major, zeros first
    assert rle_decode(uncompressed).tolist() == [[False, True, False], [True, False, False]]


def test_polygon_pixels_are_those_whose_centre_is_inside():
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    mask = polygon_mask([square], 20, 20)
    assert mask.sum() == 100 and mask_box(mask) == (0, 0, 10, 10)
    # Centres on the boundary count on the right and bottom edges, as in pycocotools.
    inner = polygon_mask([square / 2 + 2.5], 20, 20)
    assert mask_box(inner) == (3, 3, 8, 8)
    triangle = polygon_mask([np.array([[0, 0], [40, 0], [0, 40]], float)], 50, 50)
    assert abs(int(triangle.sum()) - 800) <= 40
    two = polygon_mask([square, square + 12], 30, 30)
    assert two.sum() == 200


# --- a small COCO set written here ---------------------------------------------------------------


def _coco_set(root: Path) -> dict:
    """Two 64x48 frames: a polygon sign, an RLE sign, a sign with no segmentation (ignored)."""
    (root / "images").mkdir(parents=True)
    for name in ("a.jpg", "b.png"):
        Image.new("RGB", (64, 48), (90, 120, 150)).save(root / "images" / name)
    disc = np.zeros((48, 64), bool)
    disc[20:30, 40:52] = True
    document = {
        "images": [
            {"id": 7, "file_name": "a.jpg", "width": 64, "height": 48},
            {"id": 9, "file_name": "b.png", "width": 64, "height": 48},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 3,
                "bbox": [10, 5, 20, 10],
                "segmentation": [[10, 5, 30, 5, 30, 15, 10, 15]],
                "area": 200,
                "iscrowd": 0,
                "ignore": False,
            },
            {
                "id": 2,
                "image_id": 7,
                "category_id": 58,
                "bbox": [40, 20, 12, 10],
                "segmentation": rle_encode(disc),
                "iscrowd": 0,
                "ctsrd_class": None,
            },
            {"id": 3, "image_id": 9, "category_id": 3, "bbox": [1.5, 2.2, 4, 5], "ignore": True},
        ],
        "categories": [
            {"id": 3, "name": "Speed limit 40 km/h", "supercategory": "sign"},
            {"id": 58, "name": "unknown sign", "supercategory": "sign"},
        ],
    }
    _write(root, document)
    return document


def _write(root: Path, document) -> None:
    (root / "annotations.json").write_text(json.dumps(document), encoding="utf-8")


def test_reads_a_coco_set(tmp_path):
    _coco_set(tmp_path)
    first, second = read_coco_frames(tmp_path)

    assert (first.image_path, first.width, first.height, first.image_id) == (
        tmp_path / "images" / "a.jpg",
        64,
        48,
        7,
    )
    polygon, rle = first.instances
    assert (polygon.box, polygon.category, polygon.category_id, polygon.ignore) == (
        (10, 5, 30, 15),
        "Speed limit 40 km/h",
        3,
        False,
    )
    assert mask_box(instance_mask(polygon, 48, 64)) == polygon.box
    assert instance_mask(polygon, 48, 64).sum() == 200
    assert (rle.category, rle.class_id, rle.box) == ("unknown sign", None, (40, 20, 52, 30))
    assert mask_box(instance_mask(rle, 48, 64)) == rle.box
    (boxed,) = second.instances
    assert boxed.ignore and boxed.segmentation is None
    assert boxed.box == (1, 2, 6, 8)  # the pixels [1.5, 5.5) x [2.2, 7.2) touch
    assert instance_mask(boxed, 48, 64).sum() == 5 * 6
    # The JSON file itself may be given instead of its folder.
    assert len(read_coco_frames(tmp_path / "annotations.json")) == 2


def _broken(tmp_path: Path, change) -> Path:
    document = _coco_set(tmp_path)
    change(document)
    _write(tmp_path, document)
    return tmp_path


def _set(path: str, value):
    """A change that sets document[a][i][b] = value for path "a.i.b" (or deletes, for ...)."""
    keys = [int(key) if key.isdigit() else key for key in path.split(".")]

    def change(document):
        target = document
        for key in keys[:-1]:
            target = target[key]
        if value is ...:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value

    return change


BAD_CASES = [
    ("images", ..., "'images' is missing"),
    ("categories", {}, "'categories' is a dict, not a list"),
    ("images.0.width", -3, "images[0]: width is not a positive integer"),
    ("images.1.id", 7, "images[1]: duplicate image id 7"),
    ("images.0.file_name", "gone.jpg", "images[0]: image file missing"),
    ("images.1.height", 50, "images[1]: the JSON says 64x50 but"),
    ("annotations.0.image_id", 99, "annotations[0] (id 1): image_id 99 is not the id of any image"),
    ("annotations.1.id", 1, "annotations[1] (id 1): duplicate annotation id"),
    ("annotations.0.category_id", 4, "annotations[0] (id 1): category_id 4 is not a category"),
    ("annotations.0.bbox", [1, 2, 3], "annotations[0] (id 1): bbox must be [x, y, width, height]"),
    ("annotations.0.bbox", [50, 5, 20, 10], "bbox [50, 5, 20, 10] lies outside the 64x48 image"),
    ("annotations.0.bbox", [10, 5, 0, 10], "is empty"),
    ("annotations.0.segmentation", [[1, 2, 3, 4, 5]], "segmentation[0] has 5 numbers"),
    ("annotations.0.segmentation", [[1, 2, 3, "x", 5, 6]], "segmentation[0] is not a flat list"),
    ("annotations.0.segmentation", [[1, 2, 300, 4, 5, 6]], "reaches outside the 64x48 image"),
    ("annotations.1.segmentation.size", [48, 65], "RLE size [48, 65] is not the image's"),
    ("annotations.1.segmentation.counts", [5, 6], "RLE runs add up to 11 pixels"),
    ("annotations.1.segmentation.counts", "0\x7f", "RLE counts string is corrupt"),
    ("annotations.1.ignore", "yes", "ignore must be true/false or 0/1"),
    ("annotations.1.ctsrd_class", "3", "ctsrd_class must be null or a class id"),
    ("annotations.1.track_id", -2, "track_id must be null or a non-negative integer"),
    ("annotations.0.source", 5, "source must be a string"),
    ("images.0.video_id", "a", "video_id must be null or a non-negative integer"),
    ("images.1.frame_index", 1.5, "frame_index must be null or a non-negative integer"),
    ("images.0.background", 3, "background must be a string"),
]


@pytest.mark.parametrize(("path", "value", "fault"), BAD_CASES, ids=[c[2][:40] for c in BAD_CASES])
def test_malformed_coco_is_a_clear_error(tmp_path, path, value, fault):
    root = _broken(tmp_path, _set(path, value))
    with pytest.raises(DataError) as caught:
        read_coco_frames(root)
    assert caught.value.file == str(root / "annotations.json")
    assert fault in str(caught.value)


def test_not_json_names_the_line(tmp_path):
    _coco_set(tmp_path)
    (tmp_path / "annotations.json").write_text('{\n"images": [\n,]}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"annotations.json:3: not valid JSON"):
        read_coco_frames(tmp_path)
    with pytest.raises(DataError, match="no annotations.json in this frames folder"):
        read_coco_frames(tmp_path / "images")
    with pytest.raises(DataError, match="no such frames folder"):
        read_coco_frames(tmp_path / "nowhere")


def test_skip_leaves_out_the_whole_bad_frame_and_reports_it(tmp_path):
    def break_second_sign(document):
        document["annotations"][1]["bbox"] = [60, 20, 12, 10]

    root = _broken(tmp_path, break_second_sign)
    frames, skipped = read_coco(root, on_error="skip")
    assert [frame.image_id for frame in frames] == [9]  # frame 7 lost a sign: left out whole
    assert len(skipped) == 1 and "annotations[1] (id 2)" in str(skipped[0])
    with pytest.raises(DataError):
        read_coco(root)


def test_skip_reports_a_bad_frame_once_not_again_for_each_of_its_signs(tmp_path):
    root = _broken(tmp_path, _set("images.0.width", -5))
    frames, skipped = read_coco(root, on_error="skip")
    assert [frame.image_id for frame in frames] == [9]
    assert len(skipped) == 1 and "images[0]" in str(skipped[0])


def test_a_box_past_the_last_pixel_is_clamped_into_the_image(tmp_path):
    # Within the 1 px tolerance past the right and bottom edges: the last column and row.
    root = _broken(tmp_path, _set("annotations.0.bbox", [64.5, 48.2, 0.4, 0.5]))
    sign = read_coco_frames(root)[0].instances[0]
    assert sign.box == (63, 47, 64, 48)


def test_check_images_can_be_turned_off(tmp_path):
    root = _broken(tmp_path, _set("images.0.file_name", "gone.jpg"))
    assert len(read_coco_frames(root, check_images=False)) == 2


def test_document_is_not_changed_by_reading(tmp_path):
    document = _coco_set(tmp_path)
    before = copy.deepcopy(document)
    read_coco_frames(tmp_path)
    assert json.loads((tmp_path / "annotations.json").read_text()) == before


def test_frames_are_checked_as_stored_and_told_when_annotated_as_shown(tmp_path):
    # Stored 64x48 with an EXIF orientation that shows it 48x64: the JSON must give the stored
    # size, which is what data.images.read_rgb decodes and the boxes describe.
    document = _coco_set(tmp_path)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (64, 48)).save(tmp_path / "images" / "b.png", exif=exif)
    assert [frame.width for frame in read_coco_frames(tmp_path)] == [64, 64]
    document["images"][1].update(width=48, height=64)
    _write(tmp_path, document)
    with pytest.raises(DataError, match=r"is 64x48 \(its EXIF orientation shows it 48x64"):
        read_coco_frames(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_among_the_images_is_an_error_not_a_hang(tmp_path, within):
    _coco_set(tmp_path)
    (tmp_path / "images" / "b.png").unlink()
    os.mkfifo(tmp_path / "images" / "b.png")
    with within(10), pytest.raises(DataError, match=r"images\[1\]: image unreadable: .*a FIFO"):
        read_coco_frames(tmp_path)
    frames, skipped = read_coco(tmp_path, on_error="skip")
    assert [frame.image_id for frame in frames] == [7] and "a FIFO" in str(skipped[0])


# --- the real DFG frames -------------------------------------------------------------------------


def test_real_dfg_frames(dfg_frames: Path):
    frames = read_coco_frames(dfg_frames)

    assert len(frames) == 35
    assert sum(len(frame.instances) for frame in frames) == 88
    first = frames[0]
    assert (first.image_path, first.width, first.height) == (
        dfg_frames / "images" / "0000001.jpg",
        1920,
        1080,
    )
    sign = first.instances[0]
    assert (sign.box, sign.category, sign.ignore, sign.class_id) == (
        (312, 369, 416, 509),
        "II-7",
        False,
        None,
    )
    for frame in frames:
        for instance in frame.instances:
            assert isinstance(instance.segmentation, tuple)  # DFG masks are polygons
            mask = instance_mask(instance, frame.height, frame.width)
            box = mask_box(mask)
            assert box is not None
            # The polygon's pixels fill its box, give or take the boundary pixel.
            assert max(abs(a - b) for a, b in zip(box, instance.box, strict=True)) <= 1


def test_split_frames_cuts_by_name_and_keeps_entries(tmp_path):
    source = tmp_path / "set"
    document = _coco_set(source)
    assert split_frames(source, tmp_path / "split", test_share=0.5) == (1, 1)
    (train,) = read_coco_frames(tmp_path / "split" / "train")
    (test,) = read_coco_frames(tmp_path / "split" / "test")
    assert (train.image_path.name, test.image_path.name) == ("a.jpg", "b.png")
    assert len(train.instances) == 2 and test.instances[0].ignore
    written = json.loads((tmp_path / "split" / "train" / "annotations.json").read_text())
    assert written["annotations"] == document["annotations"][:2]
    assert written["categories"] == document["categories"]
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_frames(source, tmp_path / "again", test_share=1.0)


def test_split_frames_keeps_each_drive_on_one_side(tmp_path):
    # Frame names repeat across drives (drive-NNN/FFFFFF.jpg); a cut by bare name would put
    # frames of both drives on both sides.
    source = tmp_path / "drives"
    images = []
    for drive in range(2):
        (source / "images" / f"drive-{drive:03d}").mkdir(parents=True)
        for frame in range(3):
            file_name = f"drive-{drive:03d}/{frame:06d}.jpg"
            Image.new("RGB", (32, 24)).save(source / "images" / file_name)
            images.append({"id": len(images), "file_name": file_name, "width": 32, "height": 24})
    _write(source, {"images": images, "annotations": [], "categories": []})
    assert split_frames(source, tmp_path / "split", test_share=0.5) == (3, 3)
    for side, drive in (("train", "drive-000"), ("test", "drive-001")):
        frames = read_coco_frames(tmp_path / "split" / side)
        assert {frame.image_path.parent.name for frame in frames} == {drive}


def _halved(mask: np.ndarray) -> np.ndarray:
    """The mask at half size: a pixel is set where at least two of its four were."""
    height, width = mask.shape
    return mask.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3)) >= 0.5


def test_resize_frames_halves_images_boxes_and_masks(tmp_path):
    source = tmp_path / "set"
    document = _coco_set(source)
    assert resize_frames(source, tmp_path / "half", scale=0.5) == 2
    originals = read_coco_frames(source)
    resized = read_coco_frames(tmp_path / "half")  # also checks each image's size

    assert [frame.image_path.name for frame in resized] == ["a.jpg", "b.png"]
    for original, frame in zip(originals, resized, strict=True):
        assert (frame.width, frame.height) == (32, 24)
        assert [i.ignore for i in frame.instances] == [i.ignore for i in original.instances]
        for old, new in zip(original.instances, frame.instances, strict=True):
            assert max(abs(a / 2 - b) for a, b in zip(old.box, new.box, strict=True)) <= 1
            old_mask = _halved(instance_mask(old, original.height, original.width))
            new_mask = instance_mask(new, frame.height, frame.width)
            iou = (old_mask & new_mask).sum() / (old_mask | new_mask).sum()
            assert iou > 0.8, (new.annotation_id, iou)
    polygon, rle = resized[0].instances
    assert isinstance(polygon.segmentation, tuple) and polygon.area == 50
    assert isinstance(rle.segmentation, dict) and rle.area == 30  # the 12x10 disc, halved

    written = json.loads((tmp_path / "half" / "annotations.json").read_text())
    assert written["categories"] == document["categories"]
    assert written["annotations"][1]["ctsrd_class"] is None  # extra keys are kept
    assert written["annotations"][2]["ignore"] is True
    for scale in (0, 1.5):
        with pytest.raises(ValueError, match="scale"):
            resize_frames(source, tmp_path / "bad", scale=scale)


def test_a_shrunk_set_keeps_its_boxes_exact(tmp_path):
    """Shrinking makes box corners fractional: a polygon keeps them as `exact_box` (its
    `box` rounded outward, for cutting), an RLE sign gets its shrunk mask's own tight box."""
    _coco_set(tmp_path / "set")
    resize_frames(tmp_path / "set", tmp_path / "small", scale=0.375)  # 64x48 -> 24x18
    polygon, rle = read_coco_frames(tmp_path / "small")[0].instances
    assert polygon.exact_box == (3.75, 1.875, 11.25, 5.625) and polygon.box == (3, 1, 12, 6)
    assert rle.exact_box is None and rle.box == mask_box(instance_mask(rle, 18, 24))
    unshrunk, _ = read_coco_frames(tmp_path / "set")[0].instances
    assert unshrunk.exact_box is None  # whole-pixel corners: `box` is exact


def test_an_exact_box_past_the_edge_is_never_reversed(tmp_path):
    """The reader lets a box stray 1 px past the image; clipped corner by corner, a sliver
    past the edge came out with its right edge left of its left one."""
    (tmp_path / "images").mkdir()
    Image.new("RGB", (100, 80)).save(tmp_path / "images" / "a.png")
    slivers = [[-0.9, 10, 0.5, 5], [100.5, 10, 0.3, 5], [-0.9, 10, 0.9, 5]]
    document = {
        "images": [{"id": 0, "file_name": "a.png", "width": 100, "height": 80}],
        "annotations": [
            {"id": i + 1, "image_id": 0, "category_id": 1, "bbox": bbox}
            for i, bbox in enumerate([*slivers, [98.5, 10.5, 2.2, 5]])
        ],
        "categories": [{"id": 1, "name": "sign"}],
    }
    _write(tmp_path, document)
    *edges, clipped = read_coco_frames(tmp_path)[0].instances
    assert [sign.exact_box for sign in edges] == [None] * 3  # their whole pixels score them
    assert [sign.scored_box for sign in edges] == [sign.box for sign in edges]
    assert clipped.exact_box == (98.5, 10.5, 100.0, 15.5)


def test_resize_frames_command(tmp_path, capsys):
    _coco_set(tmp_path / "set")
    out = tmp_path / "small"
    assert main(["data", "resize-frames", str(tmp_path / "set"), str(out), "--scale", "0.5"]) == 0
    assert f"wrote 2 frames at 0.5 of their size to {out}" in capsys.readouterr().out
    assert len(read_coco_frames(out)) == 2
    missing = str(tmp_path / "none")
    assert main(["data", "resize-frames", missing, str(out), "--scale", "0.5"]) == 2
    assert "error:" in capsys.readouterr().err


def test_resize_frames_refuses_the_source_folder_as_out(tmp_path):
    # Annotations and images side by side (no images/ folder): writing OUT = SRC would
    # replace the source annotations.json.
    source = tmp_path / "flat"
    source.mkdir()
    Image.new("RGB", (64, 48)).save(source / "a.jpg")
    Image.new("RGB", (64, 48)).save(source / "b.jpg")
    document = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
            {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48},
        ],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 5, 20, 10]}],
        "categories": [{"id": 3, "name": "Speed limit 40 km/h"}],
    }
    _write(source, document)
    before = {path.name: path.read_bytes() for path in source.iterdir()}
    for out in (source, tmp_path / "flat" / ".." / "flat"):
        with pytest.raises(ValueError, match="is the source folder"):
            resize_frames(source, out, scale=0.5)
    with pytest.raises(ValueError, match="is the source folder"):
        resize_frames(source / "annotations.json", source, scale=0.5)
    assert {path.name: path.read_bytes() for path in source.iterdir()} == before
    assert resize_frames(source, tmp_path / "half", scale=0.5) == 2


@pytest.mark.parametrize("name", ["absolute", "../b.png", "../../set/images/b.png"])
def test_resize_frames_writes_nothing_outside_out(tmp_path, name):
    source = tmp_path / "set"
    file_name = str(source / "images" / "b.png") if name == "absolute" else name
    root = _broken(source, _set("images.1.file_name", file_name))
    if name == "../b.png":  # an image beside the image folder
        Image.new("RGB", (64, 48)).save(root / "b.png")
    frames_before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"images\[1\]: file_name .* is absolute or climbs"):
        resize_frames(root, out, scale=0.5)
    after = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    assert after == frames_before and not out.exists()


def test_resize_frames_does_not_follow_a_link_out_of_out(tmp_path):
    source = tmp_path / "set"
    _coco_set(source)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "images").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(DataError, match="leads out of"):
        resize_frames(source, tmp_path / "out", scale=0.5)
    assert not any(elsewhere.iterdir())


def test_split_frames_refuses_a_side_that_is_the_source_folder(tmp_path):
    # OUT/train is the source folder: its annotations.json would be replaced by the train half.
    source = tmp_path / "train"
    document = _coco_set(source)
    with pytest.raises(ValueError, match="is the source folder"):
        split_frames(source, tmp_path, test_share=0.5)
    assert json.loads((source / "annotations.json").read_text()) == document
    assert (source / "images").is_dir() and not (source / "images").is_symlink()


def test_split_frames_refuses_out_inside_the_source(tmp_path):
    """Sides written into the source mixed generated sets into it, and where its images lie
    beside its JSON, each side's `images` link led back to the source: a link loop."""
    source = tmp_path / "flat"
    source.mkdir()
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (64, 48)).save(source / name)
    images = [
        {"id": i, "file_name": f"{name}.jpg", "width": 64, "height": 48}
        for i, name in enumerate("ab")
    ]
    _write(source, {"images": images, "annotations": [], "categories": []})
    before = sorted(path.name for path in source.iterdir())
    for out in (source, source / "split", source / ".." / "flat"):
        with pytest.raises(ValueError, match="is the source folder or inside it"):
            split_frames(source, out, test_share=0.5)
    assert sorted(path.name for path in source.iterdir()) == before
    assert split_frames(source / "annotations.json", tmp_path / "split", test_share=0.5) == (1, 1)


def test_resize_frames_refuses_a_scale_that_leaves_no_sign_to_see(tmp_path, capsys):
    _coco_set(tmp_path / "set")
    out = tmp_path / "tiny"
    assert resize_frames(tmp_path / "set", tmp_path / "third", scale=1 / 3) == 2  # 21x16
    with pytest.raises(ValueError, match=r"a.jpg \(64x48\) 19x14: under 16 px a side"):
        resize_frames(tmp_path / "set", out, scale=0.3)
    assert main(["data", "resize-frames", str(tmp_path / "set"), str(out), "--scale", "0.1"]) == 2
    assert "under 16 px a side" in capsys.readouterr().err
    assert not out.exists()
