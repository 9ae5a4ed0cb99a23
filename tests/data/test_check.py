"""`check_dataset`: counts, statistics, exact duplicates and cross-split leakage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from data.check import check_dataset


def _png(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (shade, 60, 120)).save(path)


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


@pytest.fixture
def official_release(tmp_path: Path) -> Path:
    """A miniature of the TSRD release, with its faults: byte-identical copies under other
    names inside each split, one image in both splits, and one file name used in both splits
    for two different images. Annotations are CRLF, each in a folder of its own."""
    train, test = tmp_path / "tsrd-train", tmp_path / "TSRD-Test"
    _png(train / "000_0001.png", shade=0)
    _copy(train / "000_0001.png", train / "000_1_0001.png")
    _png(train / "001_0002.png", shade=40)
    _copy(train / "001_0002.png", train / "001_1_0002.png")
    _copy(train / "001_0002.png", test / "001_0009.png")
    _png(train / "002_0003.png", shade=80)
    _png(test / "002_0003.png", shade=120)
    _png(test / "003_0004.png", shade=160)
    _copy(test / "003_0004.png", test / "003_1_0004.png")
    train_lines = [
        "000_0001.png;40;30;2;2;38;28;0;",
        "000_1_0001.png;40;30;2;2;38;28;0;",
        "001_0002.png;40;30;0;0;40;30;1;",
        "001_1_0002.png;40;30;1;0;40;30;1;",
        "002_0003.png;40;30;10;5;30;25;2;",
    ]
    test_lines = [
        "001_0009.png;40;30;0;0;40;30;1;",
        "002_0003.png;40;30;4;3;24;18;2;",
        "003_0004.png;40;30;0;0;20;15;3;",
        "003_1_0004.png;40;30;0;0;20;15;3;",
    ]
    for folder, name, lines in (
        ("TSRD-Train Annotation", "TsignRecgTrain4170Annotation.txt", train_lines),
        ("TSRD-Test Annotation", "TsignRecgTest1994Annotation.txt", test_lines),
    ):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_bytes("".join(f"{line}\r\n" for line in lines).encode())
    return tmp_path


def test_official_release_duplicates_and_leakage(official_release: Path):
    report = check_dataset(official_release)
    summary = report.to_dict()

    assert summary["records"] == 9
    assert summary["distinct_images"] == 5
    assert summary["split_counts"] == {"train": 5, "test": 4}
    assert summary["errors"] == 0
    assert summary["classes"] == 4
    assert summary["class_histogram"] == {"0": 2, "1": 3, "2": 2, "3": 2}
    assert summary["duplicate_groups"] == [
        ["TSRD-Test/001_0009.png", "tsrd-train/001_0002.png", "tsrd-train/001_1_0002.png"],
        ["TSRD-Test/003_0004.png", "TSRD-Test/003_1_0004.png"],
        ["tsrd-train/000_0001.png", "tsrd-train/000_1_0001.png"],
    ]
    assert summary["cross_split"] == [
        {
            "train": ["tsrd-train/001_0002.png", "tsrd-train/001_1_0002.png"],
            "test": ["TSRD-Test/001_0009.png"],
        }
    ]
    text = report.to_text()
    assert "duplicates  3 groups of identical images (7 files)" in text
    assert "cross-split 1 images in both train and test" in text
    assert "test: TSRD-Test/001_0009.png" in text


def test_statistics(official_release: Path):
    summary = check_dataset(official_release).to_dict()

    assert summary["width"] == {"min": 40, "median": 40, "max": 40}
    # Box area / 1200 px, in record order: 0.78 0.78 1 0.975 0.333 1 0.25 0.25 0.25.
    assert summary["box_coverage"]["min"] == pytest.approx(0.25)
    assert summary["box_coverage"]["median"] == pytest.approx(0.78)
    assert summary["box_coverage"]["max"] == pytest.approx(1.0)
    assert summary["missing_classes"] == list(range(4, 58))
    json.dumps(summary)  # the CLI prints it with --json


def test_skip_reports_count_and_reasons(official_release: Path):
    annotations = official_release / "TSRD-Test Annotation" / "TsignRecgTest1994Annotation.txt"
    with annotations.open("ab") as stream:
        stream.write(b"gone.png;40;30;0;0;40;30;1;\r\n003_0004.png;40;30;0;0;41;15;3;\r\n")

    report = check_dataset(official_release, on_error="skip")

    summary = report.to_dict()
    assert (summary["records"], summary["errors"]) == (9, 2)
    assert summary["skipped"][0].startswith(f"{annotations}:5: image file missing")
    assert summary["skipped"][1].startswith(f"{annotations}:6: box (0, 0, 41, 15)")
    text = report.to_text()
    assert "errors      2 (records skipped, listed below)" in text
    assert f"  {annotations}:5: image file missing" in text


def test_real_ctsrd_report(ctsrd_real: Path):
    report = check_dataset(ctsrd_real)
    summary = report.to_dict()

    assert (summary["records"], summary["classes"], summary["errors"]) == (1191, 55, 0)
    assert summary["missing_classes"] == [19, 25, 53]
    # SOURCES.md: each distinct image of the release is kept once, so no duplicates remain.
    assert summary["duplicate_groups"] == []
    assert summary["cross_split"] == []
    assert summary["width"] == {"min": 37, "median": 131, "max": 446}
    text = report.to_text()
    assert "records     1191 (1191 distinct images)" in text
    assert "classes     55 of 58 present (missing: 19, 25, 53)" in text
    assert "errors      0" in text


def test_real_gtsrb_report(gtsrb_real: Path):
    summary = check_dataset(gtsrb_real).to_dict()

    assert (summary["records"], summary["classes"], summary["errors"]) == (300, 36, 0)
    assert summary["dataset"] == "gtsrb"


def test_text_lists_a_bounded_number_of_groups(official_release: Path, monkeypatch):
    monkeypatch.setattr("data.check.LISTED_IN_TEXT", 1)

    text = check_dataset(official_release).to_text()

    assert "  TSRD-Test/001_0009.png, tsrd-train/001_0002.png, tsrd-train/001_1_0002.png" in text
    assert "  TSRD-Test/003_0004.png, TSRD-Test/003_1_0004.png" not in text
    assert "  ... and 2 more (--json lists all)" in text


def test_annotations_of_one_image_that_disagree_are_a_warning(tmp_path: Path):
    # One file on two lines with two classes; a byte-identical copy whose box is elsewhere;
    # and a copy annotated alike but for a pixel, which is no conflict.
    images = tmp_path / "images"
    _png(images / "a.png", shade=0)
    _copy(images / "a.png", images / "a_copy.png")
    _png(images / "b.png", shade=90)
    _copy(images / "b.png", images / "b_copy.png")
    _png(images / "c.png", shade=180)
    _copy(images / "c.png", images / "c_copy.png")
    (tmp_path / "annotations.txt").write_text(
        "a.png;40;30;2;2;20;20;3;\n"
        "a.png;40;30;2;2;20;20;5;\n"
        "a_copy.png;40;30;3;2;20;20;3;\n"
        "b.png;40;30;0;0;15;15;7;\n"
        "b_copy.png;40;30;20;12;38;28;7;\n"
        "c.png;40;30;0;0;40;30;1;\n"
        "c_copy.png;40;30;1;0;40;30;1;\n"
    )
    report = check_dataset(tmp_path)
    summary = report.to_dict()
    assert [[item["file"] for item in group] for group in summary["conflicts"]] == [
        ["images/a.png", "images/a.png", "images/a_copy.png"],
        ["images/b.png", "images/b_copy.png"],
    ]
    assert summary["conflicts"][0][1] == {
        "file": "images/a.png",
        "source": "annotations.txt:2",
        "class_id": 5,
        "box": [2, 2, 20, 20],
    }
    text = report.to_text()
    assert "conflicts   2 images annotated in ways that disagree (warning: training keeps" in text
    assert (
        "  images/b.png (annotations.txt:4): class 7 box (0, 0, 15, 15); "
        "images/b_copy.png (annotations.txt:5): class 7 box (20, 12, 38, 28)"
    ) in text
    json.dumps(summary)


def test_a_release_whose_copies_agree_has_no_conflict(official_release: Path):
    report = check_dataset(official_release)
    assert report.to_dict()["conflicts"] == []
    assert "conflicts   0 images annotated in ways that disagree\n" in report.to_text()
