"""TT100K crops: the reader, its labels in CTSRD's classes, the check report, and reading
several datasets as one."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from data.check import check_dataset
from data.classes import no_sign_id, unknown_sign_id
from data.load import load_dataset, load_datasets
from data.records import DataError

CLASSES_CSV = "code,name,ctsrd_class_id\npl40,Speed limit 40 km/h,3\npl100,Speed limit 100,\n"
UNKNOWN, NO_SIGN = unknown_sign_id("ctsrd"), no_sign_id("ctsrd")


def _png(path: Path, shade: int = 0, size: tuple[int, int] = (34, 38)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (shade, 90, 180)).save(path)


def _crops(root: Path, split: str | None = None) -> Path:
    """pl40 (CTSRD class 3): two crops of panorama 1001, one of 2000; pl100 (no CTSRD class);
    an undocumented code; negative patches (no sign)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.csv").write_text(CLASSES_CSV)
    folder = root / split if split else root
    _png(folder / "pl40" / "1001_0.png", 10)
    _png(folder / "pl40" / "1001_1.png", 20)
    _png(folder / "pl40" / "2000_2.png", 30)
    _png(folder / "pl100" / "3000_3.png", 40)
    _png(folder / "zz9" / "4000_4.png", 50)
    negative = folder / "negative" / "5000.jpg"
    negative.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (90, 90, 90)).save(negative)
    return root


def test_codes_become_ctsrd_classes_unknown_signs_or_no_sign(tmp_path: Path):
    index = load_dataset(_crops(tmp_path))
    assert (index.name, index.layout) == ("ctsrd", "tt100k")
    labels = {r.image_path.relative_to(tmp_path).as_posix(): r.class_id for r in index.records}
    assert labels == {
        "negative/5000.jpg": NO_SIGN,
        "pl100/3000_3.png": UNKNOWN,
        "pl40/1001_0.png": 3,
        "pl40/1001_1.png": 3,
        "pl40/2000_2.png": 3,
        "zz9/4000_4.png": UNKNOWN,  # a code classes.csv does not map is a sign of no class
    }
    record = next(r for r in index.records if r.image_path.name == "1001_1.png")
    # No box, no mask: the sign fills the crop.
    assert record.box is None and record.mask_path is None and not record.mask_known
    assert (record.width, record.height, record.origin) == (34, 38, "tt100k")
    assert record.group == "tt100k:1001" and record.sequence == ("tt100k", 1001)
    negative = next(r for r in index.records if r.class_id == NO_SIGN)
    assert not negative.has_sign and negative.mask_known  # known to be empty


def test_train_and_test_folders_keep_their_split(tmp_path: Path):
    _crops(tmp_path, "train")
    _png(tmp_path / "test" / "pl40" / "9000_9.png", 99)
    index = load_dataset(tmp_path)
    assert Counter(r.split for r in index.records) == {"train": 6, "test": 1}


def test_an_unreadable_crop_names_its_file(tmp_path: Path):
    _crops(tmp_path)
    broken = tmp_path / "pl40" / "1001_7.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match=r"1001_7\.png.*not an image"):
        load_dataset(tmp_path)
    index = load_dataset(tmp_path, on_error="skip")
    assert len(index.records) == 6 and "1001_7.png" in str(index.skipped[0])


def test_a_bad_class_table_names_its_line(tmp_path: Path):
    _crops(tmp_path)
    (tmp_path / "classes.csv").write_text(CLASSES_CSV + "p5,No U-turn,75\n")
    with pytest.raises(DataError, match=r"classes.csv:4: class 75 out of range"):
        load_dataset(tmp_path)


@pytest.mark.parametrize(
    ("extra_line", "said"),
    [
        ("pl40,Speed limit 40 km/h,4", "CTSRD class 4, but line 2 maps it to CTSRD class 3"),
        ("PL40,Speed limit 40 km/h,", "no CTSRD class, but line 2 maps it to CTSRD class 3"),
    ],
)
def test_a_code_mapped_twice_to_different_classes_names_both_lines(tmp_path, extra_line, said):
    _crops(tmp_path)
    (tmp_path / "classes.csv").write_text(CLASSES_CSV + extra_line + "\n")
    with pytest.raises(DataError, match=rf"classes.csv:4: code '(pl|PL)40' again, .*{said}"):
        load_dataset(tmp_path)
    # The same mapping said twice is no conflict.
    (tmp_path / "classes.csv").write_text(CLASSES_CSV + "pl40,Speed limit 40 km/h,3\n")
    assert len(load_dataset(tmp_path).records) == 6


def test_codes_match_whatever_their_case(tmp_path: Path):
    # TT100K codes are lower case and none differs from another by case alone: a folder I5 or
    # PL40 (or a csv line PL40) is that sign, not an unknown one.
    _crops(tmp_path)
    (tmp_path / "pl40").rename(tmp_path / "PL40")
    (tmp_path / "negative").rename(tmp_path / "Negative")
    (tmp_path / "classes.csv").write_text(CLASSES_CSV + "I5,Keep right,26\n")
    _png(tmp_path / "i5" / "6000_6.png", 60)
    labels = {r.image_path.name: r.class_id for r in load_dataset(tmp_path).records}
    assert labels["1001_0.png"] == 3 and labels["6000_6.png"] == 26
    assert labels["5000.jpg"] == NO_SIGN


def test_every_image_format_that_is_read_elsewhere_is_a_crop(tmp_path: Path):
    _crops(tmp_path)
    for suffix in (".bmp", ".webp", ".PNG", ".tif"):
        Image.new("RGB", (30, 30), (1, 2, 3)).save(tmp_path / "pl40" / f"7000_{suffix[1:]}{suffix}")
    (tmp_path / "pl40" / "notes.txt").write_text("not a crop")
    names = {r.image_path.name for r in load_dataset(tmp_path).records}
    assert {"7000_bmp.bmp", "7000_webp.webp", "7000_PNG.PNG", "7000_tif.tif"} <= names
    assert len(names) == 10


def test_check_reports_the_open_set(tmp_path: Path):
    report = check_dataset(_crops(tmp_path)).to_dict()
    assert report["layout"] == "tt100k" and report["records"] == 6
    assert report["class_histogram"] == {"3": 3}
    assert report["open_set_counts"] == {"unknown sign": 2, "no sign": 1}
    assert report["box_coverage"] is None  # no boxes
    assert "open set    2 signs of no class" in check_dataset(tmp_path).to_text()


def test_several_folders_read_as_one(tmp_path: Path, ctsrd_real: Path):
    crops = _crops(tmp_path / "tt100k")
    index = load_datasets([ctsrd_real, crops])
    assert index.layout == "plain+tt100k" and index.roots == [ctsrd_real, crops]
    assert Counter(r.origin for r in index.records) == {"tsrd": 1191, "tt100k": 6}


def test_folders_of_other_classes_are_not_mixed(tmp_path: Path, gtsrb_real: Path):
    with pytest.raises(DataError, match="must share their classes"):
        load_datasets([_crops(tmp_path), gtsrb_real])


def test_an_empty_dataset_is_an_error(tmp_path: Path):
    (tmp_path / "classes.csv").write_text(CLASSES_CSV)
    (tmp_path / "pl40").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_dataset(tmp_path)


def test_real_tt100k_crops(tt100k_crops: Path):
    index = load_dataset(tt100k_crops)
    labels = Counter(r.class_id for r in index.records)
    assert len(index.records) == 17127 and index.skipped == []
    assert labels[NO_SIGN] == 600 and labels[UNKNOWN] == 5323
    assert sum(n for c, n in labels.items() if c < UNKNOWN) == 11204
    assert len([c for c in labels if c < UNKNOWN]) == 48
