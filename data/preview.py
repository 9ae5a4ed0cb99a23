"""`greedysign data preview`: a contact sheet of dataset samples as the network sees them,
with each sample's mask outline, box and class drawn on it."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch

from data.classes import label_names
from data.dataset import SignDataset
from data.load import load_dataset
from data.records import DataError
from data.transforms import IMAGENET_MEAN, IMAGENET_STD

TILE_GAP = 4  # pixels between tiles and around the sheet
_BACKGROUND = (32, 32, 32)
_TEXT = (235, 235, 235)
_MASK_COLOUR = (0, 255, 0)  # RGB green: the mask outline
_BOX_COLOUR = (255, 0, 255)  # RGB magenta: the box, drawn just outside it
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_CAPTION_LINES = 2


def write_preview(
    path: Path | str,
    out: Path | str,
    *,
    count: int = 32,
    tile_size: int = 128,
    augment: bool = True,
    seed: int = 0,
    on_error: str = "raise",
) -> list[DataError]:
    """Write a PNG grid of `count` samples of the dataset at `path`, each a tile_size square;
    return the bad records left out (on_error="skip"; "raise" stops at the first).

    Records are drawn at random (seeded). Augmented samples may repeat a record when `count`
    exceeds the dataset, since each draw differs; eval samples would repeat identically, so
    their number is capped at the dataset's size.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    index = load_dataset(path, on_error=on_error)
    if not index.records:
        raise DataError(index.root, None, "no records to preview")
    rng = np.random.default_rng(seed)
    available = len(index.records)
    shown = count if augment else min(count, available)
    chosen = sorted(rng.choice(available, size=shown, replace=shown > available).tolist())
    records = [index.records[i] for i in chosen]
    dataset = SignDataset(records, tile_size, train=augment, seed=seed)

    scale = _font_scale(tile_size)
    tiles = []
    for i in range(len(dataset)):
        image, mask, class_id, box, _mask_known = dataset[i]
        picture = _annotated(_displayable(image), mask[0].numpy().astype(np.uint8), box)
        caption = f"{class_id} {label_names(index.name)[class_id]}"
        tiles.append(_with_caption(picture, caption, scale))

    kind = "augmented" if augment else "eval"
    header = (
        f"{index.name} ({index.layout}): {shown} {kind} samples at {tile_size} px, "
        f"seed {seed}. Green: mask outline. Magenta: box."
    )
    sheet = _contact_sheet(tiles, header, scale)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {out} (is its extension an image format?)")
    return index.skipped


def grid_size(tiles: int) -> tuple[int, int]:
    """(rows, columns) of the most nearly square grid holding `tiles` tiles."""
    columns = math.ceil(math.sqrt(tiles))
    return math.ceil(tiles / columns), columns


def _displayable(image: torch.Tensor) -> np.ndarray:
    """Undo the ImageNet normalisation: [3, S, S] float32 to SxSx3 uint8 RGB."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = (image * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
    return np.ascontiguousarray(pixels.permute(1, 2, 0).numpy())


def _annotated(image: np.ndarray, mask: np.ndarray, box: torch.Tensor) -> np.ndarray:
    # Outlines only, no tint: the sign's own colours stay visible, colour jitter included.
    picture = image.copy()
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(picture, contours, -1, _MASK_COLOUR, 1)
    # The box covers pixels x1 .. x2-1; drawing it one pixel outside keeps a filled-box mask's
    # outline (which lies on the box's own edge pixels) visible beside it.
    x1, y1, x2, y2 = box.tolist()
    if x2 <= x1:
        return picture  # no box: a sign crop that the sign fills, or a patch with no sign
    top_left = (math.floor(x1) - 1, math.floor(y1) - 1)
    bottom_right = (math.ceil(x2), math.ceil(y2))
    cv2.rectangle(picture, top_left, bottom_right, _BOX_COLOUR, 1)
    return picture


def _font_scale(tile_size: int) -> float:
    # Hershey simplex at scale 0.4 is about 7 px per character: 2 lines of ~18 on a 128 px
    # tile. Below 0.3 it is no longer legible.
    return max(0.3, tile_size / 320)


def _line_height(scale: float) -> int:
    (_, text_height), baseline = cv2.getTextSize("Ag", _FONT, scale, 1)
    return text_height + baseline + 3


def _wrapped(text: str, width: int, scale: float, max_lines: int | None = None) -> list[str]:
    """Words of `text` in lines that fit `width` pixels; past `max_lines` the last line is
    cut and ends in '..'."""

    def fits(line: str) -> bool:
        return cv2.getTextSize(line, _FONT, scale, 1)[0][0] <= width

    lines: list[str] = []
    for word in text.split():
        if lines and fits(f"{lines[-1]} {word}"):
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    if max_lines is not None and len(lines) > max_lines:
        last = " ".join(lines[max_lines - 1 :])
        while last and not fits(f"{last}.."):
            last = last[:-1]
        lines = [*lines[: max_lines - 1], f"{last.rstrip()}.."]
    return lines


def _draw_lines(canvas: np.ndarray, lines: list[str], x: int, y: int, scale: float) -> None:
    step = _line_height(scale)
    for row, line in enumerate(lines):
        baseline_y = y + (row + 1) * step - 4
        cv2.putText(canvas, line, (x, baseline_y), _FONT, scale, _TEXT, 1, cv2.LINE_AA)


def _with_caption(picture: np.ndarray, caption: str, scale: float) -> np.ndarray:
    size = picture.shape[1]
    strip = np.full((_CAPTION_LINES * _line_height(scale), size, 3), _BACKGROUND, np.uint8)
    lines = _wrapped(caption, size - 2, scale, max_lines=_CAPTION_LINES)
    _draw_lines(strip, lines, 1, 0, scale)
    return np.concatenate([picture, strip], axis=0)


def _contact_sheet(tiles: list[np.ndarray], header: str, scale: float) -> np.ndarray:
    rows, columns = grid_size(len(tiles))
    tile_height, tile_width = tiles[0].shape[:2]
    width = columns * tile_width + (columns + 1) * TILE_GAP
    header_lines = _wrapped(header, width - 2 * TILE_GAP, scale)
    top = TILE_GAP + len(header_lines) * _line_height(scale)
    height = top + rows * tile_height + (rows + 1) * TILE_GAP
    sheet = np.full((height, width, 3), _BACKGROUND, np.uint8)
    _draw_lines(sheet, header_lines, TILE_GAP, TILE_GAP, scale)
    for i, tile in enumerate(tiles):
        row, column = divmod(i, columns)
        y = top + TILE_GAP + row * (tile_height + TILE_GAP)
        x = TILE_GAP + column * (tile_width + TILE_GAP)
        sheet[y : y + tile_height, x : x + tile_width] = tile
    return sheet
