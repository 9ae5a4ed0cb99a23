"""The readers: real samples, the TSRD plain and official layouts, GTSRB, layout detection."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from data.load import load_dataset
from data.records import DataError
from data.split import train_test_split


def _png(path: Path, size: tuple[int, int] = (40, 30), shade: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (shade, 100, 200)).save(path)


def test_real_ctsrd_sample(ctsrd_real: Path):
    index = load_dataset(ctsrd_real)

    assert (index.name, index.layout) == ("ctsrd", "plain")
    assert len(index.records) == 1191
    assert len({r.class_id for r in index.records}) == 55
    assert index.skipped == []
    assert len(index.class_names) == 58
    first = index.records[0]
    assert first.image_path == ctsrd_real / "images" / "000_0001.png"
    assert (first.class_id, first.box, first.width, first.height) == (
        0,
        (19, 7, 120, 117),
        134,
        128,
    )
    assert first.sha1 == hashlib.sha1(first.image_path.read_bytes()).hexdigest()
    assert first.source == f"{ctsrd_real / 'annotations.txt'}:1"
    assert all(r.mask_path is None and r.split is None for r in index.records)


def test_real_gtsrb_sample(gtsrb_real: Path):
    # The folder also holds provenance.csv, which is not an annotation file and is left alone.
    index = load_dataset(gtsrb_real)

    assert (index.name, index.layout) == ("gtsrb", "gtsrb")
    assert len(index.records) == 300
    assert len({r.class_id for r in index.records}) == 36
    assert len(index.class_names) == 43
    first = index.records[0]
    assert first.image_path == gtsrb_real / "images" / "00012.ppm"
    assert (first.class_id, first.box, first.width, first.height) == (12, (6, 5, 35, 34), 40, 39)


def test_gtsrb_tracks_stay_on_one_side_of_the_split(gtsrb_real: Path):
    # GTSRB shoots each sign along a track of near copies: 300 photos of 172 tracks here.
    index = load_dataset(gtsrb_real)
    assert {r.origin for r in index.records} == {"gtsrb"}
    assert len({r.group for r in index.records}) == 172
    train, test = train_test_split(index, test_fraction=0.2, seed=0)
    assert test and not {r.group for r in train} & {r.group for r in test}


def test_gtsrb_release_tracks_are_named_by_class_folder(tmp_path: Path):
    # The release names its files TTTTT_NNNNN.ppm in every class folder: track 00000 of two
    # classes is two tracks.
    for folder, class_id in (("00001", 1), ("00002", 2)):
        for name in ("00000_00000.ppm", "00000_00001.ppm", "00001_00000.ppm"):
            _png(tmp_path / folder / name, shade=class_id * 10 + int(name[10]))
        rows = [
            f"{name};40;30;1;1;39;29;{class_id}"
            for name in sorted(p.name for p in (tmp_path / folder).glob("*.ppm"))
        ]
        header = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"
        (tmp_path / folder / f"GT-{folder}.csv").write_text("\n".join([header, *rows]) + "\n")
    groups = [record.group for record in load_dataset(tmp_path).records]
    assert len(groups) == 6 and len(set(groups)) == 4


def test_plain_layout_with_exact_masks(tmp_path: Path):
    _png(tmp_path / "images" / "a.png")
    _png(tmp_path / "images" / "b.jpg.png", shade=50)
    (tmp_path / "masks").mkdir()
    for stem in ("a", "b.jpg"):
        Image.new("L", (40, 30)).save(tmp_path / "masks" / f"{stem}.png")
    (tmp_path / "annotations.txt").write_text(
        "a.png;40;30;1;2;30;25;7;\r\nb.jpg.png;40;30;0;0;40;30;57;\r\n"
    )

    index = load_dataset(tmp_path)

    assert [r.mask_path for r in index.records] == [
        tmp_path / "masks" / "a.png",
        tmp_path / "masks" / "b.jpg.png",
    ]
    assert [r.class_id for r in index.records] == [7, 57]
    assert index.records[1].box == (0, 0, 40, 30)


def test_official_layout_nested_crlf(tmp_path: Path):
    # As in the release: images at the top, each annotation file in a folder of its own.
    _png(tmp_path / "tsrd-train" / "000_0001.png")
    _png(tmp_path / "tsrd-train" / "001_0001.png", shade=10)
    _png(tmp_path / "TSRD-Test" / "000_0001.png", shade=20)  # same name, other image
    train_annotations = tmp_path / "TSRD-Train Annotation" / "TsignRecgTrain4170Annotation.txt"
    test_annotations = tmp_path / "TSRD-Test Annotation" / "TsignRecgTest1994Annotation.txt"
    train_annotations.parent.mkdir()
    test_annotations.parent.mkdir()
    train_annotations.write_bytes(
        b"000_0001.png;40;30;1;1;39;29;0;\r\n\r\n001_0001.png;40;30;2;2;30;20;1;\r\n"
    )
    test_annotations.write_bytes(b"000_0001.png;40;30;3;3;33;23;0;\r\n")

    index = load_dataset(tmp_path)

    assert (index.name, index.layout) == ("ctsrd", "official")
    assert [(r.image_path.relative_to(tmp_path).as_posix(), r.split) for r in index.records] == [
        ("tsrd-train/000_0001.png", "train"),
        ("tsrd-train/001_0001.png", "train"),
        ("TSRD-Test/000_0001.png", "test"),
    ]
    assert [r.source for r in index.records] == [
        f"{train_annotations}:1",
        f"{train_annotations}:3",
        f"{test_annotations}:1",
    ]


def test_official_layout_nested_one_folder_down(tmp_path: Path):
    release = tmp_path / "TSRD"
    _png(release / "tsrd-train" / "000_0001.png")
    (release / "TsignRecgTrain4170Annotation.txt").write_text("000_0001.png;40;30;1;1;39;29;0;\n")

    index = load_dataset(tmp_path)

    assert index.layout == "official"
    assert [r.split for r in index.records] == ["train"]


def test_official_split_without_its_annotation_is_an_error(tmp_path: Path):
    _png(tmp_path / "tsrd-train" / "000_0001.png")
    (tmp_path / "TsignRecgTrain4170Annotation.txt").write_text("000_0001.png;40;30;1;1;39;29;0;\n")
    _png(tmp_path / "TSRD-Test" / "000_0001.png")

    with pytest.raises(DataError, match="test split incomplete.*TsignRecgTest"):
        load_dataset(tmp_path)


def test_gtsrb_images_beside_the_csv(tmp_path: Path):
    _png(tmp_path / "00001.ppm", size=(32, 33))
    (tmp_path / "GT-00014.csv").write_text(
        "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\r\n00001.ppm;32;33;5;6;27;28;14\r\n"
    )
    (tmp_path / "notes.csv").write_text("name,value\nx,1\n")

    index = load_dataset(tmp_path)

    assert index.layout == "gtsrb"
    [record] = index.records
    assert (record.image_path, record.class_id, record.box) == (
        tmp_path / "00001.ppm",
        14,
        (5, 6, 27, 28),
    )


def test_unknown_layout_says_what_was_looked_for(tmp_path: Path):
    _png(tmp_path / "images" / "a.png")  # images/ alone, no annotations.txt

    with pytest.raises(DataError) as raised:
        load_dataset(tmp_path)

    message = str(raised.value)
    assert message.startswith(f"{tmp_path}: no known dataset layout")
    for looked_for in ("tsrd-train/", "images/ + annotations.txt", "ClassId"):
        assert looked_for in message


def test_missing_folder(tmp_path: Path):
    with pytest.raises(DataError, match="no such dataset folder"):
        load_dataset(tmp_path / "absent")
