"""Image and ground-truth mask decoding: every image enters the project as HxWx3 uint8 RGB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from data.records import DataError, SignRecord

# Transparent pixels are shown over white, as an image viewer or a web page would show them;
# the colour channels under alpha 0 are often left-over garbage.
_TRANSPARENT_BACKGROUND = (255, 255, 255, 255)
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def read_rgb(path: Path) -> np.ndarray:
    """The image at `path` as HxWx3 uint8 RGB, turned upright by its EXIF orientation.

    Grayscale, palette, alpha and 16-bit files are converted (see `to_rgb_array`). Raises
    DataError naming the file when it is missing, not an image, or cut short.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb_array(image)
    except FileNotFoundError:
        raise DataError(path, None, "image file missing") from None
    except UnidentifiedImageError:
        raise DataError(path, None, "not an image") from None
    except Image.DecompressionBombError as error:
        raise DataError(path, None, f"image too large to decode ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(path, None, f"truncated or corrupt image ({error})") from None


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """A decoded PIL image as HxWx3 uint8 RGB, upright by its EXIF orientation.

    16-bit grayscale is scaled to 8 bits (PIL's own conversion would clip it at 255), and
    anything with transparency is composited over white. 16-bit colour PNGs already arrive
    as 8-bit RGB from PIL.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(image).astype(np.float32)
        gray = np.rint(np.clip(wide, 0, 65535) / 257.0).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.has_transparency_data:
        background = Image.new("RGBA", image.size, _TRANSPARENT_BACKGROUND)
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def ground_truth_mask(record: SignRecord) -> np.ndarray:
    """The record's sign mask as HxW uint8 in {0, 1}: its mask file where it has one,
    else its box filled (box ends are exclusive, as in `check_box`: x1 <= x < x2)."""
    if record.mask_path is None:
        mask = np.zeros((record.height, record.width), dtype=np.uint8)
        x1, y1, x2, y2 = record.box
        mask[y1:y2, x1:x2] = 1
        return mask
    return _read_mask(record.mask_path)


def _read_mask(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            if image.mode == "P":
                # A palette mask stores labels as indices: every non-background index is sign.
                return (np.asarray(image) > 0).astype(np.uint8)
            gray = np.asarray(image.convert("L"))
    except FileNotFoundError:
        raise DataError(path, None, "mask file missing") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(path, None, f"mask is not a readable image ({error})") from None
    # Gray masks come as 0/1 label images or as 0/255 pictures; threshold each at its middle.
    sign = gray > 0 if gray.max() <= 1 else gray >= 128
    return sign.astype(np.uint8)
