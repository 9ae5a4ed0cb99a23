"""`greedysign data check`: validate a dataset and report what is in it.

Beyond the per-record checks done while loading, the report finds exact duplicates (same
image bytes under different names) and, for the official TSRD layout, images that sit in
both the train and the test split: the leakage that inflates test accuracy. It warns of one
image content annotated in ways that disagree (several lines for one file, or copies of one
image, with different classes or with boxes on different places), since training keeps one
annotation of each content (data.split.unique_by_content) and drops the others unseen.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

from data.classes import NO_SIGN, OPEN_SET_NAMES, UNKNOWN_SIGN
from data.load import DatasetIndex, load_dataset
from data.near_twins import twin_groups
from data.records import SignRecord, box_area, box_overlap
from data.split import unique_by_content

# How many duplicate groups, leaked images and skipped records the text report lists one by
# one (the full release has 1500+ duplicate groups); to_dict() lists them all.
LISTED_IN_TEXT = 20
# Two boxes of one image content mark the same sign when their IoU reaches this (COCO's bar
# for a match): annotators' boxes of one sign differ by a pixel or two, which no training
# notices, while a box on another place is another sign, or a mistake.
SAME_SIGN_IOU = 0.5


@dataclass(frozen=True)
class Spread:
    min: float
    median: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Spread | None:
        return cls(min(values), statistics.median(values), max(values)) if values else None


@dataclass
class CheckReport:
    dataset: str
    layout: str
    root: Path
    records: int
    distinct_images: int
    class_names: list[str]
    class_histogram: dict[int, int]  # class id -> records, known classes present only
    open_set_counts: dict[str, int]  # "unknown sign" / "no sign" -> records
    split_counts: dict[str, int]  # records per split; empty where the layout has no split
    width: Spread | None
    height: Spread | None
    box_coverage: Spread | None  # box area / image area, over records with a box
    duplicate_groups: list[list[str]]  # file names (relative to root) sharing one content
    cross_split: list[dict[str, list[str]]]  # {"train": [...], "test": [...]} per content
    # Groups that the split keeps on one side (data/near_twins.py): same content, same scene,
    # or near-twins; sizes of the groups of two or more distinct images.
    twin_group_sizes: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "file:line: fault" per skipped record
    # Per image content whose annotations disagree (class, or boxes under SAME_SIGN_IOU):
    # each of its annotations, {"file", "source", "class_id", "box"}.
    conflicts: list[list[dict]] = field(default_factory=list)

    @property
    def classes(self) -> int:
        return len(self.class_histogram)

    @property
    def missing_classes(self) -> list[int]:
        return [c for c in range(len(self.class_names)) if c not in self.class_histogram]

    def to_dict(self) -> dict:
        def spread(value: Spread | None) -> dict | None:
            return None if value is None else vars(value).copy()

        return {
            "dataset": self.dataset,
            "layout": self.layout,
            "root": str(self.root),
            "records": self.records,
            "distinct_images": self.distinct_images,
            "classes": self.classes,
            "classes_total": len(self.class_names),
            "missing_classes": self.missing_classes,
            "class_histogram": {str(c): n for c, n in self.class_histogram.items()},
            "open_set_counts": self.open_set_counts,
            "split_counts": self.split_counts,
            "width": spread(self.width),
            "height": spread(self.height),
            "box_coverage": spread(self.box_coverage),
            "errors": len(self.skipped),
            "skipped": self.skipped,
            "duplicate_groups": self.duplicate_groups,
            "conflicts": self.conflicts,
            "twin_groups": len(self.twin_group_sizes),
            "images_in_twin_groups": sum(self.twin_group_sizes),
            "largest_twin_group": max(self.twin_group_sizes, default=0),
            "cross_split": self.cross_split,
        }

    def to_text(self) -> str:
        lines = [
            f"dataset     {self.dataset} ({self.layout} layout) at {self.root}",
            f"records     {self.records} ({self.distinct_images} distinct images)",
        ]
        if self.split_counts:
            counts = ", ".join(f"{split} {n}" for split, n in self.split_counts.items())
            lines.append(f"splits      {counts}")
        missing_classes = self.missing_classes
        missing = (
            ", ".join(map(str, missing_classes)) or "none"
            if len(missing_classes) <= LISTED_IN_TEXT
            else f"{len(missing_classes)} classes"
        )
        lines += [
            f"classes     {self.classes} of {len(self.class_names)} present (missing: {missing})",
            f"open set    {self.open_set_counts[UNKNOWN_SIGN]} signs of no class ({UNKNOWN_SIGN}), "
            f"{self.open_set_counts[NO_SIGN]} images with no sign ({NO_SIGN})",
            f"errors      {len(self.skipped)}"
            + (" (records skipped, listed below)" if self.skipped else ""),
        ]
        for name, value, digits in (
            ("width", self.width, 0),
            ("height", self.height, 0),
            ("box/image", self.box_coverage, 2),
        ):
            if value is not None:
                lines.append(
                    f"{name:<11} min {value.min:.{digits}f}  median {value.median:.{digits}f}  "
                    f"max {value.max:.{digits}f}"
                )
        copies = sum(len(group) for group in self.duplicate_groups)
        lines.append(
            f"duplicates  {len(self.duplicate_groups)} groups of identical images ({copies} files)"
        )
        lines += _first_items([", ".join(group) for group in self.duplicate_groups])
        lines.append(
            f"conflicts   {len(self.conflicts)} images annotated in ways that disagree"
            + (
                " (warning: training keeps one annotation of each image; fix or drop the others)"
                if self.conflicts
                else ""
            )
        )
        lines += _first_items(
            [
                "; ".join(
                    f"{item['file']} ({item['source']}): class {item['class_id']}"
                    + ("" if item["box"] is None else f" box {tuple(item['box'])}")
                    for item in group
                )
                for group in self.conflicts
            ]
        )
        lines.append(
            f"twins       {len(self.twin_group_sizes)} groups hold {sum(self.twin_group_sizes)} "
            "distinct images of one sign or scene (largest "
            f"{max(self.twin_group_sizes, default=0)}); a split keeps each on one side"
        )
        if self.split_counts.keys() >= {"train", "test"}:
            lines.append(f"cross-split {len(self.cross_split)} images in both train and test")
            lines += _first_items(
                [
                    f"train: {', '.join(item['train'])}  test: {', '.join(item['test'])}"
                    for item in self.cross_split
                ]
            )
        else:
            sides = ", ".join(sorted(self.split_counts)) or "none"
            lines.append(
                f"cross-split n/a (needs a train and a test side; this layout has: {sides})"
            )
        lines.append("per class    id  records  name")
        lines += [
            f"            {c:>3}  {n:>7}  {self.class_names[c]}"
            for c, n in self.class_histogram.items()
        ]
        if self.skipped:
            lines.append(f"skipped     {len(self.skipped)} records:")
            lines += _first_items(self.skipped)
        return "\n".join(lines)


def _first_items(items: list[str]) -> list[str]:
    shown = [f"  {item}" for item in items[:LISTED_IN_TEXT]]
    if len(items) > LISTED_IN_TEXT:
        shown.append(f"  ... and {len(items) - LISTED_IN_TEXT} more (--json lists all)")
    return shown


def _name(record: SignRecord, root: Path) -> str:
    """The image's path relative to the dataset folder: unique, unlike the bare file name
    (the TSRD release reuses 166 file names across its train and test folders)."""
    try:
        return record.image_path.relative_to(root).as_posix()
    except ValueError:
        return str(record.image_path)


def _disagree(a: SignRecord, b: SignRecord) -> bool:
    """Whether two annotations of one image content say different things: another class, or
    boxes that do not mark the same sign (a record without a box, a crop, says nothing)."""
    if a.class_id != b.class_id:
        return True
    if a.box is None or b.box is None:
        return False
    overlap = box_overlap(a.box, b.box)
    return overlap < SAME_SIGN_IOU * (box_area(a.box) + box_area(b.box) - overlap)


def _conflicts(groups: Iterable[list[SignRecord]], root: Path) -> list[list[dict]]:
    """The groups of records of one content (of one image file, or of copies of it) whose
    annotations disagree, each annotation as CheckReport.conflicts lists it."""
    conflicts = []
    for group in groups:
        if any(_disagree(a, b) for a, b in combinations(group, 2)):
            conflicts.append(
                [
                    {
                        "file": _name(record, root),
                        "source": record.source.removeprefix(f"{root}/"),
                        "class_id": record.class_id,
                        "box": None if record.box is None else list(record.box),
                    }
                    for record in group
                ]
            )
    return sorted(conflicts, key=lambda group: [item["file"] for item in group])


def report_index(index: DatasetIndex) -> CheckReport:
    records = index.records
    by_content: dict[str, list[SignRecord]] = defaultdict(list)
    for record in records:
        by_content[record.sha1].append(record)

    duplicate_groups = sorted(
        sorted(_name(r, index.root) for r in group)
        for group in by_content.values()
        if len(group) > 1
    )
    cross_split = []
    for group in by_content.values():
        names_by_split: dict[str, list[str]] = defaultdict(list)
        for record in group:
            names_by_split[record.split or ""].append(_name(record, index.root))
        if names_by_split.keys() >= {"train", "test"}:
            cross_split.append({s: sorted(names_by_split[s]) for s in ("train", "test")})
    cross_split.sort(key=lambda item: (item["train"], item["test"]))

    split_counts = Counter(record.split for record in records if record.split)
    num_known = len(index.class_names)
    labels = Counter(record.class_id for record in records)
    boxed = [r for r in records if r.box is not None]
    return CheckReport(
        dataset=index.name,
        layout=index.layout,
        root=index.root,
        records=len(records),
        distinct_images=len(by_content),
        class_names=index.class_names,
        class_histogram={c: n for c, n in sorted(labels.items()) if c < num_known},
        open_set_counts={
            name: labels[num_known + offset] for offset, name in enumerate(OPEN_SET_NAMES)
        },
        split_counts=dict(sorted(split_counts.items(), key=lambda item: item[0] != "train")),
        width=Spread.of([r.width for r in records]),
        height=Spread.of([r.height for r in records]),
        box_coverage=Spread.of(
            [(r.box[2] - r.box[0]) * (r.box[3] - r.box[1]) / (r.width * r.height) for r in boxed]
        ),
        duplicate_groups=duplicate_groups,
        twin_group_sizes=_twin_group_sizes(records),
        cross_split=cross_split,
        skipped=[str(error) for error in index.skipped],
        conflicts=_conflicts(by_content.values(), index.root),
    )


def _twin_group_sizes(records: list[SignRecord]) -> list[int]:
    distinct = unique_by_content(records)
    sizes = Counter(twin_groups(distinct))
    return sorted((n for n in sizes.values() if n > 1), reverse=True)


def check_dataset(path: Path | str, *, on_error: str = "raise") -> CheckReport:
    return report_index(load_dataset(path, on_error=on_error))
