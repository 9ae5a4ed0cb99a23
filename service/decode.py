"""Uploaded bytes to the network's input, off the event loop and before queueing.

The format is decided by content (PIL's magic-byte sniffing over an allow-list), never by
file name or Content-Type. The pixel count is checked from the header, which is all that
`Image.open` reads, so a decompression bomb is refused before a pixel is decoded; a JPEG too
short to hold the pixels it declares is refused there too, as is one of more than
MAX_JPEG_SCANS scans (libjpeg runs every scan over the whole image, however few bytes it
takes), and a PPM header must end early (PIL reads one byte at a time, so a 19 MB comment
would cost seconds of CPU).
PIL's own bomb guard (Image.MAX_IMAGE_PIXELS, about 89 MP, an error past twice that) stays
in place as a backstop; the service's `max_pixels` is the stricter limit.

A large image is shrunk as it decodes (`shrink_to`: JPEG draft mode, then an integer box
reduction; see data.images.load_rgb): the network's input is a few dozen pixels wide, so a
25-megapixel upload needs a few megabytes of decoded pixels instead of hundreds. Masks and
boxes still come back in the original's pixels: `PreparedImage.size` is the full size.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from data.images import load_rgb
from service.errors import (
    EmptyFile,
    ImageTooLarge,
    ImageTooSmall,
    InvalidImage,
    ServiceError,
    UnsupportedMedia,
)

# Never EPS (it runs Ghostscript) or the formats PIL recognises by weak signatures.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")
# A PPM/PGM/PBM header (magic, width, height, maximum value, comments between them) must end
# within this many bytes.
PPM_HEADER_LIMIT = 4096
# A JPEG may hold at most this many scans. Encoders write one per component (baseline) or a
# dozen or so (progressive), but a progressive scan that marks every block empty takes a few
# dozen bytes while libjpeg still walks every block of the image for it: 10 000 such scans of
# a 5000x5000 frame fit in 470 KB and took 17 s of CPU to decode. libtiff refuses a JPEG
# strip of more than 100 scans for the same reason.
MAX_JPEG_SCANS = 100


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int
    min_side: int = 1


@dataclass
class DecodedImage:
    rgb: np.ndarray  # HxWx3 uint8, upright; shrunk when shrink_to asked for it
    size: tuple[int, int]  # (H, W) of the upright original


@dataclass
class PreparedImage:
    tensor: torch.Tensor  # [3, S, S], the network input
    size: tuple[int, int]  # (H, W) of the upright original: where masks and boxes go
    decode_ms: float
    # The decoded pixels (shrunk for a large image), kept until the sign is cut out of them
    # to be read (model/reading.py); None where nothing will be read.
    rgb: np.ndarray | None = None


def image_pixels(source: bytes | BinaryIO, limits: ImageLimits) -> int:
    """Width x height of an untrusted image, from its header alone, after every check that
    needs no decoding (the errors of `decode_image`). What a pixel budget reserves."""
    with _opened(source, limits) as image:
        width, height = image.size
    return width * height


def decode_image(
    source: bytes | BinaryIO, limits: ImageLimits, shrink_to: int | None = None
) -> DecodedImage:
    """Untrusted image bytes (or a binary file) as RGB, upright (EXIF applied); animated
    images give their first frame. With `shrink_to`, a large image decodes shrunk, both sides
    kept at least `shrink_to`. Raises EmptyFile, UnsupportedMedia, ImageTooLarge,
    ImageTooSmall or InvalidImage."""
    with _opened(source, limits) as image:
        rgb, size = load_rgb(image, shrink_to)
    return DecodedImage(rgb, size)


def prepare_image(
    source: bytes | BinaryIO,
    limits: ImageLimits,
    preprocess: Callable[[np.ndarray], torch.Tensor],
    shrink_to: int | None = None,
) -> PreparedImage:
    """decode_image and the network's preprocessing, timed together as `decode`."""
    started = time.perf_counter()
    decoded = decode_image(source, limits, shrink_to)
    tensor = preprocess(decoded.rgb)
    return PreparedImage(tensor, decoded.size, (time.perf_counter() - started) * 1000)


@contextmanager
def _opened(source: bytes | BinaryIO, limits: ImageLimits) -> Iterator[Image.Image]:
    """The image opened (header read, nothing decoded) and checked; any failure inside the
    block, decoding included, comes out as the service's error for it."""
    stream = _as_stream(source)
    size = _size_of(stream)
    if size == 0:
        raise EmptyFile("the uploaded file is empty")
    _check_ppm_header(stream.read(PPM_HEADER_LIMIT))
    stream.seek(0)
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
            # MPO: a JPEG with more pictures after it (as stereo and phone cameras write);
            # PIL opens it under a name of its own.
            if image.format in ("JPEG", "MPO"):
                _check_jpeg_length(stream, size, width, height)
                _check_jpeg_scans(stream)
                stream.seek(0)
            yield image
    except UnidentifiedImageError:
        raise UnsupportedMedia(
            f"not an image in a supported format ({', '.join(ACCEPTED_FORMATS)})"
        ) from None
    except Image.DecompressionBombError:
        # PIL's backstop fires before the size is known here; the client is told the
        # service's own limit, not PIL's.
        raise ImageTooLarge(
            f"image declares more than {2 * Image.MAX_IMAGE_PIXELS} pixels; "
            f"the limit is {limits.max_pixels}"
        ) from None
    except ServiceError:
        raise
    except Exception as error:
        # PIL's decoders report damaged input with many exception types (OSError,
        # SyntaxError, ValueError, struct.error, IndexError, ...); all of them mean the same
        # thing here: this file is not a readable image.
        raise InvalidImage(f"the image is truncated or corrupt ({error})") from None


def _check_ppm_header(head: bytes) -> None:
    """Refuse a PPM-family file (PIL accepts `P` and one of 0-6, f, y) whose header does not
    end within PPM_HEADER_LIMIT bytes: PIL would read it one byte per call."""
    if len(head) < 2 or head[0] != ord("P") or head[1] not in b"0123456fy":
        return
    needed = 3 if head[1:2] in (b"1", b"4") else 4  # magic, width, height[, maximum]
    tokens, in_token, index = 0, False, 0
    while index < len(head):
        byte = head[index : index + 1]
        if byte == b"#":
            ends = [end for end in (head.find(b"\n", index), head.find(b"\r", index)) if end >= 0]
            if not ends:
                break
            index = min(ends) + 1
            continue
        if byte.isspace():
            if in_token:
                tokens += 1
                if tokens == needed:
                    return
            in_token = False
        else:
            in_token = True
        index += 1
    raise InvalidImage(
        f"the PPM header does not end within its first {PPM_HEADER_LIMIT} bytes "
        "(cut short, or padded with comments)"
    )


# Start-of-frame markers of Huffman-coded JPEGs (baseline, extended, progressive, lossless,
# and their differential forms) and of arithmetic-coded ones.
_HUFFMAN_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7})
_ARITHMETIC_FRAMES = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _check_jpeg_length(stream: BinaryIO, size: int, width: int, height: int) -> None:
    """A Huffman-coded JPEG spends at least one bit on every 8x8 block it declares (each
    block's DC code is at least one bit), so a file with fewer bits than blocks is cut short:
    libjpeg would decode it without complaint, inventing grey for the missing rows."""
    blocks = -(-width // 8) * -(-height // 8)
    if size * 8 >= blocks or _jpeg_frame_marker(stream) not in _HUFFMAN_FRAMES:
        return
    raise InvalidImage(
        f"the JPEG is truncated: {size} bytes cannot hold the {width}x{height} pixels it declares"
    )


def _check_jpeg_scans(stream: BinaryIO) -> None:
    """Refuse a JPEG of more than MAX_JPEG_SCANS scans."""
    stream.seek(0)
    if jpeg_scans(iter(lambda: stream.read(1 << 20), b"")) > MAX_JPEG_SCANS:
        raise InvalidImage(
            f"the JPEG holds more than {MAX_JPEG_SCANS} scans (encoders write a few dozen at "
            "most): refused, as decoding each one walks the whole image"
        )


def jpeg_scans(chunks: Iterable[bytes]) -> int:
    """The scans of a JPEG given as consecutive chunks of its bytes, counted until there are
    more than MAX_JPEG_SCANS. Each scan starts with the marker FF DA, and entropy-coded data
    never holds it (an FF there is followed by 00 or a marker), so counting the pair counts
    the scans (and those of an embedded thumbnail)."""
    scans, last = 0, b""
    for chunk in chunks:
        scans += (last + chunk[:1]).count(b"\xff\xda") + chunk.count(b"\xff\xda")
        last = chunk[-1:]
        if scans > MAX_JPEG_SCANS:
            break
    return scans


def _jpeg_frame_marker(stream: BinaryIO) -> int | None:
    """The start-of-frame marker (0xC0...0xCF) of a JPEG, walking its segments from the
    start; None when the walk does not reach one."""
    stream.seek(2)  # past SOI
    for _ in range(1024):
        segment = stream.read(4)
        if len(segment) < 4 or segment[0] != 0xFF:
            return None
        marker = segment[1]
        if marker in _HUFFMAN_FRAMES or marker in _ARITHMETIC_FRAMES:
            return marker
        if marker == 0xDA:  # start of scan before any frame
            return None
        stream.seek(int.from_bytes(segment[2:4], "big") - 2, io.SEEK_CUR)
    return None


def _as_stream(source: bytes | BinaryIO) -> BinaryIO:
    if isinstance(source, bytes | bytearray | memoryview):
        return io.BytesIO(source)
    source.seek(0)
    return source


def _size_of(stream: BinaryIO) -> int:
    size = stream.seek(0, 2)
    stream.seek(0)
    return size
