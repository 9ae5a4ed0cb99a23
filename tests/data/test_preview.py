"""`data preview`: the contact sheet of annotated samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.cli import main
from data.preview import TILE_GAP, grid_size, write_preview
from data.records import DataError

TILE = 48
BOX = (6, 5, 34, 31)  # in a 40 x 36 image


def plain_dataset(root: Path, images: int, *, bad_line: bool = False) -> Path:
    """A TSRD plain folder: images/ + annotations.txt, one red square sign per image."""
    (root / "images").mkdir(parents=True)
    lines = []
    rng = np.random.default_rng(images)
    x1, y1, x2, y2 = BOX
    for i in range(images):
        picture = rng.integers(0, 100, (36, 40, 3), dtype=np.uint8)
        picture[y1:y2, x1:x2] = (200, 20, 20)
        Image.fromarray(picture).save(root / "images" / f"{i:03d}_0001.png")
        lines.append(f"{i:03d}_0001.png;40;36;{x1};{y1};{x2};{y2};{i};")
    if bad_line:
        lines.append("missing.png;40;36;1;1;20;20;0;")
    (root / "annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def sheet_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as sheet:
        return sheet.size


def colour_pixels(path: Path, rgb: tuple[int, int, int]) -> int:
    pixels = np.asarray(Image.open(path).convert("RGB"))
    return int((pixels == rgb).all(axis=2).sum())


def test_grid_size_is_nearly_square():
    assert grid_size(1) == (1, 1)
    assert grid_size(5) == (2, 3)
    assert grid_size(9) == (3, 3)
    assert grid_size(32) == (6, 6)


def test_sheet_has_one_tile_per_sample(tmp_path):
    data = plain_dataset(tmp_path / "set", 5)
    sizes = {}
    for count in (4, 5, 7):
        out = tmp_path / f"sheet{count}.png"
        write_preview(data, out, count=count, tile_size=TILE, augment=True)
        sizes[count] = sheet_size(out)
    width_for = {columns: columns * TILE + (columns + 1) * TILE_GAP for columns in (2, 3)}
    assert sizes[4][0] == width_for[2]  # 2 x 2
    assert sizes[5][0] == sizes[7][0] == width_for[3]  # 2 x 3 and 3 x 3
    row_height = sizes[7][1] - sizes[5][1]
    # A row is a tile, its caption strip and a gap.
    assert TILE + TILE_GAP < row_height < 2 * TILE


def test_eval_sheet_shows_each_record_at_most_once(tmp_path):
    data = plain_dataset(tmp_path / "set", 5)
    write_preview(data, tmp_path / "eval.png", count=50, tile_size=TILE, augment=False)
    write_preview(data, tmp_path / "aug5.png", count=5, tile_size=TILE, augment=True)
    assert sheet_size(tmp_path / "eval.png") == sheet_size(tmp_path / "aug5.png")


def test_tiles_show_mask_outline_and_box(tmp_path):
    data = plain_dataset(tmp_path / "set", 1)
    out = tmp_path / "one.png"
    write_preview(data, out, count=1, tile_size=TILE, augment=False)
    sheet = np.asarray(Image.open(out).convert("RGB"))
    green = (sheet == (0, 255, 0)).all(axis=2)
    magenta = (sheet == (255, 0, 255)).all(axis=2)
    ys, xs = np.nonzero(green)
    outline_size = (xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    x1, y1, x2, y2 = BOX
    expected = (round((x2 - x1) * TILE / 40), round((y2 - y1) * TILE / 36))
    assert np.allclose(outline_size, expected, atol=1)
    green_bounds = np.array([xs.min(), ys.min(), xs.max(), ys.max()])
    ys, xs = np.nonzero(magenta)
    magenta_bounds = np.array([xs.min(), ys.min(), xs.max(), ys.max()])
    # The box is drawn just outside the mask outline, on every side.
    outside = (green_bounds - magenta_bounds) * np.array([1, 1, -1, -1])
    assert ((outside >= 1) & (outside <= 2)).all()


def test_preview_is_reproducible_by_seed(tmp_path):
    data = plain_dataset(tmp_path / "set", 3)
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        write_preview(data, tmp_path / f"{name}.png", count=6, tile_size=TILE, seed=seed)
    a, b, c = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in "abc")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_bad_records_raise_or_are_skipped(tmp_path):
    data = plain_dataset(tmp_path / "set", 2, bad_line=True)
    with pytest.raises(DataError, match="missing.png"):
        write_preview(data, tmp_path / "raise.png", tile_size=TILE)
    write_preview(data, tmp_path / "skip.png", count=2, tile_size=TILE, on_error="skip")
    assert sheet_size(tmp_path / "skip.png")[0] == 2 * TILE + 3 * TILE_GAP


def test_real_ctsrd_preview(ctsrd_real, tmp_path):
    out = tmp_path / "nested" / "real.png"
    write_preview(ctsrd_real, out, count=6, tile_size=64, seed=0)
    assert sheet_size(out)[0] == 3 * 64 + 4 * TILE_GAP
    assert colour_pixels(out, (0, 255, 0)) > 6 * 40  # a mask outline on every tile
    assert colour_pixels(out, (255, 0, 255)) > 6 * 40  # and a box


def test_cli_reports_skipped_records_and_exits_1(tmp_path, capsys):
    """As `data check` does: --on-error skip names the records it left out and exits 1."""
    out = tmp_path / "sheet.png"
    arguments = ["--out", str(out), "--count", "2", "--image-size", str(TILE), "--on-error", "skip"]
    data = plain_dataset(tmp_path / "set", 2, bad_line=True)
    assert main(["data", "preview", str(data), *arguments]) == 1
    printed = capsys.readouterr()
    assert f"wrote {out}" in printed.out and out.is_file()
    assert "skipped 1 bad record:" in printed.err
    assert "annotations.txt:3: " in printed.err and "missing.png" in printed.err
    clean = plain_dataset(tmp_path / "clean", 2)
    assert main(["data", "preview", str(clean), *arguments]) == 0
    assert capsys.readouterr().err == ""
