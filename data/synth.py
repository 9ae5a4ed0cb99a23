"""Synthetic CTSRD: sign crops in the TSRD plain-folder format, with exact sign masks.

`generate_synthetic` writes

    OUT/images/CCC_NNNN.png     RGB crop (class CCC, index NNNN)
    OUT/masks/CCC_NNNN.png      8-bit mask, 255 where the sign is visible, 0 elsewhere
    OUT/annotations.txt         filename;width;height;x1;y1;x2;y2;class;  (LF)

The box is the tight bounding box of the mask, with exclusive right and bottom edges
(mask[y1:y2, x1:x2] holds every sign pixel), so 0 <= x1 < x2 <= width.

Each crop is drawn by `render_sample`: a textured background (sky, foliage, building,
blurred shapes, noise), sometimes a pole or a neighbouring sign behind, the class's sign
(data/synth_signs.py) under a random 3D pose, sometimes an occluder in front (which also
cuts the mask, so the mask holds only visible sign pixels), then lighting, blur, noise and
JPEG loss. Crops are framed like the real TSRD crops: 50-250 px wide (median about 130) with
the sign's box covering 40-85 % of the image. Every image has its own random generator
seeded from (seed, class, index), so the output does not depend on the order of drawing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from data.classes import sign_classes
from data.frames import mask_box
from data.synth_signs import TEMPLATE_SIZE, SignTemplate, sign_template

MIN_COVERAGE, MAX_COVERAGE = 0.42, 0.82  # sign box area / image area, before occlusion
_MIN_COVERAGE_OCCLUDED = 0.4
_MIN_VISIBLE = 0.65  # an occluder may hide at most 35 % of the sign
_MAX_SIDE_FRACTION = 0.96  # the sign box never quite touches both image edges


def generate_synthetic(
    out_dir: Path | str,
    *,
    per_class: int = 20,
    seed: int = 0,
    classes: Collection[int] | None = None,
) -> int:
    """Write the TSRD plain-folder format plus exact masks, for every class or only for
    `classes`; return the number of images."""
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    lines = []
    for sign in sign_classes("ctsrd"):
        if classes is not None and sign.class_id not in classes:
            continue
        for index in range(per_class):
            image, mask = render_sample(sign.class_id, sample_rng(seed, sign.class_id, index))
            name = f"{sign.class_id:03d}_{index:04d}.png"
            _write_png(out / "images" / name, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            _write_png(out / "masks" / name, mask.astype(np.uint8) * 255)
            x1, y1, x2, y2 = mask_box(mask)
            height, width = mask.shape
            lines.append(f"{name};{width};{height};{x1};{y1};{x2};{y2};{sign.class_id};\n")
    with open(out / "annotations.txt", "w", encoding="utf-8", newline="\n") as annotations:
        annotations.writelines(lines)
    return len(lines)


def sample_rng(seed: int, class_id: int, index: int) -> np.random.Generator:
    """The generator for one image: independent of every other image's draws."""
    return np.random.default_rng([seed, class_id, index])


def render_sample(class_id: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic crop of CTSRD class `class_id`: (RGB uint8 HxWx3, bool HxW sign mask)."""
    width, height, homography, sign_width = _frame_sign(class_id, rng)
    image = _background(rng, height, width)
    _draw_behind_sign(image, homography, sign_width, rng)
    premultiplied, alpha = _warp(sign_template(class_id), homography, width, height, sign_width)
    premultiplied = _weather(premultiplied, alpha, rng)
    image = image * (1 - alpha[..., None]) + premultiplied
    mask = alpha >= 0.5
    image, mask = _occlude(image, mask, sign_width, rng)
    image = _camera(_lighting(image, rng), rng)
    return image, mask


# --- geometry --------------------------------------------------------------------------------


def _frame_sign(class_id: int, rng: np.random.Generator):
    """Pose the sign in 3D, then choose the crop size and where the sign sits in it.

    Returns (width, height, homography from template pixels to crop pixels, sign box width).
    """
    posed = _pose(rng)
    outline = cv2.perspectiveTransform(_outline(class_id)[None], posed)[0]
    (left, top), (right, bottom) = outline.min(axis=0), outline.max(axis=0)
    sign_aspect = (right - left) / (bottom - top)

    coverage = rng.uniform(MIN_COVERAGE, MAX_COVERAGE)
    # Crop aspect relative to the sign's: bounded so the box fits at the drawn coverage.
    limit = _MAX_SIDE_FRACTION**2
    low, high = max(0.85, coverage / limit), min(1.25, limit / coverage)
    relative_aspect = np.exp(rng.uniform(np.log(low), np.log(high)))
    width = int(np.clip(round(np.exp(rng.normal(np.log(130), 0.38))), 50, 250))
    height = max(24, round(width / (sign_aspect * relative_aspect)))
    box_width = min(np.sqrt(coverage * width * height * sign_aspect), width * _MAX_SIDE_FRACTION)
    box_width = min(box_width, height * _MAX_SIDE_FRACTION * sign_aspect)
    scale = box_width / (right - left)
    box_height = (bottom - top) * scale
    x0 = (width - box_width) * rng.beta(2.0, 2.0)
    y0 = (height - box_height) * rng.beta(2.0, 2.0)
    place = np.array([[scale, 0, x0 - left * scale], [0, scale, y0 - top * scale], [0, 0, 1]])
    return width, height, place @ posed, box_width


def _pose(rng: np.random.Generator) -> np.ndarray:
    """Homography from template pixels to a unit-sized view of the sign turned in 3D
    (yaw, pitch, roll) and seen through a pinhole camera a few sign-widths away."""
    yaw, pitch, roll = np.radians(np.clip(rng.normal(0, [15, 8, 4]), -45, 45))
    rotation = _turn(roll, about=(0, 1)) @ _turn(yaw, about=(2, 0)) @ _turn(pitch, about=(1, 2))
    stretch = np.exp(rng.normal(0, 0.04))  # signs are not always mounted or made square
    corners = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], np.float64)
    planar = np.column_stack([corners[:, 0] * stretch, corners[:, 1], np.zeros(4)])
    turned = planar @ rotation.T
    distance = rng.uniform(3.0, 8.0)
    projected = turned[:, :2] * (distance / (distance + turned[:, 2:]))
    source = (corners + 1) * TEMPLATE_SIZE / 2
    return cv2.getPerspectiveTransform(source.astype(np.float32), projected.astype(np.float32))


def _turn(angle: float, about: tuple[int, int]) -> np.ndarray:
    """3D rotation by `angle` in the plane of the two axes `about` (0 = x, 1 = y, 2 = z)."""
    i, j = about
    rotation = np.eye(3)
    rotation[i, i] = rotation[j, j] = np.cos(angle)
    rotation[i, j], rotation[j, i] = -np.sin(angle), np.sin(angle)
    return rotation


@cache
def _outline(class_id: int) -> np.ndarray:
    """Convex hull of the sign's pixels, in template pixels (float32 Nx2)."""
    inside = (sign_template(class_id).alpha >= 128).astype(np.uint8)
    contours, _ = cv2.findContours(inside, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return cv2.convexHull(np.vstack(contours)).reshape(-1, 2).astype(np.float32)


def _warp(template: SignTemplate, homography, width: int, height: int, sign_width: float):
    """The sign in crop pixels: (premultiplied RGB float32, alpha float32 in [0, 1]).

    The template is first shrunk with area averaging to about 1.3x its final size, so the
    bilinear warp neither aliases small signs nor blurs large ones.
    """
    level = int(np.clip(round(sign_width * 1.3), 16, TEMPLATE_SIZE))
    rgba = np.dstack([template.rgb, template.alpha])
    if level < TEMPLATE_SIZE:
        rgba = cv2.resize(rgba, (level, level), interpolation=cv2.INTER_AREA)
    to_level = np.diag([TEMPLATE_SIZE / level, TEMPLATE_SIZE / level, 1.0])
    warped = cv2.warpPerspective(
        rgba.astype(np.float32) / 255,
        homography @ to_level,
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return warped[..., :3], warped[..., 3]


def _weather(premultiplied: np.ndarray, alpha: np.ndarray, rng) -> np.ndarray:
    """The warped sign faded, tinted and unevenly lit (RGB premultiplied by alpha)."""
    height, width = alpha.shape
    tinted = premultiplied * np.exp(rng.normal(0, 0.05, 3)).astype(np.float32)
    fade = rng.uniform(0.0, 0.5) ** 2
    faded = tinted * (1 - fade) + fade * alpha[..., None]
    gx, gy = rng.normal(0, 0.08, 2)
    xs = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    ys = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    return np.minimum(faded * (1 + gx * xs + gy * ys)[..., None], alpha[..., None])


# --- backgrounds -----------------------------------------------------------------------------


def _value_noise(rng: np.random.Generator, height: int, width: int, cells: float) -> np.ndarray:
    """Smooth noise in [0, 1] with about `cells` features across the larger side."""
    step = max(height, width) / cells
    grid = rng.random((int(height / step) + 2, int(width / step) + 2)).astype(np.float32)
    return np.clip(cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)


def _fractal_noise(rng: np.random.Generator, height: int, width: int, cells=3.0, octaves=4):
    total, weight = np.zeros((height, width), np.float32), 0.0
    for octave in range(octaves):
        amplitude = 0.5**octave
        total += amplitude * _value_noise(rng, height, width, cells * 2**octave)
        weight += amplitude
    return total / weight


def _mix(low: np.ndarray, high: np.ndarray, t: np.ndarray) -> np.ndarray:
    return low + (high - low) * t[..., None]


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A random everyday colour: a grey with a little tint, as most of a street scene is."""
    return np.clip(rng.uniform(0.12, 0.88) + rng.normal(0, 0.1, 3), 0, 1).astype(np.float32)


def _jitter(rng: np.random.Generator, color, spread=0.08) -> np.ndarray:
    return np.clip(np.asarray(color, np.float32) + rng.normal(0, spread, 3), 0, 1)


def _sky(rng, height, width) -> np.ndarray:
    zenith = _jitter(rng, rng.choice([(0.35, 0.55, 0.85), (0.6, 0.7, 0.85), (0.75, 0.78, 0.8)]))
    horizon = _jitter(rng, (0.85, 0.88, 0.92), 0.05)
    t = np.linspace(0, 1, height, dtype=np.float32)[:, None] * np.ones((1, width), np.float32)
    sky = _mix(zenith, horizon, t)
    clouds = np.clip(
        _fractal_noise(rng, height, width, cells=2.5) * 2 - rng.uniform(0.6, 1.3), 0, 1
    )
    return _mix(sky, np.full(3, rng.uniform(0.8, 1.0), np.float32), clouds)


def _foliage(rng, height, width) -> np.ndarray:
    dark = _jitter(rng, (0.1, 0.22, 0.08), 0.05)
    light = _jitter(rng, (0.4, 0.55, 0.2), 0.08)
    image = _mix(dark, light, _fractal_noise(rng, height, width, cells=4))
    count = int(height * width / rng.uniform(40, 120))
    size = max(2, round(max(height, width) / rng.uniform(25, 60)))
    xs, ys = rng.integers(0, width, count), rng.integers(0, height, count)
    lengths, breadths = rng.integers(1, size + 1, count), rng.integers(1, size // 2 + 2, count)
    angles = rng.uniform(0, 180, count)
    tones = _mix(dark, light, rng.random(count).astype(np.float32)) * rng.uniform(
        0.7, 1.2, (count, 1)
    )
    for leaf in range(count):
        centre, axes = (int(xs[leaf]), int(ys[leaf])), (int(lengths[leaf]), int(breadths[leaf]))
        cv2.ellipse(image, centre, axes, angles[leaf], 0, 360, tones[leaf].tolist(), -1)
    return image


def _building(rng, height, width) -> np.ndarray:
    wall = _jitter(
        rng,
        rng.choice([(0.75, 0.72, 0.65), (0.55, 0.55, 0.55), (0.6, 0.35, 0.28), (0.85, 0.85, 0.82)]),
    )
    glass = _jitter(rng, rng.choice([(0.2, 0.25, 0.3), (0.35, 0.45, 0.55), (0.1, 0.1, 0.12)]))
    image = _mix(wall * 0.85, wall, _fractal_noise(rng, height, width, cells=6))
    pitch_x, pitch_y = rng.uniform(12, 45, 2) * max(height, width) / 130
    fill_x, fill_y = rng.uniform(0.35, 0.75, 2)
    offset_x, offset_y = rng.uniform(0, pitch_x), rng.uniform(0, pitch_y)
    rows = np.arange(offset_y - pitch_y, height, pitch_y)
    cols = np.arange(offset_x - pitch_x, width, pitch_x)
    tones = glass * rng.uniform(0.7, 1.4, (len(rows), len(cols), 1)).astype(np.float32)
    for i, y in enumerate(rows):
        for j, x in enumerate(cols):
            far = (int(x + pitch_x * fill_x), int(y + pitch_y * fill_y))
            cv2.rectangle(image, (int(x), int(y)), far, tones[i, j].tolist(), -1)
    return image


def _shapes(rng, height, width) -> np.ndarray:
    image = np.empty((height, width, 3), np.float32)
    image[...] = _muted(rng)
    span = max(height, width)
    for _ in range(int(rng.integers(5, 16))):
        color = _muted(rng).tolist()
        x, y = int(rng.integers(-span // 4, width)), int(rng.integers(-span // 4, height))
        size = int(rng.uniform(0.1, 0.6) * span)
        kind = rng.integers(3)
        if kind == 0:
            cv2.rectangle(image, (x, y), (x + size, y + int(size * rng.uniform(0.3, 2))), color, -1)
        elif kind == 1:
            cv2.circle(image, (x, y), size // 2, color, -1, cv2.LINE_AA)
        else:
            end = (x + int(rng.integers(-span, span)), y + int(rng.integers(-span, span)))
            cv2.line(image, (x, y), end, color, max(1, size // 8), cv2.LINE_AA)
    return cv2.GaussianBlur(image, (0, 0), rng.uniform(1.0, 4.0) * span / 130)


def _noise_texture(rng, height, width) -> np.ndarray:
    low, high = _muted(rng), _muted(rng)
    return _mix(low, high, _fractal_noise(rng, height, width, cells=rng.uniform(2, 8)))


_TEXTURES: tuple[Callable[[np.random.Generator, int, int], np.ndarray], ...] = (
    _sky,
    _foliage,
    _building,
    _shapes,
    _noise_texture,
)
_TEXTURE_WEIGHTS = (0.25, 0.25, 0.2, 0.15, 0.15)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A float32 RGB texture in [0, 1], sometimes two textures meeting at a soft skyline."""
    first, second = rng.choice(len(_TEXTURES), size=2, replace=False, p=_TEXTURE_WEIGHTS)
    image = _TEXTURES[first](rng, height, width)
    if rng.random() < 0.4:
        lower = _TEXTURES[second](rng, height, width)
        skyline = (
            rng.uniform(0.2, 0.8) * height
            + (_value_noise(rng, 1, width, 4)[0] - 0.5) * height * 0.4
        )
        rows = np.arange(height, dtype=np.float32)[:, None]
        image = _mix(image, lower, np.clip(rows - skyline[None, :], 0, 1))
    if rng.random() < 0.6:  # out of focus behind the sign
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 2.5) * max(height, width) / 130)
    return image


def _draw_behind_sign(image: np.ndarray, homography, sign_width: float, rng) -> None:
    """A post or mast arm holding the sign, and sometimes part of a neighbouring sign."""
    height, width = image.shape[:2]
    centre = cv2.perspectiveTransform(np.array([[[TEMPLATE_SIZE / 2] * 2]], np.float32), homography)
    cx, cy = centre[0, 0]
    metal = np.full(3, rng.uniform(0.35, 0.8), np.float32) * np.exp(rng.normal(0, 0.05, 3))
    thickness = max(2, round(sign_width * rng.uniform(0.05, 0.1)))
    support = rng.random()
    if support < 0.5:  # a post from the sign's centre down out of the crop
        ends = (round(cx), round(cy)), (round(cx), height + thickness)
    elif support < 0.7:  # a horizontal mast arm through the sign
        ends = (-thickness, round(cy)), (width + thickness, round(cy))
    if support < 0.7:
        cv2.line(image, *ends, metal.tolist(), thickness)
    if rng.random() < 0.2:
        _draw_neighbour(image, homography, sign_width, rng)


def _draw_neighbour(image: np.ndarray, homography, sign_width: float, rng) -> None:
    """Another sign on the same mount, beside, above or below this one, so that mostly only
    its edge shows in the crop (as in real crops). It is moved in the sign's own plane, so
    it shares the sign's perspective."""
    height, width = image.shape[:2]
    neighbour = sign_template(int(rng.integers(len(sign_classes("ctsrd")))))
    direction = _SIDES[rng.integers(len(_SIDES))]
    dx, dy = direction * TEMPLATE_SIZE * rng.uniform(1.03, 1.2)
    shift = np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]])
    premultiplied, alpha = _warp(neighbour, homography @ shift, width, height, sign_width)
    image[...] = image * (1 - alpha[..., None]) + premultiplied


_SIDES = np.array([(-1.0, 0.0), (1.0, 0.0), (0.0, -1.0), (0.0, 1.0)])


# --- occlusion, light and camera ------------------------------------------------------------


def _occlude(image: np.ndarray, mask: np.ndarray, sign_width: float, rng):
    """Maybe put a branch, a pole or a box in front of the sign; cut it out of the mask.

    An occluder that would hide too much of the sign, or shrink its box below the
    coverage the crops promise, is left out.
    """
    if rng.random() >= 0.3:
        return image, mask
    height, width = mask.shape
    cover = np.zeros((height, width), np.uint8)
    paint = np.zeros((height, width, 3), np.float32)
    x1, y1, x2, y2 = mask_box(mask)
    kind = rng.integers(3)
    if kind == 0:  # a leafy branch reaching in from one side
        green = _jitter(rng, (0.15, 0.35, 0.1), 0.06)
        anchor = np.array([rng.choice([x1, x2]), rng.uniform(y1, y2)])
        for _ in range(int(rng.integers(6, 16))):
            centre = tuple(int(v) for v in anchor + rng.normal(0, sign_width * 0.12, 2))
            axes = tuple(int(v) for v in np.maximum(1, sign_width * rng.uniform(0.04, 0.12, 2)))
            leaf = (centre, axes, rng.uniform(0, 180), 0, 360)
            cv2.ellipse(cover, *leaf, 255, -1, cv2.LINE_AA)
            cv2.ellipse(paint, *leaf, (green * rng.uniform(0.6, 1.4)).tolist(), -1, cv2.LINE_AA)
    elif kind == 1:  # a pole, wire or branch crossing part of the sign
        start = np.array([rng.uniform(0, width), rng.choice([-5.0, height + 5.0])])
        through = np.array([rng.uniform(x1, x2), rng.uniform(y1, y2)])
        end = start + (through - start) * rng.uniform(1.0, 2.5)
        thickness = max(1, round(sign_width * rng.uniform(0.04, 0.14)))
        ends = (tuple(start.astype(int)), tuple(end.astype(int)))
        cv2.line(cover, *ends, 255, thickness, cv2.LINE_AA)
        paint[...] = _jitter(
            rng, rng.choice([(0.3, 0.25, 0.2), (0.5, 0.5, 0.5), (0.15, 0.15, 0.15)])
        )
    else:  # something boxy (a vehicle, another plate) rising from the bottom edge
        left = rng.uniform(-0.3, 0.8) * width
        right = left + rng.uniform(0.3, 0.9) * width
        top = rng.uniform(y1 + 0.6 * (y2 - y1), height)
        cv2.rectangle(cover, (int(left), int(top)), (int(right), height), 255, -1)
        paint[...] = _muted(rng)
    occluder = cover.astype(np.float32) / 255
    visible = mask & (occluder < 0.5)
    if visible.sum() < _MIN_VISIBLE * mask.sum():
        return image, mask
    vx1, vy1, vx2, vy2 = mask_box(visible)
    if (vx2 - vx1) * (vy2 - vy1) < _MIN_COVERAGE_OCCLUDED * width * height:
        return image, mask
    return _mix(image, paint, occluder), visible


def _lighting(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure, contrast, colour cast, gamma and a soft light gradient across the crop."""
    height, width = image.shape[:2]
    mean = image.mean(axis=(0, 1))
    image = (image - mean) * rng.uniform(0.65, 1.25) + mean
    image = image * np.exp(rng.normal(0, 0.25)) * np.exp(rng.normal(0, 0.06, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    xs = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :]
    ys = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None]
    image = image * (1 + rng.uniform(0, 0.5) * (np.cos(angle) * xs + np.sin(angle) * ys))[..., None]
    return np.clip(image, 0, 1) ** np.exp(rng.normal(0, 0.15))


def _camera(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lens and motion blur, sensor noise and JPEG loss; returns RGB uint8."""
    scale = max(image.shape[:2]) / 130
    if rng.random() < 0.6:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.2) * scale)
    if rng.random() < 0.15:
        length = max(2, round(rng.uniform(2, 6) * scale))
        kernel = np.zeros((length, length), np.float32)
        cv2.line(kernel, (0, length // 2), (length - 1, length // 2), 1.0, 1)
        rotation = cv2.getRotationMatrix2D(
            ((length - 1) / 2, (length - 1) / 2), rng.uniform(0, 180), 1
        )
        kernel = cv2.warpAffine(kernel, rotation, (length, length))
        image = cv2.filter2D(image, -1, kernel / kernel.sum())
    image = image + rng.normal(0, rng.uniform(0, 0.03), image.shape).astype(np.float32)
    image = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        quality = int(rng.integers(35, 92))
        _, encoded = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        image = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(image)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    if not cv2.imwrite(str(path), pixels):
        raise OSError(f"could not write {path}")
