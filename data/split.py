"""Train/test splits that never put one sign on both sides.

The TSRD release holds only 2465 distinct images among its 6164 files and 80 images sit in
both of its splits, so any split by file name leaks test images into training. Beyond exact
copies, TSRD holds several photos of one physical sign and TT100K sees one sign from
neighbouring panoramas. Here records are grouped by the hash of the image bytes
(`SignRecord.sha1`), by the reader's group key (a TT100K panorama) and as near-twins
(data/near_twins.py), and whole groups are assigned to one side.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from typing import TYPE_CHECKING

from data.near_twins import twin_groups
from data.records import DataError, SignRecord

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
    """(train, test): all records of one group (same content, same scene, near-twins) land on
    the same side, each class is split in proportion (stratified, by groups), and the result
    depends only on the records and the seed, not on their order. Records keep their given
    order within each side."""
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), not {test_fraction}")
    _require_hashes(records)
    group_of = twin_groups(records)
    class_votes: dict[int, Counter[int]] = defaultdict(Counter)
    first_hash: dict[int, str] = {}
    for group, record in zip(group_of, records, strict=True):
        class_votes[group][record.class_id] += 1
        first_hash[group] = min(first_hash.get(group, record.sha1), record.sha1)
    # A group's class is its most common label (lowest id on a tie), so copies labelled
    # differently and panoramas holding several signs still put the group in one stratum.
    # Groups are named by their smallest content hash: a name that does not depend on order.
    groups_by_class: dict[int, list[str]] = defaultdict(list)
    for group, votes in class_votes.items():
        class_id = min(votes, key=lambda candidate: (-votes[candidate], candidate))
        groups_by_class[class_id].append(first_hash[group])

    rng = random.Random(seed)
    test_groups: set[str] = set()
    for class_id in sorted(groups_by_class):
        names = sorted(groups_by_class[class_id])  # sorted first, so input order cannot matter
        rng.shuffle(names)
        test_groups.update(names[: _test_count(len(names), test_fraction)])

    on_test = [first_hash[group] in test_groups for group in group_of]
    train = [record for record, test in zip(records, on_test, strict=True) if not test]
    test = [record for record, test in zip(records, on_test, strict=True) if test]
    return train, test


def train_test_split(
    index: DatasetIndex, *, test_fraction: float = 0.2, seed: int = 0, official: bool = False
) -> tuple[list[SignRecord], list[SignRecord]]:
    """(train, test) for training.

    By default `leakage_free_split` with `test_fraction` and `seed`, one record per distinct
    image, whatever the layout. `official=True` is the paper's protocol: the TSRD release's
    own train and test files as they are, duplicates and all (`cross_split_copies` counts the
    test images that are also train images); it needs the official layout with both splits.
    """
    if official:
        splits = {record.split for record in index.records}
        if index.layout != "official" or not {"train", "test"} <= splits:
            raise DataError(
                index.root,
                None,
                "--split official needs the TSRD release's layout with both tsrd-train/ and "
                f"TSRD-Test/ (this is the {index.layout} layout"
                + (
                    f" with only its {', '.join(sorted(s for s in splits if s))} split)"
                    if index.layout == "official"
                    else ")"
                ),
            )
        train = [record for record in index.records if record.split == "train"]
        test = [record for record in index.records if record.split == "test"]
        return train, test
    return leakage_free_split(
        unique_by_content(index.records), test_fraction=test_fraction, seed=seed
    )


def cross_split_copies(train: list[SignRecord], test: list[SignRecord]) -> int:
    """How many test records are byte-identical to a training record."""
    train_hashes = {record.sha1 for record in train}
    return sum(record.sha1 in train_hashes for record in test)
