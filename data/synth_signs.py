"""Flat, front-on drawings of the 58 CTSRD sign classes, used by the synthetic generator.

Each sign is drawn once at 4x `TEMPLATE_SIZE` and downscaled with area averaging, which
anti-aliases every edge. Drawing happens in sign units: the outline fits the square
[-1, 1] x [-1, 1], x to the right and y down. Pictograms are drawn in a local frame
(centre, scale, optional mirror), so one pictogram serves several families (a horn on a
blue disc and under a red slash) and left/right pairs are mirror images of one drawing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np

TEMPLATE_SIZE = 256
_SUPERSAMPLE = 4
_CANVAS = TEMPLATE_SIZE * _SUPERSAMPLE

Color = tuple[int, int, int]  # RGB
RED: Color = (205, 30, 40)
BLUE: Color = (20, 80, 175)
YELLOW: Color = (250, 195, 30)
BLACK: Color = (25, 25, 25)
WHITE: Color = (245, 245, 240)
GREY: Color = (125, 125, 125)
AMBER: Color = (250, 160, 20)
GREEN: Color = (30, 170, 70)

Points = Sequence[tuple[float, float]] | np.ndarray


@dataclass(frozen=True, slots=True)
class Frame:
    """Maps pictogram coordinates p to sign units: (cx + sx * p.x, cy + s * p.y)."""

    cx: float = 0.0
    cy: float = 0.0
    s: float = 1.0
    mirror: bool = False

    @property
    def sx(self) -> float:
        return -self.s if self.mirror else self.s

    def sub(self, cx: float, cy: float, s: float, mirror: bool = False) -> Frame:
        """A frame nested inside this one (centre and scale in this frame's coordinates)."""
        return Frame(
            self.cx + self.sx * cx, self.cy + self.s * cy, self.s * s, self.mirror ^ mirror
        )

    def flipped(self) -> Frame:
        return Frame(self.cx, self.cy, self.s, not self.mirror)


SIGN = Frame()


@dataclass(frozen=True, slots=True)
class SignTemplate:
    """A front-on sign: RGB colours and coverage alpha, both TEMPLATE_SIZE square uint8."""

    rgb: np.ndarray
    alpha: np.ndarray


@cache
def sign_template(class_id: int) -> SignTemplate:
    """The drawing of CTSRD class `class_id` (cached; the arrays are read-only)."""
    if class_id not in _DRAWINGS:
        raise ValueError(f"no drawing for CTSRD class {class_id}; classes are 0..57")
    rgb = np.zeros((_CANVAS, _CANVAS, 3), np.uint8)
    alpha = np.zeros((_CANVAS, _CANVAS), np.uint8)
    _DRAWINGS[class_id](rgb, alpha)
    size = (TEMPLATE_SIZE, TEMPLATE_SIZE)
    rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)
    rgb.setflags(write=False)
    alpha.setflags(write=False)
    return SignTemplate(rgb, alpha)


# --- drawing primitives (sign units in, canvas pixels out) ---------------------------------


def _px(frame: Frame, points: Points) -> np.ndarray:
    p = np.asarray(points, np.float64).reshape(-1, 2)
    x = (frame.cx + frame.sx * p[:, 0] + 1) * _CANVAS / 2
    y = (frame.cy + frame.s * p[:, 1] + 1) * _CANVAS / 2
    return np.round(np.stack([x, y], axis=1)).astype(np.int32)


def _length(frame: Frame, units: float) -> int:
    return max(1, round(abs(frame.s) * units * _CANVAS / 2))


def _fill(img: np.ndarray, frame: Frame, points: Points, color: Color | int) -> None:
    cv2.fillPoly(img, [_px(frame, points)], color, cv2.LINE_AA)


def _stroke(
    img: np.ndarray, frame: Frame, points: Points, color: Color, width: float, closed=False
) -> None:
    """A thick polyline; OpenCV gives thick lines round caps and round joins."""
    cv2.polylines(img, [_px(frame, points)], closed, color, _length(frame, width), cv2.LINE_AA)


def _disc(
    img: np.ndarray, frame: Frame, centre: tuple[float, float], radius: float, color, width=0.0
) -> None:
    """A filled disc, or a circle outline when `width` > 0."""
    thickness = _length(frame, width) if width > 0 else -1
    x, y = _px(frame, [centre])[0]
    cv2.circle(img, (int(x), int(y)), _length(frame, radius), color, thickness, cv2.LINE_AA)


def _rect(img: np.ndarray, frame: Frame, x0: float, y0: float, x1: float, y1: float, color):
    _fill(img, frame, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)], color)


def _rotated_rect(img, frame: Frame, centre, size, degrees: float, color) -> np.ndarray:
    """Fill a rectangle turned by `degrees` (clockwise on screen); return its corners."""
    a = np.radians(degrees)
    along, across = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
    c, (w, h) = np.asarray(centre, np.float64), size
    corners = [c + sx * w / 2 * along + sy * h / 2 * across for sx, sy in _CORNER_SIGNS]
    _fill(img, frame, corners, color)
    return np.array(corners)


_CORNER_SIGNS = ((-1, -1), (1, -1), (1, 1), (-1, 1))


def _arc(centre: tuple[float, float], radius: float, start_deg: float, end_deg: float, n=24):
    a = np.radians(np.linspace(start_deg, end_deg, n))
    return np.stack([centre[0] + radius * np.cos(a), centre[1] + radius * np.sin(a)], axis=1)


def _arrow(img, frame: Frame, path: Points, color: Color, width=0.2, head=0.42) -> None:
    """A polyline ending in a triangular head at its last point, pointing along the last leg."""
    path = np.asarray(path, np.float64)
    tip = path[-1]
    direction = tip - path[-2]
    direction /= np.linalg.norm(direction)
    normal = np.array([-direction[1], direction[0]])
    base = tip - direction * head
    # The shaft stops inside the head so the round cap never pokes past the tip.
    _stroke(img, frame, np.vstack([path[:-1], base + direction * head * 0.3]), color, width)
    _fill(img, frame, [tip, base + normal * head * 0.68, base - normal * head * 0.68], color)


def _text(img, frame: Frame, text: str, box: tuple[float, float, float, float], color, weight=6):
    """Draw `text` (OpenCV Hershey font) stretched so its ink fills `box` (x0, y0, x1, y1)."""
    font, scale = cv2.FONT_HERSHEY_DUPLEX, 4.0
    (width, height), baseline = cv2.getTextSize(text, font, scale, weight)
    pad = 2 * weight
    glyphs = np.zeros((height + baseline + 2 * pad, width + 2 * pad), np.uint8)
    cv2.putText(glyphs, text, (pad, pad + height), font, scale, 255, weight, cv2.LINE_AA)
    ys, xs = np.nonzero(glyphs)
    glyphs = glyphs[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    (x0, y0), (x1, y1) = _px(frame, [box[:2], box[2:]])
    x0, x1 = sorted((x0, x1))
    ink = cv2.resize(glyphs, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    if frame.mirror:
        ink = ink[:, ::-1]
    coverage = ink[..., None].astype(np.float32) / 255
    region = img[y0:y1, x0:x1]
    blended = region * (1 - coverage) + np.array(color, np.float32) * coverage
    region[...] = np.round(blended).astype(np.uint8)


# --- sign bodies -----------------------------------------------------------------------------

# Pictogram frames: where the [-1, 1] pictogram square sits on each body.
_DISC_PICTOGRAM = Frame(0.0, 0.0, 0.6)
_TRIANGLE_PICTOGRAM = Frame(0.0, 0.27, 0.4)

# Equilateral warning triangle, apex up, side 2: its centroid and inradius in sign units.
_TRI_HEIGHT = np.sqrt(3.0)
_TRI_TOP = -0.88
_TRI_CENTROID_Y = _TRI_TOP + 2 / 3 * _TRI_HEIGHT
_TRI_INRADIUS = _TRI_HEIGHT / 3


def _triangle(inset: float, corner_radius: float, inverted=False) -> tuple[np.ndarray, float]:
    """A triangle `inset` units inside the outline, shrunk further so that stroking it with
    2 * corner_radius gives rounded corners; returns (vertices, stroke width)."""
    shrink = (_TRI_INRADIUS - inset - corner_radius) / _TRI_INRADIUS
    unit = np.array([(0.0, -2 / 3 * _TRI_HEIGHT), (-1.0, _TRI_HEIGHT / 3), (1.0, _TRI_HEIGHT / 3)])
    if inverted:
        unit[:, 1] *= -1
        return unit * shrink + (0.0, -_TRI_CENTROID_Y), 2 * corner_radius
    return unit * shrink + (0.0, _TRI_CENTROID_Y), 2 * corner_radius


def _rounded_triangle(img, inset: float, corner_radius: float, color, inverted=False) -> None:
    vertices, stroke = _triangle(inset, corner_radius, inverted)
    _fill(img, SIGN, vertices, color)
    _stroke(img, SIGN, vertices, color, stroke, closed=True)


def _round_body(rgb, alpha, face: Color, ring: Color | None = None, ring_width=0.19) -> None:
    """A disc with a thin white rim and an optional coloured ring inside it."""
    _disc(alpha, SIGN, (0, 0), 0.98, 255)
    _disc(rgb, SIGN, (0, 0), 0.98, WHITE)
    if ring is None:
        _disc(rgb, SIGN, (0, 0), 0.93, face)
    else:
        _disc(rgb, SIGN, (0, 0), 0.95, ring)
        _disc(rgb, SIGN, (0, 0), 0.95 - ring_width, face)


def _warning_body(rgb, alpha) -> None:
    """Yellow triangle with a black band and a thin yellow rim, rounded corners."""
    _rounded_triangle(alpha, 0.0, 0.1, 255)
    _rounded_triangle(rgb, 0.0, 0.1, YELLOW)
    _rounded_triangle(rgb, 0.04, 0.09, BLACK)
    _rounded_triangle(rgb, 0.18, 0.05, YELLOW)


_PROHIBITION_INNER = 0.95 - 0.19


def _slash(rgb, color=RED, direction=(1.0, 1.0)) -> None:
    """A diagonal bar across the inner disc of a red-ring sign (top-left to bottom-right)."""
    d = np.array(direction) / np.linalg.norm(direction) * _PROHIBITION_INNER
    _stroke(rgb, SIGN, [-d, d], color, 0.14)


# --- pictograms (drawn in their own [-1, 1] frame) ------------------------------------------


def _straight(img, f: Frame, color) -> None:
    _arrow(img, f, [(0, 0.9), (0, -0.9)], color)


def _turn_left(img, f: Frame, color) -> None:
    _arrow(img, f, [(0.35, 0.9), (0.35, -0.1), (-0.85, -0.1)], color)


def _straight_or_left(img, f: Frame, color) -> None:
    _arrow(img, f, [(0.25, 0.9), (0.25, -0.9)], color, width=0.18, head=0.38)
    _arrow(img, f, [(0.25, 0.45), (-0.2, 0.05), (-0.85, 0.05)], color, width=0.18, head=0.38)


def _left_or_right(img, f: Frame, color) -> None:
    _arrow(img, f, [(0, 0.9), (0, -0.05), (-0.9, -0.05)], color, width=0.18, head=0.38)
    _arrow(img, f, [(0, -0.05), (0.9, -0.05)], color, width=0.18, head=0.38)


def _keep_left(img, f: Frame, color) -> None:
    _arrow(img, f, [(0.6, -0.6), (-0.65, 0.65)], color, width=0.24, head=0.5)


def _u_turn(img, f: Frame, color) -> None:
    path = np.vstack([[(0.45, 0.9)], _arc((0.0, -0.25), 0.45, 0, -180), [(-0.45, 0.55)]])
    _arrow(img, f, path, color, width=0.2, head=0.42)


def _roundabout(img, f: Frame, color) -> None:
    # Three arrows chasing each other anticlockwise on screen, as on Chinese roundabout signs.
    for start in (-60.0, 60.0, 180.0):
        _arrow(img, f, _arc((0, 0), 0.62, start, start - 85), color, width=0.2, head=0.42)


def _car_front(img, f: Frame, color, face) -> None:
    _fill(img, f, [(-0.55, -0.05), (0.55, -0.05), (0.4, -0.55), (-0.4, -0.55)], color)
    _stroke(img, f, [(-0.55, -0.05), (0.55, -0.05), (0.4, -0.55), (-0.4, -0.55)], color, 0.1, True)
    _rect(img, f, -0.85, -0.05, 0.85, 0.45, color)
    _fill(img, f, [(-0.42, -0.12), (0.42, -0.12), (0.32, -0.45), (-0.32, -0.45)], face)
    _rect(img, f, -0.78, 0.4, -0.45, 0.72, color)
    _rect(img, f, 0.45, 0.4, 0.78, 0.72, color)
    _disc(img, f, (-0.56, 0.18), 0.12, face)
    _disc(img, f, (0.56, 0.18), 0.12, face)


def _horn(img, f: Frame, color) -> None:
    _rect(img, f, -0.9, -0.1, -0.55, 0.1, color)
    _fill(img, f, [(-0.6, -0.14), (0.5, -0.5), (0.5, 0.5), (-0.6, 0.14)], color)
    x, y = _px(f, [(0.55, 0.0)])[0]
    axes = (_length(f, 0.12), _length(f, 0.55))
    cv2.ellipse(img, (int(x), int(y)), axes, 0, 0, 360, color, -1, cv2.LINE_AA)


def _bicycle(img, f: Frame, color) -> None:
    _disc(img, f, (-0.5, 0.35), 0.36, color, width=0.1)
    _disc(img, f, (0.52, 0.35), 0.36, color, width=0.1)
    _stroke(
        img,
        f,
        [(-0.5, 0.35), (-0.02, 0.35), (0.32, -0.15), (-0.25, -0.15), (-0.02, 0.35)],
        color,
        0.1,
    )
    _stroke(img, f, [(0.32, -0.15), (0.52, 0.35)], color, 0.1)
    _stroke(img, f, [(-0.25, -0.15), (-0.32, -0.38)], color, 0.1)
    _stroke(img, f, [(-0.48, -0.4), (-0.18, -0.4)], color, 0.12)
    _stroke(img, f, [(0.32, -0.15), (0.22, -0.45), (0.45, -0.5)], color, 0.1)


def _walker(img, f: Frame, color, stride=1.0) -> None:
    _disc(img, f, (0.1, -0.78), 0.15, color)
    _stroke(img, f, [(0.05, -0.55), (-0.08, 0.05)], color, 0.2)
    _stroke(img, f, [(-0.08, 0.05), (0.25 * stride, 0.42), (0.3 * stride, 0.85)], color, 0.15)
    _stroke(img, f, [(-0.08, 0.05), (-0.35 * stride, 0.42), (-0.6 * stride, 0.8)], color, 0.15)
    _stroke(img, f, [(0.04, -0.45), (0.35, -0.2), (0.5, 0.05)], color, 0.13)
    _stroke(img, f, [(0.04, -0.45), (-0.3, -0.2), (-0.45, 0.0)], color, 0.13)


def _pedestrians(img, f: Frame, color) -> None:
    _walker(img, f.sub(0.0, -0.2, 0.7), color)
    for x in (-0.75, -0.35, 0.05, 0.45):
        _fill(img, f, [(x, 0.95), (x + 0.22, 0.95), (x + 0.32, 0.68), (x + 0.1, 0.68)], color)


def _children(img, f: Frame, color) -> None:
    _walker(img, f.sub(-0.35, -0.05, 0.75), color)
    _walker(img, f.sub(0.45, 0.2, 0.55), color, stride=0.8)


def _traffic_light(img, f: Frame, _color) -> None:
    _rect(img, f, -0.32, -0.92, 0.32, 0.92, BLACK)
    for y, lamp in ((-0.58, RED), (0.0, AMBER), (0.58, GREEN)):
        _disc(img, f, (0, y), 0.22, lamp)


def _exclamation(img, f: Frame, color) -> None:
    _fill(img, f, [(-0.17, -0.95), (0.17, -0.95), (0.08, 0.4), (-0.08, 0.4)], color)
    _disc(img, f, (0, 0.72), 0.16, color)


def _sharp_bend(img, f: Frame, color) -> None:
    _arrow(img, f, [(-0.3, 0.9), (-0.3, 0.0), (0.55, -0.6)], color, width=0.24, head=0.48)


def _slope(img, f: Frame, color) -> None:
    """A road falling from left to right with a car driving down it."""
    _fill(img, f, [(-0.95, -0.25), (0.95, 0.85), (-0.95, 0.85)], color)
    angle = np.degrees(np.arctan2(1.1, 1.9))
    rotated = _rotated_rect(img, f, (-0.2, -0.05), (0.75, 0.32), angle, color)
    cabin = (rotated[0] + rotated[1]) / 2 + (0.08, -0.16)
    _disc(img, f, tuple(cabin), 0.17, color)


def _t_junction(img, f: Frame, color) -> None:
    _rect(img, f, -0.4, -0.95, -0.05, 0.95, color)
    _rect(img, f, -0.1, -0.17, 0.85, 0.17, color)


def _road_fork(img, f: Frame, color) -> None:
    _stroke(img, f, [(0, 0.95), (0, 0.15)], color, 0.26)
    _arrow(img, f, [(0, 0.15), (-0.6, -0.6)], color, width=0.22, head=0.42)
    _arrow(img, f, [(0, 0.15), (0.6, -0.6)], color, width=0.22, head=0.42)


def _house(img, f: Frame, color, face) -> None:
    _rect(img, f, -0.5, -0.1, 0.5, 0.8, color)
    _fill(img, f, [(-0.7, -0.05), (0.0, -0.7), (0.7, -0.05)], color)
    _rect(img, f, -0.12, 0.35, 0.12, 0.8, face)


def _village(img, f: Frame, color) -> None:
    _house(img, f.sub(-0.45, 0.05, 0.6), color, YELLOW)
    _house(img, f.sub(0.45, 0.25, 0.45), color, YELLOW)
    _stroke(img, f, [(-0.95, 0.72), (0.95, 0.72)], color, 0.08)


def _double_bend(img, f: Frame, color) -> None:
    path = [(-0.15, 0.9), (-0.15, 0.4), (0.3, 0.05), (0.3, -0.25), (-0.1, -0.55), (-0.1, -0.9)]
    _arrow(img, f, path, color, width=0.2, head=0.4)


def _winding_road(img, f: Frame, color) -> None:
    path = [
        (0, 0.95),
        (0, 0.7),
        (0.45, 0.45),
        (-0.35, 0.1),
        (0.35, -0.25),
        (-0.1, -0.5),
        (-0.1, -0.95),
    ]
    _arrow(img, f, path, color, width=0.16, head=0.38)


def _train(img, f: Frame, color) -> None:
    _rect(img, f, -0.85, -0.15, 0.6, 0.4, color)
    _rect(img, f, 0.15, -0.6, 0.6, -0.1, color)
    _rect(img, f, -0.7, -0.55, -0.45, -0.1, color)
    for x in (-0.55, -0.1, 0.35):
        _disc(img, f, (x, 0.55), 0.2, color)
    _disc(img, f, (-0.35, -0.8), 0.12, color)
    _disc(img, f, (-0.05, -0.9), 0.09, color)


def _road_works(img, f: Frame, color) -> None:
    _disc(img, f, (-0.4, -0.65), 0.16, color)
    _stroke(img, f, [(-0.35, -0.45), (0.05, 0.1)], color, 0.22)
    _stroke(img, f, [(0.05, 0.1), (-0.3, 0.5), (-0.45, 0.9)], color, 0.15)
    _stroke(img, f, [(0.05, 0.1), (0.2, 0.5), (0.05, 0.9)], color, 0.15)
    _stroke(img, f, [(-0.25, -0.3), (0.15, -0.05), (0.55, 0.45)], color, 0.1)
    _fill(img, f, [(0.45, 0.95), (0.7, 0.4), (0.98, 0.95)], color)


def _barrier(img, f: Frame, color) -> None:
    for x in (-0.7, -0.23, 0.23, 0.7):
        _fill(
            img,
            f,
            [(x - 0.12, 0.9), (x + 0.12, 0.9), (x + 0.12, -0.5), (x, -0.72), (x - 0.12, -0.5)],
            color,
        )
    _rect(img, f, -0.95, -0.35, 0.95, -0.18, color)
    _rect(img, f, -0.95, 0.3, 0.95, 0.47, color)


def _accident(img, f: Frame, color) -> None:
    for centre, angle in (((-0.42, 0.35), -25.0), ((0.42, 0.35), 25.0)):
        _rotated_rect(img, f, centre, (0.75, 0.42), angle, color)
    star = [(0.0, -0.95), (0.12, -0.55), (0.45, -0.7), (0.25, -0.35), (0.0, -0.2)]
    _fill(img, f, star + [(-0.25, -0.35), (-0.45, -0.7), (-0.12, -0.55)], color)


def _give_way_glyph(img, f: Frame, color) -> None:
    """Strokes in the spirit of the character on Chinese give-way signs."""
    _stroke(img, f, [(-0.75, -0.75), (-0.5, -0.55)], color, 0.16)
    _stroke(img, f, [(-0.8, -0.2), (-0.55, -0.2), (-0.55, 0.6), (-0.35, 0.4)], color, 0.14)
    _stroke(img, f, [(0.2, -0.85), (0.2, 0.65)], color, 0.16)
    _stroke(img, f, [(0.2, -0.15), (0.7, -0.15)], color, 0.14)
    _stroke(img, f, [(-0.2, 0.65), (0.85, 0.65)], color, 0.16)


# --- whole signs -----------------------------------------------------------------------------


def _speed_limit(numeral: str) -> Callable[[np.ndarray, np.ndarray], None]:
    half_width = 0.28 if len(numeral) == 1 else 0.54

    def draw(rgb, alpha) -> None:
        _round_body(rgb, alpha, WHITE, RED)
        _text(rgb, SIGN, numeral, (-half_width, -0.42, half_width, 0.42), BLACK, weight=7)

    return draw


def _end_of_limit(numeral: str) -> Callable[[np.ndarray, np.ndarray], None]:
    def draw(rgb, alpha) -> None:
        _round_body(rgb, alpha, WHITE, GREY, ring_width=0.06)
        _text(rgb, SIGN, numeral, (-0.5, -0.4, 0.5, 0.4), GREY, weight=7)
        # Parallel dark strokes from upper right to lower left, clipped to the inner disc.
        direction, normal, inner = (
            np.array([-1, 1]) / np.sqrt(2),
            np.array([1, 1]) / np.sqrt(2),
            0.86,
        )
        for offset in (-0.24, -0.08, 0.08, 0.24):
            half = np.sqrt(inner**2 - offset**2)
            ends = [normal * offset - direction * half, normal * offset + direction * half]
            _stroke(rgb, SIGN, ends, BLACK, 0.04)

    return draw


PictogramDraw = Callable[[np.ndarray, Frame, Color], None]


def _prohibition(pictogram: PictogramDraw | None, mirror=False, slash=True):
    """White disc, red ring, black pictogram under a red slash."""

    def draw(rgb, alpha) -> None:
        _round_body(rgb, alpha, WHITE, RED)
        if pictogram is not None:
            pictogram(rgb, _DISC_PICTOGRAM.sub(0, 0, 1.0, mirror), BLACK)
        if slash:
            _slash(rgb)

    return draw


def _mandatory(pictogram: PictogramDraw, mirror=False):
    """Blue disc with a thin white rim and a white pictogram."""

    def draw(rgb, alpha) -> None:
        _round_body(rgb, alpha, BLUE)
        pictogram(rgb, _DISC_PICTOGRAM.sub(0, 0, 1.05, mirror), WHITE)

    return draw


def _warning(pictogram: PictogramDraw, mirror=False):
    def draw(rgb, alpha) -> None:
        _warning_body(rgb, alpha)
        pictogram(rgb, _TRIANGLE_PICTOGRAM.sub(0, 0, 1.0, mirror), BLACK)

    return draw


def _no_overtaking(rgb, alpha) -> None:
    _round_body(rgb, alpha, WHITE, RED)
    _car_front(rgb, _DISC_PICTOGRAM.sub(-0.45, 0.05, 0.5), RED, WHITE)
    _car_front(rgb, _DISC_PICTOGRAM.sub(0.45, 0.05, 0.5), BLACK, WHITE)
    _slash(rgb)


def _no_motor_vehicles(rgb, alpha) -> None:
    _round_body(rgb, alpha, WHITE, RED)
    _car_front(rgb, _DISC_PICTOGRAM.sub(0, 0.05, 0.9), BLACK, WHITE)
    _slash(rgb)


def _motor_vehicle_lane(rgb, alpha) -> None:
    _round_body(rgb, alpha, BLUE)
    _car_front(rgb, _DISC_PICTOGRAM.sub(0, 0.05, 0.95), WHITE, BLUE)


def _u_turn_allowed(rgb, alpha) -> None:
    """The one square mandatory sign in the set: blue with a white rim."""
    square = [(-0.82, -0.9), (0.82, -0.9), (0.82, 0.9), (-0.82, 0.9)]
    for img, color, inset in ((alpha, 255, 0.0), (rgb, WHITE, 0.0), (rgb, BLUE, 0.05)):
        corners = np.array(square) * (1 - inset)
        _fill(img, SIGN, corners, color)
        _stroke(img, SIGN, corners, color, 0.16, closed=True)
    _u_turn(rgb, Frame(0, 0.05, 0.62), WHITE)


def _stop(rgb, alpha) -> None:
    angles = np.radians(22.5 + 45 * np.arange(8))
    octagon = np.stack([np.cos(angles), np.sin(angles)], axis=1) / np.cos(np.radians(22.5))
    _fill(alpha, SIGN, octagon * 0.98, 255)
    _fill(rgb, SIGN, octagon * 0.98, WHITE)
    _fill(rgb, SIGN, octagon * 0.92, RED)
    _text(rgb, SIGN, "STOP", (-0.68, -0.26, 0.68, 0.26), WHITE, weight=9)


def _no_parking(rgb, alpha) -> None:
    _round_body(rgb, alpha, BLUE, RED)
    _slash(rgb)
    _slash(rgb, direction=(-1.0, 1.0))


def _no_entry(rgb, alpha) -> None:
    _round_body(rgb, alpha, RED)
    _rect(rgb, SIGN, -0.66, -0.15, 0.66, 0.15, WHITE)


def _give_way(rgb, alpha) -> None:
    _rounded_triangle(alpha, 0.0, 0.1, 255, inverted=True)
    _rounded_triangle(rgb, 0.0, 0.1, WHITE, inverted=True)
    _rounded_triangle(rgb, 0.04, 0.09, RED, inverted=True)
    _rounded_triangle(rgb, 0.22, 0.05, WHITE, inverted=True)
    _give_way_glyph(rgb, Frame(0, -0.3, 0.3), BLACK)


def _checkpoint(rgb, alpha) -> None:
    _round_body(rgb, alpha, WHITE, RED)
    _rect(rgb, SIGN, -0.76, -0.28, 0.76, -0.02, BLACK)
    _text(rgb, SIGN, "CHECK", (-0.5, 0.14, 0.5, 0.44), BLACK, weight=6)


# Class id -> drawing; ids and names follow data/ctsrd_classes.csv.
_DRAWINGS: dict[int, Callable[[np.ndarray, np.ndarray], None]] = {
    0: _speed_limit("5"),
    1: _speed_limit("15"),
    2: _speed_limit("30"),
    3: _speed_limit("40"),
    4: _speed_limit("50"),
    5: _speed_limit("60"),
    6: _speed_limit("70"),
    7: _speed_limit("80"),
    8: _prohibition(_straight_or_left),
    9: _prohibition(_straight_or_left, mirror=True),
    10: _prohibition(_straight),
    11: _prohibition(_turn_left),
    12: _prohibition(_left_or_right),
    13: _prohibition(_turn_left, mirror=True),
    14: _no_overtaking,
    15: _prohibition(_u_turn),
    16: _no_motor_vehicles,
    17: _prohibition(_horn),
    18: _end_of_limit("40"),
    19: _end_of_limit("50"),
    20: _mandatory(_straight_or_left, mirror=True),
    21: _mandatory(_straight),
    22: _mandatory(_turn_left),
    23: _mandatory(_left_or_right),
    24: _mandatory(_turn_left, mirror=True),
    25: _mandatory(_keep_left),
    26: _mandatory(_keep_left, mirror=True),
    27: _mandatory(_roundabout),
    28: _motor_vehicle_lane,
    29: _mandatory(_horn),
    30: _mandatory(_bicycle),
    31: _u_turn_allowed,
    32: _warning(_road_fork),
    33: _warning(_traffic_light),
    34: _warning(_exclamation),
    35: _warning(_pedestrians),
    36: _warning(_bicycle),
    37: _warning(_children),
    38: _warning(_sharp_bend),
    39: _warning(_sharp_bend, mirror=True),
    40: _warning(_slope),
    41: _warning(_slope, mirror=True),
    42: _warning(lambda img, f, color: _text(img, f, "SLOW", (-0.9, -0.15, 0.9, 0.5), color)),
    43: _warning(_t_junction),
    44: _warning(_t_junction, mirror=True),
    45: _warning(_village),
    46: _warning(_double_bend),
    47: _warning(_train),
    48: _warning(_road_works),
    49: _warning(_winding_road),
    50: _warning(_barrier),
    51: _warning(_accident),
    52: _stop,
    53: _prohibition(None, slash=False),
    54: _no_parking,
    55: _no_entry,
    56: _give_way,
    57: _checkpoint,
}
