"""Image and ground-truth mask decoding: every image enters the project as HxWx3 uint8 RGB."""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from data.records import DataError, SignRecord

if TYPE_CHECKING:
    import av

# Image, mask and annotation files are read only when they are regular files of at most this
# size: a FIFO would block the reader for ever, and a link to /dev/zero would feed it without end.
MAX_FILE_BYTES = 256 * 1024 * 1024
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)

# The command-line tools refuse a user's photo or video frame over this many pixels (100 MP):
# a medium-format photo or an 8K frame (33 MP) is legitimate, and one of 144 MP held 3.4 GB
# while its mask was drawn at full size. The service's limit is its own (max_pixels).
MAX_USER_PIXELS = 100_000_000

# Transparent pixels are shown over white, as an image viewer or a web page would show them;
# the colour channels under alpha 0 are often left-over garbage.
_TRANSPARENT_BACKGROUND = (255, 255, 255, 255)
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


@contextmanager
def regular_file(path: Path | str, max_bytes: int = MAX_FILE_BYTES) -> Iterator[BinaryIO]:
    """The regular file at `path` (links followed), open for reading, for a reader that needs
    only part of it (an image header). A directory, FIFO, device or socket, and a file over
    `max_bytes`, raise OSError saying so, without blocking; a name holding a NUL byte raises
    ValueError."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            kind = next((name for is_kind, name in _FILE_KINDS if is_kind(status.st_mode)), None)
            raise OSError(f"not a regular file: it is {kind or 'a special file'}")
        if status.st_size > max_bytes:
            raise OSError(f"{status.st_size} bytes, over the limit of {max_bytes}")
        file = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    with file:
        yield file


def read_regular_file(path: Path | str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file at `path` (links followed). A directory, FIFO, device or
    socket, and a file over `max_bytes`, raise OSError saying so, without blocking and
    without reading on; a name holding a NUL byte raises ValueError."""
    with regular_file(path, max_bytes) as file:
        content = file.read(max_bytes + 1)
    if len(content) > max_bytes:  # it grew while being read
        raise OSError(f"over the limit of {max_bytes} bytes")
    return content


@cache
def image_suffixes() -> frozenset[str]:
    """The file name suffixes (".png", ".webp", lower case) of every format PIL can open,
    hence `read_rgb`: what a reader that lists a folder takes for images."""
    return frozenset(
        suffix for suffix, name in Image.registered_extensions().items() if name in Image.OPEN
    )


def shown(path: Path | str) -> str:
    """A file name fit for a one-line message: as it is, or quoted and escaped when it holds
    control characters (a NUL byte, a newline)."""
    name = str(path)
    return name if name.isprintable() else repr(name)


def _file_bytes(path: Path, what: str) -> bytes:
    try:
        return read_regular_file(path)
    except FileNotFoundError:
        raise DataError(shown(path), None, f"{what} file missing") from None
    except (OSError, ValueError) as error:
        raise DataError(shown(path), None, f"{what} file unreadable ({error})") from None


def read_rgb(path: Path, *, upright: bool = False, max_pixels: int | None = None) -> np.ndarray:
    """The image at `path` as HxWx3 uint8 RGB, its pixels as stored in the file.

    Dataset images are read as stored, their EXIF orientation not applied: annotations
    (TSRD's width, height and box, COCO's width and height) describe the stored pixels, as
    most annotation tools do, and every validator checks the stored size. A user's photo,
    which no annotation describes, is read upright (`upright=True`), as the service reads it.

    Grayscale, palette, alpha, 16-bit and floating-point files are converted (see
    `to_rgb_array`). Raises DataError naming the file when it is missing, not a regular file,
    not an image, cut short, or (with `max_pixels`) larger than that, found from its header
    before a pixel is decoded.
    """
    content = _file_bytes(path, "image")
    try:
        with _own_pixel_limit(max_pixels), Image.open(io.BytesIO(content)) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise DataError(
                    path,
                    None,
                    f"image is {width}x{height} = {width * height} pixels; "
                    f"the limit is {max_pixels}",
                )
            image.load()
            return to_rgb_array(image) if upright else _rgb_array(image)
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(path, None, "not an image") from None
    except Image.DecompressionBombError as error:
        raise DataError(path, None, f"image too large to decode ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(path, None, f"truncated or corrupt image ({error})") from None


@contextmanager
def _own_pixel_limit(max_pixels: int | None) -> Iterator[None]:
    """With a limit of the caller's, PIL's warning past 89 MP is not shown: the limit asked
    for is the one that holds (and PIL's error past twice that stays)."""
    with warnings.catch_warnings():
        if max_pixels is not None:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


# EXIF orientation -> the transposition that shows the picture upright (as ImageOps does).
_ORIENTATION_TAG = 0x0112
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_QUARTER_TURNS = (5, 6, 7, 8)  # the orientations that swap width and height


def turned_by_exif(image: Image.Image) -> str:
    """For a message that the stored size is not the annotated one: a note that the file's
    EXIF orientation shows it turned (a photo annotated as a viewer shows it, not as stored),
    or "" when it does not."""
    if image.getexif().get(_ORIENTATION_TAG, 1) not in _QUARTER_TURNS:
        return ""
    width, height = image.size
    return (
        f" (its EXIF orientation shows it {height}x{width}, but dataset images are read as "
        "stored: annotate the stored pixels)"
    )


def load_rgb(image: Image.Image, min_side: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode an opened (not yet loaded) image as HxWx3 uint8 RGB, upright, and return it
    with the (H, W) of the upright picture at full size.

    With `min_side`, a large image is shrunk as it decodes, keeping both sides at least
    `min_side`: a JPEG decodes at 1/2, 1/4 or 1/8 scale (DCT scaling, draft mode), and any
    image is then box-reduced by an integer factor before the RGB conversion. A network with
    a small input loses nothing by it, and a 25-megapixel upload costs a few megabytes
    instead of hundreds.
    """
    width, height = image.size
    factor = min(width, height) // min_side if min_side else 1
    if factor < 2:
        image.load()
        rgb = to_rgb_array(image)
        return rgb, (rgb.shape[0], rgb.shape[1])
    image.draft(None, (width // factor, height // factor))
    image.load()
    orientation = image.getexif().get(_ORIENTATION_TAG, 1)
    factor = min(image.size) // min_side
    if factor > 1:
        image = _reducible(image).reduce(factor)
    if orientation in _UPRIGHT:
        image = image.transpose(_UPRIGHT[orientation])
    upright = (width, height) if orientation not in _QUARTER_TURNS else (height, width)
    return _rgb_array(image), (upright[1], upright[0])


def _reducible(image: Image.Image) -> Image.Image:
    """The image in a mode `Image.reduce` takes: transparency composited over white first
    (averaging the garbage colours under alpha 0 would tint the edges), palette and bilevel
    images as RGB, 16-bit grayscale as 32-bit."""
    if image.has_transparency_data:
        return _over_white(image).convert("RGB")
    if image.mode in ("1", "P"):
        return image.convert("RGB")
    if image.mode in _SIXTEEN_BIT_MODES:
        return image.convert("I")
    return image


def _over_white(image: Image.Image) -> Image.Image:
    background = Image.new("RGBA", image.size, _TRANSPARENT_BACKGROUND)
    return Image.alpha_composite(background, image.convert("RGBA"))


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """A decoded PIL image as HxWx3 uint8 RGB, upright by its EXIF orientation.

    16-bit grayscale is scaled to 8 bits (PIL's own conversion would clip it at 255), float
    grayscale from 0..1, and anything with transparency is composited over white. 16-bit
    colour PNGs already arrive as 8-bit RGB from PIL.
    """
    return _rgb_array(ImageOps.exif_transpose(image))


def _rgb_array(image: Image.Image) -> np.ndarray:
    if image.mode == "F":
        # Floating-point grayscale (a TIFF of IEEE samples): 0 is black and 1 white, as in
        # every float image format; PIL's own conversion would clip at 255, so nearly black.
        wide = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0)
        gray = np.rint(np.clip(wide, 0.0, 1.0) * 255.0).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(image).astype(np.float32)
        gray = np.rint(np.clip(wide, 0, 65535) / 257.0).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.has_transparency_data:
        image = _over_white(image)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def video_frame_quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns that set a decoded video frame upright: phones store a
    portrait video landscape, with a display rotation in its header (PyAV's `rotation`, in
    degrees counter-clockwise, -90 for such a video), as they store a photo with EXIF."""
    return round(frame.rotation / 90) % 4


def upright_video_frame(frame: av.VideoFrame, **conversion: Any) -> np.ndarray:
    """A decoded video frame as HxWx3 uint8 RGB, turned upright as players show it.
    `conversion` (width, height, interpolation) scales the frame as stored, before it turns."""
    rgb = frame.to_ndarray(format="rgb24", **conversion)
    turns = video_frame_quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def ground_truth_mask(record: SignRecord) -> np.ndarray:
    """The record's sign mask as HxW uint8 in {0, 1}: its mask file where it has one, else
    its box filled (box ends are exclusive, as in `check_box`: x1 <= x < x2), else empty
    (no sign; or a sign crop without a box, whose mask is unknown: `record.mask_known`)."""
    if record.mask_path is None:
        mask = np.zeros((record.height, record.width), dtype=np.uint8)
        if record.box is not None:
            x1, y1, x2, y2 = record.box
            mask[y1:y2, x1:x2] = 1
        return mask
    return _read_mask(record.mask_path)


def _read_mask(path: Path) -> np.ndarray:
    content = _file_bytes(path, "mask")
    try:
        with Image.open(io.BytesIO(content)) as image:
            image.load()  # as stored, like its image (read_rgb): EXIF orientation not applied
            if image.mode == "P":
                # A palette mask stores labels as indices: every non-background index is sign.
                return (np.asarray(image) > 0).astype(np.uint8)
            gray = np.asarray(image.convert("L"))
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(path, None, f"mask is not a readable image ({error})") from None
    # Gray masks come as 0/1 label images or as 0/255 pictures; threshold each at its middle.
    sign = gray > 0 if gray.max() <= 1 else gray >= 128
    return sign.astype(np.uint8)
