"""Every kind of bad input is a DataError naming the annotation file, the line and the fault."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from data.load import load_dataset
from data.records import DataError
from data.validate import inspect_image

GOOD_LINE = "good.png;40;30;5;4;35;26;3;"


def _plain_dataset(root: Path, lines: list[str]) -> Path:
    """A plain TSRD folder with one valid 40x30 image, `good.png`, and the given lines."""
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 30, 30)).save(root / "images" / "good.png")
    (root / "annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def _truncated_png(path: Path) -> None:
    Image.effect_noise((64, 64), 80).convert("RGB").save(path)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


@pytest.mark.parametrize(
    ("bad_line", "fault"),
    [
        ("good.png;40;30;5;4;35;", "too few fields"),
        ("good.png;40;30;5;4;35;26;3;9;", "too many fields"),
        ("good.png;40;30;5;four;35;26;3;", "y1 is not an integer: 'four'"),
        ("good.png;40;30;5;4;35;26;58;", "class 58 out of range"),
        ("good.png;40;30;5;4;35;26;-1;", "class -1 out of range"),
        ("good.png;40;30;5;4;41;26;3;", "outside the 40x30 image"),
        ("good.png;40;30;-1;4;35;26;3;", "outside the 40x30 image"),
        ("good.png;40;30;20;4;20;26;3;", "empty or outside"),
        ("good.png;40;30;5;26;35;4;3;", "empty or outside"),
        ("good.png;50;30;5;4;35;26;3;", "annotation says the image is 50x30"),
        ("absent.png;40;30;5;4;35;26;3;", "image file missing"),
        ("notes.png;40;30;5;4;35;26;3;", "not an image"),
        ("cut.png;64;64;5;4;35;26;3;", "truncated or corrupt image"),
    ],
)
def test_bad_line_names_file_line_and_fault(tmp_path: Path, bad_line: str, fault: str):
    root = _plain_dataset(tmp_path, [GOOD_LINE, "", bad_line])  # blank line 2 still counts
    (root / "images" / "notes.png").write_text("not pixels")
    _truncated_png(root / "images" / "cut.png")

    with pytest.raises(DataError) as raised:
        load_dataset(root)

    annotation_file = root / "annotations.txt"
    assert (raised.value.file, raised.value.line) == (str(annotation_file), 3)
    assert str(raised.value).startswith(f"{annotation_file}:3: ")
    assert fault in raised.value.fault


def test_gtsrb_bad_line_names_csv_and_line(tmp_path: Path):
    Image.new("RGB", (40, 30)).save(tmp_path / "00000.ppm")
    csv_file = tmp_path / "GT-00000.csv"
    csv_file.write_text(
        "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"
        "00000.ppm;40;30;5;5;35;25;1\n"
        "00000.ppm;40;30;5;5;35;25;43\n"
    )
    with pytest.raises(DataError, match=r"GT-00000\.csv:3: class 43 out of range.*0-42"):
        load_dataset(tmp_path)


def test_gtsrb_header_without_class_is_refused(tmp_path: Path):
    # The GTSRB test-set CSV ships without ClassId; reading it as labelled data would be wrong.
    (tmp_path / "GT-final_test.test.csv").write_text(
        "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2\n00000.ppm;40;30;5;5;35;25\n"
    )
    with pytest.raises(DataError, match=r"GT-final_test\.test\.csv:1: header lacks ClassId"):
        load_dataset(tmp_path)


def test_skip_collects_every_bad_record(tmp_path: Path):
    lines = [
        GOOD_LINE,
        "good.png;40;30;5;4;35;",
        GOOD_LINE,
        "good.png;40;30;5;4;35;26;99;",
        "absent.png;40;30;5;4;35;26;3;",
        GOOD_LINE,
    ]
    root = _plain_dataset(tmp_path, lines)

    index = load_dataset(root, on_error="skip")

    assert len(index.records) == 3
    assert [error.line for error in index.skipped] == [2, 4, 5]
    assert [r.source for r in index.records] == [
        f"{root / 'annotations.txt'}:{n}" for n in (1, 3, 6)
    ]
    faults = [error.fault for error in index.skipped]
    assert "too few fields" in faults[0]
    assert "class 99 out of range" in faults[1]
    assert "image file missing" in faults[2]


def test_raise_is_the_default_and_unknown_modes_are_refused(tmp_path: Path):
    root = _plain_dataset(tmp_path, [GOOD_LINE, "good.png;40;30;5;4;35;"])
    with pytest.raises(DataError):
        load_dataset(root)
    with pytest.raises(ValueError, match="on_error"):
        load_dataset(root, on_error="ignore")


def test_mask_of_wrong_size_or_missing_is_an_error(tmp_path: Path):
    root = _plain_dataset(tmp_path, [GOOD_LINE])
    (root / "masks").mkdir()
    with pytest.raises(DataError, match=r"annotations\.txt:1: mask file missing"):
        load_dataset(root)
    Image.new("L", (30, 30)).save(root / "masks" / "good.png")
    with pytest.raises(DataError, match=r"annotations\.txt:1: mask .* is 30x30 but the image"):
        load_dataset(root)


def test_inspect_image_returns_size_and_content_hash(tmp_path: Path):
    path = tmp_path / "sign.png"
    Image.new("RGB", (17, 9), (0, 90, 200)).save(path)

    width, height, sha1 = inspect_image(path, source_file=tmp_path / "a.txt", line=7)

    assert (width, height) == (17, 9)
    assert sha1 == hashlib.sha1(path.read_bytes()).hexdigest()


def test_inspect_image_catches_truncation(tmp_path: Path):
    path = tmp_path / "cut.png"
    _truncated_png(path)
    with pytest.raises(DataError, match=r"a\.txt:7: truncated or corrupt image"):
        inspect_image(path, source_file=tmp_path / "a.txt", line=7)


def test_non_utf8_annotation_names_the_line(tmp_path: Path):
    root = _plain_dataset(tmp_path, [GOOD_LINE])
    (root / "annotations.txt").write_bytes(GOOD_LINE.encode() + b"\n\xffbad.png;1;1;0;0;1;1;0;\n")
    with pytest.raises(DataError, match=r"annotations\.txt:2: not UTF-8"):
        load_dataset(root)


def test_an_image_annotated_as_shown_rather_than_as_stored_is_told_so(tmp_path: Path):
    # Stored 120x64, shown 64x120 by its EXIF orientation; annotations describe the stored
    # pixels (as read_rgb reads them), so the size 64x120 is wrong, and the error says why.
    root = _plain_dataset(tmp_path, ["turned.jpg;64;120;5;4;35;26;3;"])
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (120, 64)).save(root / "images" / "turned.jpg", exif=exif)
    with pytest.raises(DataError) as raised:
        load_dataset(root)
    assert "annotation says the image is 64x120" in str(raised.value)
    assert "is 120x64 (its EXIF orientation shows it 64x120" in str(raised.value)
    (root / "annotations.txt").write_text("turned.jpg;120;64;5;4;35;26;3;\n")
    (record,) = load_dataset(root).records
    assert (record.width, record.height) == (120, 64)


class _FailingDataset(torch.utils.data.Dataset):
    """Its third item is a bad file, as a lazily decoded image or a scene tile meets one."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        if index == 2:
            raise DataError("frames/0003.jpg", None, "frame unreadable (image file is truncated)")
        return torch.zeros(1)


def test_data_error_in_a_loader_worker_reaches_the_caller_as_itself():
    """A DataLoader raises a worker's exception again by building its class from the worker's
    traceback text, or a RuntimeError when it cannot: the CLI would print a traceback."""
    loader = torch.utils.data.DataLoader(_FailingDataset(), num_workers=1)
    with pytest.raises(DataError) as raised:
        list(loader)
    assert str(raised.value) == "frames/0003.jpg: frame unreadable (image file is truncated)"
