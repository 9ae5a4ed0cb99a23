"""Reader for TT100K sign crops: real signs cut out of Chinese street panoramas.

Layout: a folder of class-code subfolders (`pl40/`, `i5/`, ..., `negative/`), or a folder
holding `train/` and/or `test/` of them, with `classes.csv` (`code,name,ctsrd_class_id`)
beside them. A crop's file name is `<panorama id>_<instance>.png` (`negative/` holds
`<panorama id>.jpg` patches).

Labels are CTSRD's: a code mapped in `classes.csv` gives its CTSRD class, any other code
gives "unknown sign" (a sign the 58 classes do not cover), `negative` gives "no sign". Codes
match whatever their case (a folder `I5` is code `i5`): TT100K writes them in lower case and
none differs from another by case alone, so a capital is a typing habit, not another sign.
A code that `classes.csv` maps twice to different classes is a DataError naming both lines.
Records have no box and no mask: the sign fills the crop, so they teach and score
classification only. Every file of a format data.images reads is a crop; every crop is
decoded once here (a bad file is a DataError naming it).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from data.classes import no_sign_id, unknown_sign_id
from data.images import image_suffixes
from data.records import DataError, SignRecord
from data.validate import collect, inspect_image

CLASSES_FILE = "classes.csv"
NEGATIVE_CODE = "negative"
SPLIT_FOLDERS = ("train", "test")
COLUMNS = ("code", "ctsrd_class_id")
DATASET = "ctsrd"  # the label space TT100K codes are mapped into


@dataclass(frozen=True, slots=True)
class CodeFolder:
    code: str
    folder: Path
    split: str | None


def find_layout(root: Path) -> list[CodeFolder]:
    """The class-code folders under `root` (empty when it is not a TT100K crops folder)."""
    if not (root / CLASSES_FILE).is_file():
        return []
    split_roots = [(split, root / split) for split in SPLIT_FOLDERS if (root / split).is_dir()]
    if not split_roots:
        split_roots = [(None, root)]
    return [
        CodeFolder(folder.name, folder, split)
        for split, split_root in split_roots
        for folder in sorted(split_root.iterdir())
        if folder.is_dir()
    ]


def read_code_map(classes_file: Path, num_classes: int) -> dict[str, int]:
    """TT100K code (lower case) -> CTSRD class id, for the codes `classes.csv` maps (others are
    unmapped). A code on two lines that say different things is a DataError naming both."""
    try:
        text = classes_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(classes_file, None, f"cannot read the class table ({error})") from None
    rows = csv.DictReader(text.splitlines())
    missing = [name for name in COLUMNS if name not in (rows.fieldnames or [])]
    if missing:
        raise DataError(
            classes_file, 1, f"header lacks {', '.join(missing)} (needs code,name,ctsrd_class_id)"
        )
    mapping = {}
    first_said: dict[str, tuple[int, int | None]] = {}  # code -> (line, class id or None)
    for line, row in enumerate(rows, start=2):
        written = (row["code"] or "").strip()
        code = written.lower()
        class_id = _class_id(row["ctsrd_class_id"], num_classes, classes_file, line)
        first_line, first_class = first_said.setdefault(code, (line, class_id))
        if first_class != class_id:
            fault = (
                f"code {written!r} again, mapped to {_shown_class(class_id)}, but "
                f"line {first_line} maps it to {_shown_class(first_class)} (codes match "
                "whatever their case)"
            )
            raise DataError(classes_file, line, fault)
        if class_id is not None:
            mapping[code] = class_id
    return mapping


def _class_id(text: str | None, num_classes: int, classes_file: Path, line: int) -> int | None:
    value = (text or "").strip()
    if not value:
        return None
    try:
        class_id = int(value)
    except ValueError:
        fault = f"ctsrd_class_id is not an integer: {value!r}"
        raise DataError(classes_file, line, fault) from None
    if not 0 <= class_id < num_classes:
        fault = f"class {class_id} out of range: CTSRD has classes 0-{num_classes - 1}"
        raise DataError(classes_file, line, fault)
    return class_id


def _shown_class(class_id: int | None) -> str:
    return "no CTSRD class" if class_id is None else f"CTSRD class {class_id}"


def label_of(code: str, code_map: dict[str, int]) -> int:
    if code.lower() == NEGATIVE_CODE:
        return no_sign_id(DATASET)
    return code_map.get(code.lower(), unknown_sign_id(DATASET))


def read_tt100k(
    root: Path, folders: list[CodeFolder], *, num_classes: int, on_error: str
) -> tuple[list[SignRecord], list[DataError]]:
    code_map = read_code_map(root / CLASSES_FILE, num_classes)
    crops = [
        (folder, path)
        for folder in folders
        for path in sorted(folder.folder.iterdir())
        if path.suffix.lower() in image_suffixes()
    ]

    def build(crop: tuple[CodeFolder, Path]) -> SignRecord:
        folder, path = crop
        width, height, sha1 = inspect_image(path, source_file=path, line=None)
        panorama = path.stem.split("_", 1)[0]
        return SignRecord(
            image_path=path,
            class_id=label_of(folder.code, code_map),
            box=None,
            width=width,
            height=height,
            split=folder.split,
            source=f"{path} (code {folder.code})",
            sha1=sha1,
            origin="tt100k",
            group=f"tt100k:{panorama}",
            sequence=("tt100k", int(panorama)) if panorama.isdigit() else None,
            has_sign=folder.code.lower() != NEGATIVE_CODE,
        )

    return collect(crops, build, on_error)
