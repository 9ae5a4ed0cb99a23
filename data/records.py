"""The one record every dataset reader returns, and the one error every reader raises."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

Box = tuple[int, int, int, int]  # (x1, y1, x2, y2) in image pixels, x2 > x1, y2 > y1


@dataclass(frozen=True, slots=True)
class SignRecord:
    """One annotated sign image.

    `mask_path` is set only where the dataset has an exact mask (the synthetic set);
    elsewhere the ground-truth mask is the filled box. `split` is the dataset's own split
    ("train"/"test") where it has one. `source` ("file:line") points back at the annotation
    line, so later errors can name it. `sha1` is the hash of the image file's bytes, which is
    what duplicate and leakage checks compare.
    """

    image_path: Path
    class_id: int
    box: Box
    width: int
    height: int
    mask_path: Path | None = None
    split: str | None = None
    source: str = ""
    sha1: str = ""


class DataError(ValueError):
    """A fault in the data, located at a file and (where there is one) a line."""

    def __init__(self, file: str | Path, line: int | None, fault: str):
        self.file = str(file)
        self.line = line
        self.fault = fault
        where = f"{self.file}:{line}" if line is not None else self.file
        super().__init__(f"{where}: {fault}")
