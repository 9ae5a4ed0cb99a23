"""Whole road frames with every sign annotated, in COCO format: a reader and mask codecs.

A frames folder holds `annotations.json` and `images/` (the DFG frames, and the scenes that
`greedysign data scenes` writes, share this layout). `read_coco_frames(root)` returns one
`FrameRecord` per image, each with its `FrameInstance`s:

- `box` (x1, y1, x2, y2) in image pixels, right and bottom edges exclusive: the pixels
  covered by COCO's `bbox` [x, y, w, h] (floor of x, y; ceil of x + w, y + h), for cutting;
  `exact_box`, the same corners as annotated (fractional after `resize_frames` shrank a
  polygon), for scoring, which outward rounding would loosen by up to two pixels a side;
- `segmentation`: polygons (each an Nx2 float array of x, y in pixel coordinates, where a
  pixel (col, row) spans [col, col + 1) x [row, row + 1)), or a COCO RLE dict
  {"size": [height, width], "counts": str | list[int]}, or None when the annotation has none;
- `category` and `category_id` (the COCO category), `ignore` (COCO `ignore` or `iscrowd`:
  a sign that neither counts nor penalises in evaluation), and `class_id`, the CTSRD class
  where the annotation states one in the optional field `ctsrd_class`;
- for frames of a video (TAO's fields, which `greedysign data drives` writes): the frame's
  `video_id` and `frame_index`, and each sign's `track_id`, the same in every frame that
  shows that sign;
- `source`, where a generated sign came from (`greedysign data scenes|drives` write it:
  "synthetic:12", "tt100k:pl40/1.png", "tsrd:...", "dfg:..."), "" when the annotation has none.

`instance_mask(instance, height, width)` rasterises one instance: a pixel is in a polygon
when its centre is (pycocotools' pixels exactly for an axis-aligned box; along a slanted
edge its rasteriser differs by a pixel here and there), RLE decodes exactly, and an instance
without a segmentation gets its box filled. `rle_encode` writes the compressed COCO RLE
string that pycocotools reads, so exact masks round-trip bit for bit.

Every fault is a DataError naming the annotation file and the entry (`images[3]`,
`annotations[12] (id 40)`): JSON has no useful line numbers once parsed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from data.images import read_regular_file, regular_file, shown, turned_by_exif
from data.records import Box, DataError
from data.validate import check_on_error

ANNOTATIONS = "annotations.json"
IMAGES = "images"
_EDGE_TOLERANCE = 1.0  # px: bbox and polygon coordinates may sit this far outside the image
_JPEG_QUALITY = 95  # for resized frames: close to lossless, so shrinking is the only change
# A resized frame's shorter side may not fall under this: a sign there would be a pixel or two.
MIN_RESIZED_SIDE = 16

Polygons = tuple[np.ndarray, ...]
Segmentation = Polygons | dict[str, Any] | None


@dataclass(frozen=True, slots=True, eq=False)
class FrameInstance:
    """One sign in a frame (see the module docstring for the meaning of each field)."""

    box: Box
    category: str
    category_id: int
    ignore: bool
    segmentation: Segmentation
    class_id: int | None = None
    annotation_id: int = -1
    area: float = 0.0
    track_id: int | None = None  # the same physical sign across a video's frames
    source: str = ""  # where a generated sign came from ("tt100k:pl40/1.png"); "" if unsaid
    exact_box: tuple[float, float, float, float] | None = None  # None: `box` is exact

    @property
    def scored_box(self) -> tuple[float, float, float, float]:
        """The box evaluation scores against: as annotated, not rounded outward."""
        return self.box if self.exact_box is None else self.exact_box


@dataclass(frozen=True, slots=True, eq=False)
class FrameRecord:
    """One frame: its image file, its size and every sign in it."""

    image_path: Path
    width: int
    height: int
    instances: tuple[FrameInstance, ...]
    image_id: int = -1
    source: str = ""  # "annotations.json: images[i]", for later errors
    video_id: int | None = None  # frames of one video share it; None: a lone frame
    frame_index: int | None = None  # the frame's place in its video
    # What a generated scene was drawn on ("dfg:<frame>", "video:<clip>#<n>", "negatives",
    # as greedysign data scenes writes it); "" where the set does not say (real frames).
    background: str = ""


# --- reading -------------------------------------------------------------------------------


def read_coco_frames(root: Path | str, *, check_images: bool = True) -> list[FrameRecord]:
    """Every frame of the COCO set at `root`; the first fault raises a DataError.

    `root` is a folder holding `annotations.json` and `images/`, or the JSON file itself
    (images are then looked up in `images/` beside it, else beside the file). With
    `check_images` each image file must exist and its header must give the size the JSON
    states; pixels are decoded later, by whoever reads them (data.images.read_rgb).
    """
    frames, _ = read_coco(root, on_error="raise", check_images=check_images)
    return frames


def read_coco(
    root: Path | str, *, on_error: str = "raise", check_images: bool = True
) -> tuple[list[FrameRecord], list[DataError]]:
    """As `read_coco_frames`, and with on_error="skip" a frame with any bad entry (its image
    or one of its annotations) is left out whole and its error returned, so that no frame
    comes back with a sign missing. Faults in the file as a whole always raise."""
    check_on_error(on_error)
    annotation_file, image_dir = _locate(Path(root))
    document = _load_json(annotation_file)
    images = _list_field(document, "images", annotation_file)
    annotations = _list_field(document, "annotations", annotation_file)
    categories = _read_categories(
        _list_field(document, "categories", annotation_file), annotation_file
    )

    errors: dict[int, DataError] = {}  # image index -> first fault
    frames: dict[int, tuple[int, dict[str, Any]]] = {}  # image id -> (index, entry)
    dropped: set[int] = set()  # frames left out (each reported once), their annotations too
    for index, entry in enumerate(images):
        try:
            image_id, _, _, _ = _image_fields(entry, f"images[{index}]", annotation_file)
        except DataError as error:
            if on_error == "raise":
                raise
            errors[index] = error
            if isinstance(entry, dict) and _is_int(entry.get("id")):
                dropped.add(entry["id"])
            continue
        if image_id in frames:
            raise DataError(
                annotation_file, None, f"images[{index}]: duplicate image id {image_id}"
            )
        frames[image_id] = (index, entry)

    instances: dict[int, list[FrameInstance]] = {image_id: [] for image_id in frames}
    seen_ids: set[int] = set()
    for index, entry in enumerate(annotations):
        where = f"annotations[{index}]"
        image_id = entry.get("image_id") if isinstance(entry, dict) else None
        try:
            if not isinstance(entry, dict):
                raise DataError(annotation_file, None, f"{where}: not a JSON object")
            annotation_id = entry.get("id")
            if not _is_int(annotation_id):
                raise DataError(annotation_file, None, f"{where}: id is not an integer")
            where = f"{where} (id {annotation_id})"
            if annotation_id in seen_ids:
                raise DataError(annotation_file, None, f"{where}: duplicate annotation id")
            seen_ids.add(annotation_id)
            if _is_int(image_id) and image_id in dropped:
                continue
            if not _is_int(image_id) or image_id not in frames:
                fault = f"{where}: image_id {image_id!r} is not the id of any image"
                raise DataError(annotation_file, None, fault)
            _, image = frames[image_id]
            instance = _instance(entry, image, categories, where, annotation_file)
        except DataError as error:
            if on_error == "raise":
                raise
            if _is_int(image_id) and image_id in frames:
                errors.setdefault(frames.pop(image_id)[0], error)
                dropped.add(image_id)
            else:  # an annotation of no known frame: nothing to drop, but it is reported
                errors[len(images) + index] = error
            continue
        instances[image_id].append(instance)

    records = []
    for image_id, (index, entry) in sorted(frames.items(), key=lambda item: item[1][0]):
        where = f"images[{index}]"
        try:
            record = _frame(entry, image_dir, instances[image_id], where, annotation_file)
            if check_images:
                _check_image(record, where, annotation_file)
        except DataError as error:
            if on_error == "raise":
                raise
            errors[index] = error
            continue
        records.append(record)
    return records, [errors[index] for index in sorted(errors)]


def split_frames(root: Path | str, out: Path | str, test_share: float) -> tuple[int, int]:
    """Write the COCO set at `root` as two sets, OUT/train and OUT/test (each an
    annotations.json and an `images` link to the source's image folder), the last
    `test_share` of the frames, ordered by their path in the set (folder, then file name:
    "drive-003/000012.jpg"), on the test side. A drive's frames are numbered in order in its
    own folder, so the cut keeps neighbouring, near-identical frames (the same sign seen
    twice) on one side, and every drive but the one it falls in, where a random split would
    put them on both. Entries are copied unchanged. Returns (train frames, test frames).
    OUT/train or OUT/test that is the source folder (whose annotations.json it would replace),
    and OUT that is the source folder or inside it, are refused with a ValueError; no image is
    written, so file names may lead anywhere."""
    if not 0 < test_share < 1:
        raise ValueError(f"test_share must be between 0 and 1, not {test_share}")
    frames = read_coco_frames(root)
    if len(frames) < 2:
        raise ValueError(f"{root}: {len(frames)} frame(s), too few to split")
    annotation_file, image_dir = _locate(Path(root))
    # Sides written into the source would mix generated sets into it, and where its images
    # lie beside its JSON each side's `images` link would lead back to itself: a link loop.
    source = annotation_file.parent.resolve()
    if Path(out).resolve().is_relative_to(source):
        raise ValueError(f"{out}: is the source folder or inside it; write the sets elsewhere")
    for side in ("train", "test"):
        _refuse_source_folder(Path(out) / side, annotation_file)
    document = _load_json(annotation_file)
    ordered = sorted(frames, key=lambda frame: frame.image_path.as_posix())
    test_count = min(len(ordered) - 1, max(1, math.ceil(len(ordered) * test_share)))
    sides = {"train": ordered[: len(ordered) - test_count], "test": ordered[-test_count:]}
    for side, members in sides.items():
        ids = {frame.image_id for frame in members}
        subset = {
            **document,
            "images": [entry for entry in document["images"] if entry["id"] in ids],
            "annotations": [a for a in document["annotations"] if a["image_id"] in ids],
        }
        folder = Path(out) / side
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / IMAGES
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(image_dir.resolve(), target_is_directory=True)
        (folder / ANNOTATIONS).write_text(json.dumps(subset), encoding="utf-8")
    return len(sides["train"]), len(sides["test"])


def resize_frames(root: Path | str, out: Path | str, scale: float) -> int:
    """Write the COCO set at `root` to `out` (annotations.json and images/) with every frame
    shrunk by `scale`: what a lower-resolution camera sees of the same scenes, for measuring
    a detector on low-resolution frames. Pixels and RLE masks are averaged over the area each
    new pixel covers (a mask pixel is set where at least half of it was, so thin parts
    survive), and an RLE sign's box is its shrunk mask's; other boxes and polygons are scaled
    (their corners may become fractional). Every other entry and key is copied unchanged.
    Returns the number of frames written.

    Nothing is written outside `out`, and nothing of the source is overwritten: `out` must
    not be the source folder, and each frame goes to `out/images/<file_name>`, so a
    file_name that is absolute or climbs with '..' (which would land elsewhere) is refused,
    before anything is written, as a DataError naming its entry."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be above 0 and at most 1, not {scale}")
    frames = {frame.image_id: frame for frame in read_coco_frames(root)}
    smallest = min(frames.values(), key=lambda frame: min(frame.width, frame.height), default=None)
    if smallest is not None:
        width, height = _resized_size(smallest, scale)
        if min(width, height) < MIN_RESIZED_SIDE:
            raise ValueError(
                f"scale {scale:g} makes {smallest.image_path.name} ({smallest.width}x"
                f"{smallest.height}) {width}x{height}: under {MIN_RESIZED_SIDE} px a side, a "
                "frame shows no sign"
            )
    annotation_file, image_dir = _locate(Path(root))
    out = Path(out)
    _refuse_source_folder(out, annotation_file)
    out_images = out / IMAGES
    if out_images.resolve() == image_dir.resolve():
        raise ValueError(f"{out}: would overwrite the source images in {image_dir}")
    document = _load_json(annotation_file)
    targets = _resized_targets(document["images"], frames, out, annotation_file)
    sizes = {}  # image id -> (new width, new height)
    images = []
    for entry in document["images"]:
        frame = frames[entry["id"]]
        size = _resized_size(frame, scale)
        _write_resized_image(frame.image_path, targets[frame.image_id], size)
        sizes[frame.image_id] = size
        images.append({**entry, "width": size[0], "height": size[1]})
    annotations = []
    for entry in document["annotations"]:
        frame = frames[entry["image_id"]]
        width, height = sizes[frame.image_id]
        # The image's own ratios, which rounding makes differ slightly from `scale`.
        x_scale, y_scale = width / frame.width, height / frame.height
        x, y, w, h = entry["bbox"]
        resized = {**entry, "bbox": [x * x_scale, y * y_scale, w * x_scale, h * y_scale]}
        segmentation = entry.get("segmentation")
        if isinstance(segmentation, dict):
            covered = cv2.resize(
                rle_decode(segmentation).astype(np.float32),
                (width, height),
                interpolation=cv2.INTER_AREA,
            )  # the share of each new pixel that the mask covered
            mask = covered >= 0.5
            resized["segmentation"] = rle_encode(mask)
            resized["area"] = int(mask.sum())
            tight = mask_box(mask)
            if tight is not None:  # the box of the mask as it now is, as for a generated sign
                x1, y1, x2, y2 = tight
                resized["bbox"] = [x1, y1, x2 - x1, y2 - y1]
        else:
            if segmentation:
                resized["segmentation"] = [
                    (np.reshape(polygon, (-1, 2)) * (x_scale, y_scale)).ravel().tolist()
                    for polygon in segmentation
                ]
            if "area" in entry:
                resized["area"] = entry["area"] * x_scale * y_scale
        annotations.append(resized)
    out.mkdir(parents=True, exist_ok=True)
    resized_document = {**document, "images": images, "annotations": annotations}
    (out / ANNOTATIONS).write_text(json.dumps(resized_document), encoding="utf-8")
    return len(images)


def _resized_size(frame: FrameRecord, scale: float) -> tuple[int, int]:
    return max(1, round(frame.width * scale)), max(1, round(frame.height * scale))


def _refuse_source_folder(out: Path, annotation_file: Path) -> None:
    """A set written to the folder it is read from would replace its own annotation file
    (and, in a folder of images beside their JSON, its images)."""
    if out.resolve() == annotation_file.parent.resolve():
        raise ValueError(f"{out}: is the source folder; write the new set to another folder")


def _resized_targets(
    entries: list[dict[str, Any]], frames: dict[int, FrameRecord], out: Path, path: Path
) -> dict[int, Path]:
    """image id -> where resize_frames writes the frame: out/images/<file_name>. A file_name
    that is absolute or holds '..', or a path that leads out of `out` through a link, or onto
    a source image, is a DataError naming its entry."""
    inside = out.resolve()
    sources = {frame.image_path.resolve() for frame in frames.values()}
    targets = {}
    for index, entry in enumerate(entries):
        file_name = PurePath(entry["file_name"])
        target = out / IMAGES / file_name
        resolved = target.resolve()
        fault = None
        if file_name.is_absolute() or ".." in file_name.parts:
            fault = (
                f"file_name {entry['file_name']!r} is absolute or climbs with '..': a resized "
                f"frame is written to OUT/{IMAGES}/<file_name>, so it must name a file inside "
                "the image folder"
            )
        elif not resolved.is_relative_to(inside):
            fault = f"{target} leads out of {out} through a link, to {resolved}"
        elif resolved in sources:
            fault = f"{target} is a source image ({resolved})"
        if fault:
            raise DataError(path, None, f"images[{index}]: {fault}")
        targets[entry["id"]] = target
    return targets


def _write_resized_image(source: Path, target: Path, size: tuple[int, int]) -> None:
    """`source` shrunk to `size` (width, height) by area averaging, written to `target` in
    the format its extension names (JPEG at quality 95). Pixels are taken as stored
    (IMREAD_UNCHANGED leaves EXIF orientation alone), as the annotations describe them."""
    try:
        content = read_regular_file(source)
    except (OSError, ValueError) as error:
        raise DataError(shown(source), None, f"image unreadable ({error})") from None
    image = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(source, None, "image unreadable")
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    is_jpeg = target.suffix.lower() in (".jpg", ".jpeg")
    options = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY] if is_jpeg else []
    target.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(target), resized, options):
        raise OSError(f"cannot write {target}")


def _locate(root: Path) -> tuple[Path, Path]:
    """(annotation file, image folder) for a frames folder or an annotation file."""
    if root.is_dir():
        annotation_file = root / ANNOTATIONS
        if not annotation_file.is_file():
            raise DataError(root, None, f"no {ANNOTATIONS} in this frames folder")
    elif root.is_file():
        annotation_file = root
    else:
        raise DataError(root, None, "no such frames folder or annotation file")
    image_dir = annotation_file.parent / IMAGES
    return annotation_file, image_dir if image_dir.is_dir() else annotation_file.parent


def _load_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(path, None, f"not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise DataError(path, None, f"cannot read the annotation file ({error})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(path, error.lineno, f"not valid JSON: {error.msg}") from None
    if not isinstance(document, dict):
        raise DataError(path, None, "not a COCO file: the top level is not a JSON object")
    return document


def _list_field(document: dict[str, Any], key: str, path: Path) -> list[Any]:
    value = document.get(key)
    if not isinstance(value, list):
        found = "missing" if value is None else f"a {type(value).__name__}, not a list"
        raise DataError(path, None, f"not a COCO file: '{key}' is {found}")
    return value


def _read_categories(entries: list[Any], path: Path) -> dict[int, str]:
    categories: dict[int, str] = {}
    for index, entry in enumerate(entries):
        where = f"categories[{index}]"
        if not isinstance(entry, dict):
            raise DataError(path, None, f"{where}: not a JSON object")
        category_id, name = entry.get("id"), entry.get("name")
        if not _is_int(category_id):
            raise DataError(path, None, f"{where}: id is not an integer")
        if not isinstance(name, str) or not name:
            raise DataError(path, None, f"{where}: name is missing or not a string")
        if category_id in categories:
            raise DataError(path, None, f"{where}: duplicate category id {category_id}")
        categories[category_id] = name
    return categories


def _image_fields(entry: Any, where: str, path: Path) -> tuple[int, str, int, int]:
    if not isinstance(entry, dict):
        raise DataError(path, None, f"{where}: not a JSON object")
    image_id, file_name = entry.get("id"), entry.get("file_name")
    width, height = entry.get("width"), entry.get("height")
    if not _is_int(image_id):
        raise DataError(path, None, f"{where}: id is not an integer")
    if not isinstance(file_name, str) or not file_name:
        raise DataError(path, None, f"{where}: file_name is missing or not a string")
    for name, value in (("width", width), ("height", height)):
        if not _is_int(value) or value <= 0:
            raise DataError(path, None, f"{where}: {name} is not a positive integer: {value!r}")
    return image_id, file_name, width, height


def _frame(
    entry: dict[str, Any],
    image_dir: Path,
    instances: list[FrameInstance],
    where: str,
    path: Path,
) -> FrameRecord:
    image_id, file_name, width, height = _image_fields(entry, where, path)
    return FrameRecord(
        image_path=image_dir / file_name,
        width=width,
        height=height,
        instances=tuple(instances),
        image_id=image_id,
        source=f"{path}: {where}",
        video_id=_optional_int(entry, "video_id", where, path),
        frame_index=_optional_int(entry, "frame_index", where, path),
        background=_optional_text(entry, "background", where, path),
    )


def _check_image(record: FrameRecord, where: str, path: Path) -> None:
    """The frame's image must be a regular file (a FIFO would block the reader for ever) whose
    header gives the size the JSON states, as stored: EXIF orientation is not applied, as
    data.images.read_rgb does not apply it to dataset images."""
    try:
        with regular_file(record.image_path) as file, Image.open(file) as image:
            size = image.size
            turned = turned_by_exif(image) if size != (record.width, record.height) else ""
    except FileNotFoundError:
        raise DataError(path, None, f"{where}: image file missing: {record.image_path}") from None
    except UnidentifiedImageError:
        raise DataError(path, None, f"{where}: not an image: {record.image_path}") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        fault = f"{where}: image unreadable: {shown(record.image_path)} ({error})"
        raise DataError(path, None, fault) from None
    if size != (record.width, record.height):
        fault = (
            f"{where}: the JSON says {record.width}x{record.height} "
            f"but {record.image_path} is {size[0]}x{size[1]}{turned}"
        )
        raise DataError(path, None, fault)


def _instance(
    entry: dict[str, Any],
    image: dict[str, Any],
    categories: dict[int, str],
    where: str,
    path: Path,
) -> FrameInstance:
    width, height = image["width"], image["height"]
    category_id = entry.get("category_id")
    if not _is_int(category_id) or category_id not in categories:
        raise DataError(path, None, f"{where}: category_id {category_id!r} is not a category")
    box = _box(entry.get("bbox"), width, height, where, path)
    x, y, w, h = map(float, entry["bbox"])
    segmentation = _segmentation(entry.get("segmentation"), width, height, where, path)
    ignore, crowd = entry.get("ignore", False), entry.get("iscrowd", 0)
    for name, value in (("ignore", ignore), ("iscrowd", crowd)):
        if value not in (True, False, 0, 1):
            raise DataError(path, None, f"{where}: {name} must be true/false or 0/1: {value!r}")
    class_id = entry.get("ctsrd_class")
    if class_id is not None and (not _is_int(class_id) or class_id < 0):
        raise DataError(path, None, f"{where}: ctsrd_class must be null or a class id")
    area = entry.get("area", 0.0)
    if not _is_number(area) or area < 0:
        raise DataError(path, None, f"{where}: area is not a non-negative number: {area!r}")
    track_id = _optional_int(entry, "track_id", where, path)
    source = _optional_text(entry, "source", where, path)
    return FrameInstance(
        box=box,
        category=categories[category_id],
        category_id=category_id,
        ignore=bool(ignore) or bool(crowd),
        segmentation=segmentation,
        class_id=class_id,
        annotation_id=entry["id"],
        area=float(area),
        track_id=track_id,
        source=source,
        exact_box=_exact_box(x, y, w, h, width, height, box),
    )


def _box(bbox: Any, width: int, height: int, where: str, path: Path) -> Box:
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(value) for value in bbox):
        raise DataError(path, None, f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        raise DataError(path, None, f"{where}: bbox {bbox} is empty (width and height must be > 0)")
    tolerance = _EDGE_TOLERANCE
    if x < -tolerance or y < -tolerance or x + w > width + tolerance or y + h > height + tolerance:
        fault = f"{where}: bbox {bbox} lies outside the {width}x{height} image"
        raise DataError(path, None, fault)
    # A box that starts within the tolerance past the last pixel is that last pixel.
    x1, y1 = min(max(0, math.floor(x)), width - 1), min(max(0, math.floor(y)), height - 1)
    x2, y2 = min(width, math.ceil(x + w)), min(height, math.ceil(y + h))
    return x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)


def _exact_box(
    x: float, y: float, w: float, h: float, width: int, height: int, box: Box
) -> tuple[float, float, float, float] | None:
    """The annotated corners within the image (the reader lets them stray 1 px past it), or
    None where they are `box`'s own whole pixels."""
    exact = (max(0.0, x), max(0.0, y), min(float(width), x + w), min(float(height), y + h))
    if exact == box or exact[2] <= exact[0] or exact[3] <= exact[1]:
        return None  # whole pixels, or a sliver past the edge that `box` makes a pixel of
    return exact


def _segmentation(value: Any, width: int, height: int, where: str, path: Path) -> Segmentation:
    if value is None or (isinstance(value, list) and not value):
        return None
    if isinstance(value, dict):
        return _checked_rle(value, width, height, where, path)
    if not isinstance(value, list):
        raise DataError(path, None, f"{where}: segmentation is neither polygons nor RLE")
    polygons = []
    for number, polygon in enumerate(value):
        name = f"{where}: segmentation[{number}]"
        if not isinstance(polygon, list) or not all(_is_number(v) for v in polygon):
            raise DataError(path, None, f"{name} is not a flat list of numbers [x1, y1, x2, ...]")
        if len(polygon) < 6 or len(polygon) % 2:
            fault = f"{name} has {len(polygon)} numbers: a polygon needs 3+ (x, y) pairs"
            raise DataError(path, None, fault)
        points = np.asarray(polygon, np.float64).reshape(-1, 2)
        if not np.isfinite(points).all():
            raise DataError(path, None, f"{name} holds a number that is not finite")
        low, high = points.min(axis=0), points.max(axis=0)
        limit = np.array([width, height]) + _EDGE_TOLERANCE
        if (low < -_EDGE_TOLERANCE).any() or (high > limit).any():
            fault = f"{name} reaches outside the {width}x{height} image"
            raise DataError(path, None, fault)
        polygons.append(points)
    return tuple(polygons)


def _checked_rle(rle: dict[str, Any], width: int, height: int, where: str, path: Path) -> dict:
    size, counts = rle.get("size"), rle.get("counts")
    if size != [height, width]:
        fault = f"{where}: RLE size {size!r} is not the image's [height, width] [{height}, {width}]"
        raise DataError(path, None, fault)
    if isinstance(counts, str):
        try:
            runs = _rle_string_counts(counts)
        except ValueError as error:
            raise DataError(
                path, None, f"{where}: RLE counts string is corrupt ({error})"
            ) from None
    elif isinstance(counts, list) and all(_is_int(c) for c in counts):
        runs = np.asarray(counts, np.int64)
    else:
        raise DataError(path, None, f"{where}: RLE counts must be a string or a list of integers")
    if (runs < 0).any() or runs.sum() != width * height:
        fault = f"{where}: RLE runs add up to {int(runs.sum())} pixels, not {width}x{height}"
        raise DataError(path, None, fault)
    return {"size": [height, width], "counts": counts}


def _optional_int(entry: dict[str, Any], key: str, where: str, path: Path) -> int | None:
    value = entry.get(key)
    if value is not None and (not _is_int(value) or value < 0):
        raise DataError(path, None, f"{where}: {key} must be null or a non-negative integer")
    return value


def _optional_text(entry: dict[str, Any], key: str, where: str, path: Path) -> str:
    value = entry.get(key, "")
    if not isinstance(value, str):
        raise DataError(path, None, f"{where}: {key} must be a string: {value!r}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --- masks -----------------------------------------------------------------------------------


def instance_mask(instance: FrameInstance, height: int, width: int) -> np.ndarray:
    """The instance's mask as a bool HxW array (its box filled when it has no segmentation)."""
    segmentation = instance.segmentation
    if segmentation is None:
        mask = np.zeros((height, width), bool)
        x1, y1, x2, y2 = instance.box
        mask[y1:y2, x1:x2] = True
        return mask
    if isinstance(segmentation, dict):
        return rle_decode(segmentation)
    return polygon_mask(segmentation, height, width)


def polygon_mask(polygons: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """Pixels whose centre lies inside any of the polygons (even-odd rule within each).

    Each polygon is an Nx2 array of (x, y); pixel (col, row) has its centre at
    (col + 0.5, row + 0.5). A scanline per pixel row: the edges it crosses toggle the
    inside state from the first pixel centre past each crossing onwards. A centre exactly
    on the boundary counts when it lies on the right or bottom edge (as pycocotools does:
    the square [2.5, 7.5]^2 covers pixels 3..7). For axis-aligned boxes the pixels are
    pycocotools' exactly; along slanted edges they may differ by a pixel.
    """
    mask = np.zeros((height, width), bool)
    for polygon in polygons:
        points = np.asarray(polygon, np.float64).reshape(-1, 2)
        if len(points) < 3:
            continue
        top = max(0, math.floor(points[:, 1].min() - 0.5))
        bottom = min(height, math.ceil(points[:, 1].max() + 0.5))
        if top >= bottom:
            continue
        centres = np.arange(top, bottom, dtype=np.float64) + 0.5  # row centres
        start, end = points, np.roll(points, -1, axis=0)
        y0, y1 = start[:, 1][None, :], end[:, 1][None, :]
        rows = centres[:, None]
        crosses = (y0 < rows) != (y1 < rows)  # half-open: a vertex row counts once
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = start[:, 0] + (rows - y0) * (end[:, 0] - start[:, 0]) / (y1 - y0)
        row_index, edge_index = np.nonzero(crosses)
        crossings = x_at[row_index, edge_index]
        columns = np.clip(np.floor(crossings - 0.5) + 1, 0, width).astype(np.int64)
        toggles = np.zeros((bottom - top, width + 1), np.int32)
        np.add.at(toggles, (row_index, columns), 1)
        mask[top:bottom] |= (np.cumsum(toggles, axis=1)[:, :width] % 2).astype(bool)
    return mask


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of a HxW mask: {"size": [h, w], "counts": str} (pycocotools')."""
    height, width = mask.shape
    return {"size": [height, width], "counts": _rle_string(_runs(mask))}


def rle_encode_box(local: np.ndarray, box: Box, height: int, width: int) -> dict[str, Any]:
    """`rle_encode` of a mask that is zero outside `box`, given only its part inside it
    (`local`, shaped like the box): what the scene generator stores, at a fraction of the cost
    of building the whole frame's mask."""
    x1, y1, x2, y2 = box
    if local.shape != (y2 - y1, x2 - x1):
        raise ValueError(f"mask of shape {local.shape} does not fit box {box}")
    columns = np.zeros((x2 - x1, height), bool)  # the box's columns, top to bottom
    columns[:, y1:y2] = local.T
    runs = _runs(columns, order="C")
    runs[0] += x1 * height
    after = (width - x2) * height
    if len(runs) % 2:  # the last run is zeros (runs alternate zeros, ones, ...)
        runs[-1] += after
    elif after:  # the box ends inside the mask: the zeros after it are a run of their own
        runs = np.append(runs, after)
    return {"size": [height, width], "counts": _rle_string(runs)}


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """The bool HxW mask of a COCO RLE, compressed (str counts) or not (list counts)."""
    height, width = rle["size"]
    counts = rle["counts"]
    runs = _rle_string_counts(counts) if isinstance(counts, str) else np.asarray(counts, np.int64)
    values = np.zeros(len(runs), bool)
    values[1::2] = True
    flat = np.repeat(values, runs)
    if flat.size != height * width:
        raise ValueError(f"RLE runs cover {flat.size} pixels, not {height}x{width}")
    return flat.reshape(width, height).T


def _runs(mask: np.ndarray, order: str = "F") -> np.ndarray:
    """Run lengths of a bool mask flattened in `order` ("F": column by column, as COCO RLE
    runs; "C": row by row), starting with a zero run."""
    flat = np.asarray(mask, bool).ravel(order=order)
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]]))
    if flat.size and flat[0]:
        runs = np.concatenate([[0], runs])
    return runs.astype(np.int64)


def _rle_string(runs: np.ndarray) -> str:
    """pycocotools' rleToString: each run (minus the run two before, from the fourth on)
    as a little-endian sequence of 5-bit groups, a continuation bit 0x20, offset by 48."""
    out = []
    values = [int(v) for v in runs]
    for index, value in enumerate(values):
        x = value - values[index - 2] if index > 2 else value
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def _rle_string_counts(text: str) -> np.ndarray:
    """pycocotools' rleFrString: the inverse of `_rle_string`."""
    runs: list[int] = []
    position = 0
    while position < len(text):
        x, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                raise ValueError("the string ends inside a number")
            c = ord(text[position]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {text[position]!r} at {position} is not RLE")
            x |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            position += 1
            shift += 5
            if not more and c & 0x10:
                x |= -1 << shift
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return np.asarray(runs, np.int64)


def mask_box(mask: np.ndarray) -> Box | None:
    """Tight box (x1, y1, x2, y2) of a mask, ends exclusive; None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
