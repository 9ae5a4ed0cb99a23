"""Checks shared by every reader: annotation text, fields, class ids, boxes and image files.

Every fault becomes a `DataError` that names the annotation file and line, so the user can
go straight to the line that needs fixing.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from PIL import Image, UnidentifiedImageError

from data.images import read_regular_file, shown, turned_by_exif
from data.records import Box, DataError, SignRecord

ON_ERROR_CHOICES = ("raise", "skip")

Item = TypeVar("Item")


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, not {on_error!r}")


def annotation_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line, CRLF or LF, numbered from 1. A file that
    is not a regular file, or holds no line at all, is a DataError."""
    try:
        raw = read_regular_file(path)
    except (OSError, ValueError) as error:
        raise DataError(shown(path), None, f"cannot read the annotations ({error})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise DataError(path, line, f"not UTF-8 text (byte {error.start})") from None
    # split("\n") rather than splitlines(): the latter also breaks at form feeds and the like.
    empty = True
    for number, text_line in enumerate(text.split("\n"), start=1):
        stripped = text_line.strip()
        if stripped:
            empty = False
            yield number, stripped
    if empty:
        raise DataError(path, None, "no annotation lines: the file is empty")


def split_fields(
    text: str, names: Sequence[str], *, source_file: Path, line: int, separator: str = ";"
) -> list[str]:
    """The `len(names)` fields of a line; one trailing separator (the TSRD habit) is allowed."""
    fields = [field.strip() for field in text.split(separator)]
    if fields and fields[-1] == "":
        fields.pop()
    layout = separator.join(names)
    if len(fields) < len(names):
        fault = f"too few fields: expected {len(names)} ({layout}), got {len(fields)}"
        raise DataError(source_file, line, fault)
    if len(fields) > len(names):
        fault = f"too many fields: expected {len(names)} ({layout}), got {len(fields)}"
        raise DataError(source_file, line, fault)
    return fields


def parse_int(value: str, name: str, *, source_file: Path, line: int) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataError(source_file, line, f"{name} is not an integer: {value!r}") from None


def check_class(class_id: int, num_classes: int, *, source_file: Path, line: int) -> None:
    if not 0 <= class_id < num_classes:
        fault = f"class {class_id} out of range: this dataset has classes 0-{num_classes - 1}"
        raise DataError(source_file, line, fault)


def check_box(box: Box, width: int, height: int, *, source_file: Path, line: int) -> None:
    x1, y1, x2, y2 = box
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        fault = (
            f"box ({x1}, {y1}, {x2}, {y2}) is empty or outside the {width}x{height} image: "
            f"need 0 <= x1 < x2 <= {width} and 0 <= y1 < y2 <= {height}"
        )
        raise DataError(source_file, line, fault)


def inspect_image(
    path: Path,
    *,
    source_file: Path,
    line: int | None,
    declared_size: tuple[int, int] | None = None,
) -> tuple[int, int, str]:
    """Read the file's bytes once: return (width, height, sha1 hex) after fully decoding it
    with PIL (so truncation is caught). The size is the stored one, EXIF orientation not
    applied, as data.images.read_rgb reads dataset images. Raise DataError(file, line, fault)
    naming the annotation file and line for: missing image file, not a regular file (a FIFO,
    a device, a directory: never read), over MAX_FILE_BYTES, not an image, truncated image,
    and a size other than `declared_size` (width, height) where one is given."""
    try:
        content = read_regular_file(path)
    except FileNotFoundError:
        raise DataError(source_file, line, f"image file missing: {shown(path)}") from None
    except (OSError, ValueError) as error:
        fault = f"image file unreadable: {shown(path)} ({error})"
        raise DataError(source_file, line, fault) from None
    try:
        # verify() checks the container (chunk CRCs, the end marker); load() decodes every
        # pixel, which is what catches a file cut short inside its image data.
        with Image.open(io.BytesIO(content)) as image:
            image.verify()
        with Image.open(io.BytesIO(content)) as image:
            image.load()
            width, height = image.size
            turned = turned_by_exif(image) if declared_size not in (None, image.size) else ""
    except UnidentifiedImageError:
        raise DataError(source_file, line, f"not an image: {path}") from None
    except Image.DecompressionBombError as error:
        raise DataError(source_file, line, f"image too large to decode: {path} ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        # PIL reports truncated and corrupt streams as OSError, broken PNG chunks as SyntaxError.
        raise DataError(
            source_file, line, f"truncated or corrupt image: {path} ({error})"
        ) from None
    if declared_size is not None and declared_size != (width, height):
        fault = (
            f"annotation says the image is {declared_size[0]}x{declared_size[1]} "
            f"but {path} is {width}x{height}{turned}"
        )
        raise DataError(source_file, line, fault)
    return width, height, hashlib.sha1(content).hexdigest()


def mask_size(path: Path, *, source_file: Path, line: int) -> tuple[int, int]:
    """Size of a mask image from its header; the mask is decoded later, when it is used."""
    try:
        content = read_regular_file(path)
    except FileNotFoundError:
        raise DataError(source_file, line, f"mask file missing: {shown(path)}") from None
    except (OSError, ValueError) as error:
        fault = f"mask file unreadable: {shown(path)} ({error})"
        raise DataError(source_file, line, fault) from None
    try:
        with Image.open(io.BytesIO(content)) as mask:
            return mask.size
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(source_file, line, f"mask is not an image: {path} ({error})") from None


def checked_record(
    image_path: Path,
    class_id: int,
    box: Box,
    declared_size: tuple[int, int],
    num_classes: int,
    *,
    source_file: Path,
    line: int,
    mask_path: Path | None = None,
    split: str | None = None,
) -> SignRecord:
    """A SignRecord after every check on it passed; cheap checks run before the image is read."""
    where = {"source_file": source_file, "line": line}
    width, height = declared_size
    check_class(class_id, num_classes, **where)
    check_box(box, width, height, **where)
    _, _, sha1 = inspect_image(image_path, **where, declared_size=declared_size)
    if mask_path is not None:
        mask_width, mask_height = mask_size(mask_path, **where)
        if (mask_width, mask_height) != (width, height):
            fault = (
                f"mask {mask_path} is {mask_width}x{mask_height} but the image is {width}x{height}"
            )
            raise DataError(source_file, line, fault)
    return SignRecord(
        image_path=image_path,
        class_id=class_id,
        box=box,
        width=width,
        height=height,
        mask_path=mask_path,
        split=split,
        source=f"{source_file}:{line}",
        sha1=sha1,
    )


def collect(
    items: Iterable[Item], build: Callable[[Item], SignRecord], on_error: str
) -> tuple[list[SignRecord], list[DataError]]:
    """Build a record from each item. With on_error="raise" the first DataError propagates;
    with "skip" the failing item is left out and its error kept, so nothing goes unreported."""
    check_on_error(on_error)
    records: list[SignRecord] = []
    skipped: list[DataError] = []
    for item in items:
        try:
            records.append(build(item))
        except DataError as error:
            if on_error == "raise":
                raise
            skipped.append(error)
    return records, skipped
