"""Train/test splits that never put the same image content on both sides.

The TSRD release holds only 2465 distinct images among its 6164 files and 80 images sit in
both of its splits, so any split by file name leaks test images into training. Here records
are grouped by the hash of the image bytes (`SignRecord.sha1`) and whole groups are assigned.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from typing import TYPE_CHECKING

from data.records import SignRecord

if TYPE_CHECKING:
    from data.load import DatasetIndex


def _require_hashes(records: list[SignRecord]) -> None:
    if any(not record.sha1 for record in records):
        raise ValueError("records need content hashes (sha1); read them with load_dataset")


def unique_by_content(records: list[SignRecord]) -> list[SignRecord]:
    """The first record of each distinct image content, in the given order."""
    _require_hashes(records)
    seen: set[str] = set()
    unique = []
    for record in records:
        if record.sha1 not in seen:
            seen.add(record.sha1)
            unique.append(record)
    return unique


def _test_count(groups: int, test_fraction: float) -> int:
    """Groups of one class that go to test: the rounded fraction, but never the last one, and
    at least one when the class has two or more (so each class is both trained and tested)."""
    if groups < 2 or test_fraction == 0:
        return 0
    return min(groups - 1, max(1, math.floor(groups * test_fraction + 0.5)))


def leakage_free_split(
    records: list[SignRecord], *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[SignRecord], list[SignRecord]]:
    """(train, test): all records of one image content land on the same side, each class is
    split in proportion (stratified), and the result depends only on the records and the seed,
    not on their order. Records keep their given order within each side."""
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), not {test_fraction}")
    _require_hashes(records)
    class_votes: dict[str, Counter[int]] = defaultdict(Counter)
    for record in records:
        class_votes[record.sha1][record.class_id] += 1
    # A content's class is its most common label (lowest id on a tie), so copies labelled
    # differently still put the group in one stratum.
    hashes_by_class: dict[int, list[str]] = defaultdict(list)
    for sha1, votes in class_votes.items():
        class_id = min(votes, key=lambda candidate: (-votes[candidate], candidate))
        hashes_by_class[class_id].append(sha1)

    rng = random.Random(seed)
    test_hashes: set[str] = set()
    for class_id in sorted(hashes_by_class):
        hashes = sorted(hashes_by_class[class_id])  # sorted first, so input order cannot matter
        rng.shuffle(hashes)
        test_hashes.update(hashes[: _test_count(len(hashes), test_fraction)])

    train = [record for record in records if record.sha1 not in test_hashes]
    test = [record for record in records if record.sha1 in test_hashes]
    return train, test


def train_test_split(
    index: DatasetIndex, *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[SignRecord], list[SignRecord]]:
    """(train, test) for training, one record per distinct image on each side.

    The official TSRD layout keeps the release's own split, with test images whose content is
    also in train dropped; other layouts (or an official folder with only one split) get
    `leakage_free_split` with `test_fraction` and `seed`.
    """
    splits = {record.split for record in index.records}
    if index.layout == "official" and {"train", "test"} <= splits:
        train = unique_by_content([r for r in index.records if r.split == "train"])
        train_hashes = {record.sha1 for record in train}
        test = unique_by_content(
            [r for r in index.records if r.split == "test" and r.sha1 not in train_hashes]
        )
        return train, test
    return leakage_free_split(
        unique_by_content(index.records), test_fraction=test_fraction, seed=seed
    )
