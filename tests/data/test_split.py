"""Splits never share image content between train and test, and keep every class trained."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from data.classes import class_names
from data.load import DatasetIndex, load_dataset
from data.near_twins import twin_groups
from data.records import DataError, SignRecord
from data.split import (
    cross_split_copies,
    leakage_free_split,
    train_test_split,
    unique_by_content,
)


def _record(name: str, class_id: int, sha1: str, split: str | None = None) -> SignRecord:
    return SignRecord(Path(name), class_id, (0, 0, 8, 8), 8, 8, split=split, sha1=sha1)


def _dataset() -> list[SignRecord]:
    """Class c has c + 1 distinct images (so 1 to 8), each stored 1 to 3 times."""
    return [
        _record(f"{c}_{i}_{copy}.png", c, f"{c}-{i}")
        for c in range(8)
        for i in range(c + 1)
        for copy in range(1 + i % 3)
    ]


def _hashes(records: list[SignRecord]) -> set[str]:
    return {record.sha1 for record in records}


def test_no_content_on_both_sides():
    records = _dataset()
    train, test = leakage_free_split(records, test_fraction=0.3, seed=1)

    assert not _hashes(train) & _hashes(test)
    assert sorted(train + test, key=lambda r: r.image_path) == sorted(
        records, key=lambda r: r.image_path
    )


def test_every_class_in_train_and_test_when_it_can_be():
    train, test = leakage_free_split(_dataset(), test_fraction=0.2, seed=0)

    train_classes, test_classes = {r.class_id for r in train}, {r.class_id for r in test}
    assert train_classes == set(range(8))  # class 0 has one image: it trains
    assert test_classes == set(range(1, 8))  # classes with two or more images are also tested


def test_stratified_counts():
    distinct = {c: c + 1 for c in range(8)}
    _, test = leakage_free_split(_dataset(), test_fraction=0.5, seed=0)

    tested = Counter(int(sha1.split("-")[0]) for sha1 in _hashes(test))
    # Half of each class's distinct images, rounded, never all of them.
    assert tested == {c: min(n - 1, int(n * 0.5 + 0.5)) for c, n in distinct.items() if n > 1}


def test_deterministic_and_independent_of_order():
    records = _dataset()
    shuffled = records.copy()
    random.Random(3).shuffle(shuffled)

    train, test = leakage_free_split(records, seed=5)
    train_again, test_again = leakage_free_split(shuffled, seed=5)
    other_train, _ = leakage_free_split(records, seed=6)

    assert (train, test) == leakage_free_split(records, seed=5)
    assert _hashes(train_again) == _hashes(train) and _hashes(test_again) == _hashes(test)
    assert _hashes(other_train) != _hashes(train)


def test_zero_test_fraction_keeps_everything_in_train():
    records = _dataset()
    assert leakage_free_split(records, test_fraction=0.0) == (records, [])
    with pytest.raises(ValueError, match="test_fraction"):
        leakage_free_split(records, test_fraction=1.0)


def test_records_without_hashes_are_refused():
    with pytest.raises(ValueError, match="sha1"):
        leakage_free_split([_record("a.png", 0, "")])


def test_unique_by_content_keeps_the_first_of_each():
    records = [_record("a", 0, "x"), _record("b", 0, "y"), _record("c", 0, "x")]
    assert [r.image_path.name for r in unique_by_content(records)] == ["a", "b"]


def test_official_layout_split_paper_protocol_or_leakage_free():
    records = [
        _record("tsrd-train/a.png", 0, "A", "train"),
        _record("tsrd-train/a_copy.png", 0, "A", "train"),
        _record("tsrd-train/b.png", 1, "B", "train"),
        _record("TSRD-Test/b_copy.png", 1, "B", "test"),
        _record("TSRD-Test/c.png", 1, "C", "test"),
        _record("TSRD-Test/c_copy.png", 1, "C", "test"),
    ]
    index = DatasetIndex("ctsrd", "official", Path("."), records, class_names("ctsrd"), [])

    # The paper's protocol: the release's own files, duplicates and leaked copies included.
    train, test = train_test_split(index, official=True)
    assert [r.image_path.name for r in train] == ["a.png", "a_copy.png", "b.png"]
    assert [r.image_path.name for r in test] == ["b_copy.png", "c.png", "c_copy.png"]
    assert cross_split_copies(train, test) == 1  # b_copy.png is b.png

    # The default ignores the release's split: one record per content, none on both sides.
    train, test = train_test_split(index, test_fraction=0.5, seed=0)
    assert len(train) + len(test) == 3 and not _hashes(train) & _hashes(test)


def test_official_split_needs_the_official_layout():
    index = DatasetIndex("ctsrd", "plain", Path("."), _dataset(), class_names("ctsrd"), [])
    with pytest.raises(DataError, match="official layout|release's layout"):
        train_test_split(index, official=True)


def test_plain_layout_split_is_deduplicated_and_leakage_free():
    index = DatasetIndex("ctsrd", "plain", Path("."), _dataset(), class_names("ctsrd"), [])

    train, test = train_test_split(index, test_fraction=0.25, seed=2)

    assert len(train + test) == len(_hashes(train + test)) == 36  # 1 + 2 + ... + 8 images
    assert not _hashes(train) & _hashes(test)


def test_real_ctsrd_split(ctsrd_real: Path):
    index = load_dataset(ctsrd_real)

    train, test = train_test_split(index, test_fraction=0.2, seed=0)

    assert not _hashes(train) & _hashes(test)
    assert len(train) + len(test) == 1191
    groups = dict(zip(index.records, twin_groups(index.records), strict=True))
    assert not {groups[r] for r in train} & {groups[r] for r in test}, "a twin group is split"
    groups_per_class = Counter(c for c, _ in {(r.class_id, groups[r]) for r in index.records})
    trained, tested = {r.class_id for r in train}, {r.class_id for r in test}
    assert trained == set(groups_per_class)
    assert tested == {c for c, n in groups_per_class.items() if n >= 2}
    assert 0.15 < len(test) / 1191 < 0.25
