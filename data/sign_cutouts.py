"""Signs ready to pose in a scene: front-on cutouts with exact coverage, and where they come from.

A `Cutout` is a sign's premultiplied RGB under its uint8 alpha. They come from four places:
the synthetic drawings of data/synth_signs.py (exact alpha), real TT100K, TSRD and GTSRB
crops cut with the outline of their family (`shape_alpha`: disc, triangle, inverted
triangle, octagon, square, diamond), DFG signs cut along their annotated polygons, and drawn
rectangular panels and direction boards (no CTSRD class). data/scenes.py poses and
composites them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import cv2
import numpy as np

from data.classes import sign_classes
from data.frames import FrameInstance, FrameRecord, instance_mask
from data.gtsrb import find_annotation_files, read_gtsrb
from data.images import read_rgb
from data.records import Box, DataError
from data.synth_signs import sign_template
from data.validate import annotation_lines, parse_int, split_fields

SHAPES = ("disc", "triangle", "inverted", "octagon", "square", "diamond")


# --- sign families -------------------------------------------------------------------------


def ctsrd_shape(class_id: int) -> str:
    """The outline of a CTSRD class, from its family in data/ctsrd_classes.csv."""
    sign = sign_classes("ctsrd")[class_id]
    if sign.name == "Stop":
        return "octagon"
    if sign.name == "Give way":
        return "inverted"
    if sign.name == "U-turn allowed":  # the one square mandatory sign
        return "square"
    return {"prohibitory": "disc", "mandatory": "disc", "warning": "triangle"}[sign.family]


def tt100k_shape(code: str) -> str | None:
    """The outline of a TT100K class code; None for a crop with no sign. TT100K's "other"
    codes keep their family's shape: io blue discs, po red-ring discs, wo triangles."""
    if code == "negative":
        return None
    if code == "pg":
        return "inverted"
    if code == "ps":
        return "octagon"
    if code == "ip":  # pedestrian crossing: a blue square in China
        return "square"
    if code[0] in "pi":
        return "disc"
    if code[0] == "w":
        return "triangle"
    return None


def gtsrb_shape(class_id: int) -> str:
    """The outline of a GTSRB class (data/gtsrb_classes.csv): the European families."""
    if class_id == 12:  # priority road
        return "diamond"
    if class_id == 13:  # yield
        return "inverted"
    if class_id == 14:  # stop
        return "octagon"
    if class_id == 11 or 18 <= class_id <= 31:  # warnings
        return "triangle"
    return "disc"


def shape_alpha(shape: str, width: int, height: int, inset: float = 0.02) -> np.ndarray:
    """uint8 HxW coverage of `shape` filling a width x height crop (anti-aliased edges)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    scale = 4  # draw at 4x with sub-pixel vertices, then average down
    alpha = np.zeros((height * scale, width * scale), np.uint8)
    w, h = width * scale, height * scale
    dx, dy = w * inset, h * inset
    if shape == "disc":
        cv2.ellipse(
            alpha, (w // 2, h // 2), (round(w / 2 - dx), round(h / 2 - dy)), 0, 0, 360, 255, -1
        )
    else:
        if shape == "triangle":
            points = [(w / 2, dy), (w - dx, h - dy), (dx, h - dy)]
        elif shape == "inverted":
            points = [(dx, dy), (w - dx, dy), (w / 2, h - dy)]
        elif shape == "square":
            points = [(dx, dy), (w - dx, dy), (w - dx, h - dy), (dx, h - dy)]
        elif shape == "diamond":
            points = [(w / 2, dy), (w - dx, h / 2), (w / 2, h - dy), (dx, h / 2)]
        else:  # octagon: corners cut at 1 / (2 + sqrt 2) of each side
            cut = 1 / (2 + math.sqrt(2))
            x0, x1, y0, y1 = dx, w - dx, dy, h - dy
            cw, ch = (x1 - x0) * cut, (y1 - y0) * cut
            points = [
                (x0 + cw, y0), (x1 - cw, y0), (x1, y0 + ch), (x1, y1 - ch),
                (x1 - cw, y1), (x0 + cw, y1), (x0, y1 - ch), (x0, y0 + ch),
            ]  # fmt: skip
        cv2.fillPoly(alpha, [np.round(np.array(points)).astype(np.int32)], 255)
    return cv2.resize(alpha, (width, height), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True, eq=False)
class Cutout:
    """A front-on sign ready to pose: premultiplied RGB and alpha, both uint8."""

    rgb: np.ndarray
    alpha: np.ndarray
    class_id: int | None
    source: str

    @cached_property
    def outline(self) -> np.ndarray:
        """The four corners of each pixel at a vertex of the convex hull of the sign's pixels
        (float32 Nx2, in no particular order: not a polygon; the patch's corners for a sign
        with no pixel). The sign lies within them, so their extent under a pose sizes the
        posed sign."""
        inside = (self.alpha >= 128).astype(np.uint8)
        points = cv2.findNonZero(inside)
        if points is None:
            height, width = self.alpha.shape
            return np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
        hull = cv2.convexHull(points).reshape(-1, 2).astype(np.float32)
        # Pixel (col, row) spans [col, col + 1) x [row, row + 1).
        return np.vstack([hull + offset for offset in ((0, 0), (1, 0), (1, 1), (0, 1))])


def real_cutout(rgb: np.ndarray, shape: str, class_id: int | None, source: str) -> Cutout:
    height, width = rgb.shape[:2]
    return premultiplied(rgb, shape_alpha(shape, width, height), class_id, source)


def premultiplied(rgb: np.ndarray, alpha: np.ndarray, class_id: int | None, source: str):
    """A Cutout of a sign (photographed or drawn) under its uint8 coverage `alpha`."""
    premultiplied = (rgb.astype(np.uint16) * alpha[..., None] // 255).astype(np.uint8)
    return Cutout(premultiplied, alpha, class_id, source)


# --- drawn and photographed signs ----------------------------------------------------------


_PANEL_COLOURS = (  # (background, ink)
    ((245, 245, 240), (20, 20, 20)),
    ((20, 70, 170), (245, 245, 245)),
    ((250, 200, 10), (20, 20, 20)),
    ((10, 120, 60), (245, 245, 245)),
    ((120, 70, 30), (245, 245, 245)),
)
_PANEL_TEXT = "ABCDEFGHKLMNOPRSTUVZ0123456789"


def panel_cutout(rng: np.random.Generator) -> Cutout:
    """A rectangular panel, front on: a plain colour, a border, and arrows, text, a symbol or
    chevron stripes on it. An "unknown sign" (no CTSRD class)."""
    height = 96
    width = int(height * float(np.exp(rng.uniform(np.log(0.6), np.log(2.6)))))
    background, ink = _PANEL_COLOURS[int(rng.integers(len(_PANEL_COLOURS)))]
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[:] = background
    kind = int(rng.integers(4))
    if kind == 0:  # chevrons: black on yellow, or red on white
        stripe = (20, 20, 20) if rng.random() < 0.5 else (200, 20, 30)
        rgb[:] = (250, 200, 10) if stripe[0] < 100 else (245, 245, 240)
        step = max(8, width // int(rng.integers(2, 5)))
        for x in range(-height, width + height, step):
            points = np.array([[x, 0], [x + step // 2, height // 2], [x, height]], np.int32)
            cv2.polylines(rgb, [points], False, stripe, max(4, step // 4))
    else:
        inset = int(rng.integers(4, 9))
        cv2.rectangle(rgb, (inset, inset), (width - inset, height - inset), ink, 3)
        if kind == 1:  # an arrow
            y = height // 2
            start, end = (width // 5, y), (4 * width // 5, y)
            if rng.random() < 0.5:
                start, end = end, start
            cv2.arrowedLine(rgb, start, end, ink, 9, tipLength=0.35)
        elif kind == 2:  # a line or two of text
            rows = int(rng.integers(1, 3))
            baselines = [height // 2] if rows == 1 else [height // 2 - 16, height // 2 + 16]
            for y in baselines:
                letters = "".join(rng.choice(list(_PANEL_TEXT), int(rng.integers(2, 7))))
                cv2.putText(rgb, letters, (12, y + 10), cv2.FONT_HERSHEY_SIMPLEX, 1.0, ink, 3)
        else:  # a symbol: a disc or a square
            centre, radius = (width // 2, height // 2), height // 4
            if rng.random() < 0.5:
                cv2.circle(rgb, centre, radius, ink, -1)
            else:
                corners = (width // 2 - radius, height // 4), (width // 2 + radius, 3 * height // 4)
                cv2.rectangle(rgb, *corners, ink, -1)
    return premultiplied(
        rgb, shape_alpha("square", width, height, inset=0.0), None, "synthetic:panel"
    )


# Direction boards, (background, ink, border): white with a black, green or blue rim,
# yellow, brown (tourist), green and blue.
_BOARD_STYLES = (
    ((245, 245, 240), (20, 20, 20), (20, 20, 20)),
    ((245, 245, 240), (20, 20, 20), (20, 130, 60)),
    ((245, 245, 240), (20, 20, 20), (20, 70, 170)),
    ((250, 200, 10), (20, 20, 20), (20, 20, 20)),
    ((120, 60, 30), (245, 245, 245), (245, 245, 245)),
    ((10, 120, 60), (245, 245, 245), (245, 245, 245)),
    ((20, 70, 170), (245, 245, 245), (245, 245, 245)),
)


@dataclass(frozen=True)
class BoardStyle:
    colours: tuple[tuple[int, int, int], ...]  # background, ink, border
    aspect: float  # width / height
    arrow_left: bool  # the arrow at the left end (pointing left or up), else at the right


def board_style(rng: np.random.Generator) -> BoardStyle:
    colours = _BOARD_STYLES[int(rng.integers(len(_BOARD_STYLES)))]
    aspect = float(np.exp(rng.uniform(np.log(2.5), np.log(6.0))))
    return BoardStyle(colours, aspect, bool(rng.random() < 0.5))


def direction_board(rng: np.random.Generator, style: BoardStyle) -> Cutout:
    """One board of a direction post, front on: a thin rim, an arrow at one end (pointing
    out or up), one or two lines of place names and sometimes a small symbol at the other
    end. An "unknown sign" (no CTSRD class)."""
    height = 48
    width = round(height * style.aspect)
    background, ink, border = style.colours
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[:] = background
    up = rng.random() < 0.4
    end = 18 if style.arrow_left else width - 18  # the arrow's column
    if up:
        tail, tip = (end, height - 8), (end, 7)
    else:
        tail, tip = (end + 12, height // 2), (end - 12, height // 2)
        if not style.arrow_left:
            tail, tip = tip, tail
    text_x = 38 if style.arrow_left else 10
    rows = int(rng.integers(1, 3))
    baselines = [height // 2 + 7] if rows == 1 else [height // 2 - 3, height // 2 + 15]
    scale = 0.55 if rows == 1 else 0.42
    for baseline in baselines:
        letters = "".join(rng.choice(list(_PANEL_TEXT), int(rng.integers(4, 14)))).title()
        cv2.putText(rgb, letters, (text_x, baseline), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, 1)
    # The text runs into the right end, which holds the arrow or a symbol: clear it.
    rgb[:, width - 36 :] = background
    if style.arrow_left and rng.random() < 0.6:
        cv2.rectangle(rgb, (width - 30, 10), (width - 10, height - 10), ink, -1)
    cv2.arrowedLine(rgb, tail, tip, ink, 4, tipLength=0.45)
    cv2.rectangle(rgb, (1, 1), (width - 2, height - 2), border, 2)
    return premultiplied(
        rgb, shape_alpha("square", width, height, inset=0.0), None, "synthetic:board"
    )


@lru_cache(maxsize=64)
def synthetic_cutout(class_id: int) -> Cutout:
    template = sign_template(class_id)
    # The drawing's colours are already coverage-weighted at its edges (it is drawn over
    # black at 4x and averaged down), so they serve as premultiplied colours.
    return Cutout(template.rgb, template.alpha, class_id, f"synthetic:{class_id}")


@lru_cache(maxsize=4096)
def cached_real(path: Path, box: Box | None, shape: str, class_id: int | None, source: str):
    rgb = read_rgb(path)
    if box is not None:
        x1, y1, x2, y2 = box
        rgb = rgb[y1:y2, x1:x2]
    return real_cutout(np.ascontiguousarray(rgb), shape, class_id, source)


@lru_cache(maxsize=1024)
def dfg_cutout(item: tuple[FrameRecord, FrameInstance]) -> Cutout:
    """A DFG sign as photographed, cut along its annotated polygon (no CTSRD class)."""
    frame, sign = item
    x1, y1, x2, y2 = sign.box
    rgb = read_rgb(frame.image_path)[y1:y2, x1:x2]
    alpha = instance_mask(sign, frame.height, frame.width)[y1:y2, x1:x2].astype(np.uint8) * 255
    return premultiplied(rgb, alpha, None, f"dfg:{frame.image_path.name}#{sign.annotation_id}")


def tt100k_split(root: Path) -> str:
    """The folder of class-code folders: train/ where there is one (never test/), else root."""
    return "train" if (root / "train").is_dir() else "."


def read_tsrd_boxes(root: Path) -> list[tuple[Path, Box, int]]:
    """(image, box, class) per line of a TSRD plain folder's annotations.txt. Boxes are
    checked against the declared size; pixels are read when a crop is first used."""
    annotation_file = root / "annotations.txt"
    names = ("filename", "width", "height", "x1", "y1", "x2", "y2", "class")
    count = len(sign_classes("ctsrd"))
    crops = []
    for line, text in annotation_lines(annotation_file):
        where = {"source_file": annotation_file, "line": line}
        filename, *fields = split_fields(text, names, **where)
        width, height, x1, y1, x2, y2, class_id = (
            parse_int(value, name, **where) for value, name in zip(fields, names[1:], strict=True)
        )
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            raise DataError(
                annotation_file,
                line,
                f"box ({x1}, {y1}, {x2}, {y2}) is not inside {width}x{height}",
            )
        if not 0 <= class_id < count:
            raise DataError(annotation_file, line, f"class {class_id} is not a CTSRD class")
        crops.append((root / "images" / filename, (x1, y1, x2, y2), class_id))
    return crops


def read_gtsrb_boxes(root: Path) -> list[tuple[Path, Box, int]]:
    """(image, sign box, GTSRB class) of every record of a GTSRB folder (data/gtsrb.py's
    layout); the first bad record stops it, with its file and line."""
    csv_files = find_annotation_files(root)
    if not csv_files:
        raise DataError(root, None, "no GTSRB annotation CSV (header Filename;...;ClassId)")
    records, _ = read_gtsrb(csv_files, num_classes=len(sign_classes("gtsrb")), on_error="raise")
    return [(record.image_path, record.box, record.class_id) for record in records]
