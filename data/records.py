"""The one record every dataset reader returns, and the one error every reader raises."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

Box = tuple[int, int, int, int]  # (x1, y1, x2, y2) in image pixels, x2 > x1, y2 > y1


def box_area(box: Box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def box_overlap(a: Box, b: Box) -> int:
    """Pixels the two boxes share."""
    return box_area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


@dataclass(frozen=True, slots=True)
class SignRecord:
    """One annotated image: a sign of a known class, a sign of no known class, or no sign.

    `class_id` is a class of the dataset's label space, or one of the two open-set labels
    that follow it (data.classes.open_set_ids: "unknown sign", "no sign").
    `box` is None where the dataset has none: a sign crop that the sign fills (TT100K), or a
    patch with no sign. `mask_path` is set only where the dataset has an exact mask (the
    synthetic set); elsewhere the ground-truth mask is the filled box, and a record with
    neither has a known mask only when it holds no sign (`has_sign` False: it is empty).
    `split` is the dataset's own split ("train"/"test") where it has one. `source`
    ("file:line", or the file) points back at the annotation, so later errors can name it.
    `sha1` is the hash of the image file's bytes, which is what duplicate and leakage checks
    compare. `origin` names the collection the record comes from ("tsrd", "tt100k",
    "synthetic", "gtsrb"), for per-collection metrics and near-duplicate rules. `group` is a
    key the reader knows to bind records that show one scene (TT100K: the panorama id);
    `sequence` (series, number) orders the shots of one collection (TSRD file numbers,
    TT100K panorama ids), where neighbours are often the same physical sign.
    """

    image_path: Path
    class_id: int
    box: Box | None
    width: int
    height: int
    mask_path: Path | None = None
    split: str | None = None
    source: str = ""
    sha1: str = ""
    origin: str = ""
    group: str = ""
    sequence: tuple[str, int] | None = None
    has_sign: bool = True

    @property
    def mask_known(self) -> bool:
        """Whether the sign mask is known: from a mask file, from the box, or empty because
        the image shows no sign. A sign crop without a box has no known mask."""
        return self.box is not None or self.mask_path is not None or not self.has_sign


class DataError(ValueError):
    """A fault in the data, located at a file and (where there is one) a line."""

    def __init__(self, file: str | Path, line: int | None = None, fault: str | None = None):
        if fault is None:
            # Raised again in the main process by a DataLoader, which passes the worker's whole
            # traceback as the one argument (and would raise a RuntimeError instead if this
            # class could not be built from it): keep the error's own message, its last line.
            # Where it came from is then only in that message.
            self.file, self.line, self.fault = "", None, _last_message(str(file))
            super().__init__(self.fault)
            return
        self.file = str(file)
        self.line = line
        self.fault = fault
        where = f"{self.file}:{line}" if line is not None else self.file
        super().__init__(f"{where}: {fault}")


def _last_message(traceback_text: str) -> str:
    """The message of the DataError a worker's formatted traceback ends with."""
    last = traceback_text.rstrip().rsplit("\n", 1)[-1]
    _, found, message = last.partition("DataError: ")  # "data.records.DataError: <message>"
    return message if found else last
