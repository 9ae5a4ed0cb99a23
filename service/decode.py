"""Uploaded bytes to the network's input, off the event loop and before queueing.

The format is decided by content (PIL's magic-byte sniffing over an allow-list), never by
file name or Content-Type. The pixel count is checked from the header, which is all that
`Image.open` reads, so a decompression bomb is refused before a pixel is decoded.
PIL's own bomb guard (Image.MAX_IMAGE_PIXELS, about 89 MP, an error past twice that) stays
in place as a backstop; the service's `max_pixels` is the stricter limit.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from data.images import to_rgb_array
from service.errors import (
    EmptyFile,
    ImageTooLarge,
    ImageTooSmall,
    InvalidImage,
    UnsupportedMedia,
)

# Never EPS (it runs Ghostscript) or the formats PIL recognises by weak signatures.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int
    min_side: int = 1


@dataclass
class PreparedImage:
    tensor: torch.Tensor  # [3, S, S], the network input
    size: tuple[int, int]  # (H, W) of the upright original: where masks and boxes go
    decode_ms: float


def decode_image(source: bytes | BinaryIO, limits: ImageLimits) -> np.ndarray:
    """Untrusted image bytes (or a binary file) as HxWx3 uint8 RGB, upright (EXIF applied);
    animated images give their first frame. Raises EmptyFile, UnsupportedMedia,
    ImageTooLarge, ImageTooSmall or InvalidImage."""
    stream = _as_stream(source)
    if _size_of(stream) == 0:
        raise EmptyFile("the uploaded file is empty")
    try:
        with Image.open(stream, formats=ACCEPTED_FORMATS) as image:
            width, height = image.size
            if width * height > limits.max_pixels:
                raise ImageTooLarge(
                    f"image is {width}x{height} = {width * height} pixels; "
                    f"the limit is {limits.max_pixels}"
                )
            if min(width, height) < limits.min_side:
                raise ImageTooSmall(
                    f"image is {width}x{height}; both sides must be at least "
                    f"{limits.min_side} pixels"
                )
            image.load()
            return to_rgb_array(image)
    except UnidentifiedImageError:
        raise UnsupportedMedia(
            f"not an image in a supported format ({', '.join(ACCEPTED_FORMATS)})"
        ) from None
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(str(error)) from None
    except (ImageTooLarge, ImageTooSmall):
        raise
    except Exception as error:
        # PIL's decoders report damaged input with many exception types (OSError,
        # SyntaxError, ValueError, struct.error, IndexError, ...); all of them mean the same
        # thing here: this file is not a readable image.
        raise InvalidImage(f"the image is truncated or corrupt ({error})") from None


def prepare_image(
    source: bytes | BinaryIO,
    limits: ImageLimits,
    preprocess: Callable[[np.ndarray], torch.Tensor],
) -> PreparedImage:
    """decode_image and the network's preprocessing, timed together as `decode`."""
    started = time.perf_counter()
    rgb = decode_image(source, limits)
    tensor = preprocess(rgb)
    height, width = rgb.shape[:2]
    return PreparedImage(tensor, (height, width), (time.perf_counter() - started) * 1000)


def _as_stream(source: bytes | BinaryIO) -> BinaryIO:
    if isinstance(source, bytes | bytearray | memoryview):
        return io.BytesIO(source)
    source.seek(0)
    return source


def _size_of(stream: BinaryIO) -> int:
    size = stream.seek(0, 2)
    stream.seek(0)
    return size
