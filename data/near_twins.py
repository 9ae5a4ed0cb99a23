"""Near-twins: photos of one physical sign that are not byte-identical.

TSRD holds several shots of most signs (neighbouring frames, a step closer), and TT100K
sees one sign from neighbouring panoramas. Removing exact copies (content hash) leaves
those twins on both sides of a split, where they flatter the test score. Here they are
found by a perceptual descriptor, and bound into groups that a split keeps on one side.

The descriptor is the image (or the sign's box with a 25 % margin of context, where there
is a box) shrunk to 16x16 RGB, centred and scaled to unit length; two images are compared
by the cosine of their descriptors. Two records of the same class and collection are twins
when (rules per collection, in `RULES`):

- their descriptors are at least `similarity` alike (TSRD: 0.8; the context around the
  sign is what tells one physical sign from another of its class), or
- they are neighbours in their collection's shot order and alike enough for how far apart
  they are: TSRD file numbers within 2 and 0.5 alike; TT100K panorama ids within 5 and 0.3
  alike, or within 50 and 0.8 alike.

For TT100K only the second rule applies: its crops are tight, so two signs of one class
look alike wherever they stand. Records also join when the reader groups them (one
TT100K panorama) or their bytes are identical. The thresholds were set by looking at pairs
of the real TSRD sample across the range of similarities (BENCHMARKS.md, "Data").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np

from data.images import read_rgb
from data.records import SignRecord

DESCRIPTOR_SIDE = 16
CONTEXT_MARGIN = 0.25


@dataclass(frozen=True)
class TwinRule:
    similarity: float | None  # twins at this cosine anywhere in the collection; None: never
    # Neighbours in shot order: (window, similarity) tiers; sequence numbers at most `window`
    # apart in one series and at least `similarity` alike are twins.
    neighbours: tuple[tuple[int, float], ...]


RULES: dict[str, TwinRule] = {
    "tsrd": TwinRule(similarity=0.8, neighbours=((2, 0.5),)),
    # Consecutive panoramas see the same sign from a few metres further on, which can change
    # its look a lot; panoramas further apart share a sign only when it looks the same.
    "tt100k": TwinRule(similarity=None, neighbours=((5, 0.3), (50, 0.8))),
}
# A validation image counts as a novel sign when no training image of its class is its twin
# even under rules this much looser: wider windows, lower similarities.
NOVELTY_SLACK = 0.15


@cache
def descriptor(record: SignRecord) -> np.ndarray:
    """The record's 16x16 RGB descriptor, zero mean, unit length; kept per record (float16:
    28 MB for TT100K and TSRD together), since splitting and novelty both ask for it."""
    image = read_rgb(record.image_path)
    if record.box is not None:
        x1, y1, x2, y2 = record.box
        dx, dy = CONTEXT_MARGIN * (x2 - x1), CONTEXT_MARGIN * (y2 - y1)
        height, width = image.shape[:2]
        image = image[
            max(0, int(y1 - dy)) : min(height, int(y2 + dy) + 1),
            max(0, int(x1 - dx)) : min(width, int(x2 + dx) + 1),
        ]
    small = cv2.resize(image, (DESCRIPTOR_SIDE,) * 2, interpolation=cv2.INTER_AREA)
    vector = small.astype(np.float32).ravel()
    vector -= vector.mean()
    return (vector / max(float(np.linalg.norm(vector)), 1e-6)).astype(np.float16)


def descriptors(records: Sequence[SignRecord]) -> np.ndarray:
    """[len(records), 768] float32 descriptors."""
    if not records:
        return np.zeros((0, DESCRIPTOR_SIDE**2 * 3), np.float32)
    return np.stack([descriptor(record) for record in records]).astype(np.float32)


def _twin_pairs(
    a: Sequence[SignRecord], b: Sequence[SignRecord], rule: TwinRule, slack: float = 0.0
) -> np.ndarray:
    """Boolean [len(a), len(b)]: which pairs are twins under `rule` (loosened by `slack`)."""
    similarity = descriptors(a) @ descriptors(b).T
    twins = np.zeros(similarity.shape, dtype=bool)
    if rule.similarity is not None:
        twins |= similarity >= rule.similarity - slack
    series_a, numbers_a = _shot_order(a)
    series_b, numbers_b = _shot_order(b)
    same_series = (series_a[:, None] == series_b[None, :]) & (series_a[:, None] >= 0)
    distance = np.abs(numbers_a[:, None] - numbers_b[None, :])
    for window, neighbour_similarity in rule.neighbours:
        near = same_series & (distance <= window * (2 if slack else 1))
        twins |= near & (similarity >= neighbour_similarity - slack)
    return twins


def _shot_order(records: Sequence[SignRecord]) -> tuple[np.ndarray, np.ndarray]:
    """(series code, number) per record as arrays; series code -1 where it has none. Series
    names are hashed to codes, so two lists get comparable codes."""
    series = np.array(
        [hash(r.sequence[0]) & 0x7FFFFFFF if r.sequence else -1 for r in records], dtype=np.int64
    )
    numbers = np.array([r.sequence[1] if r.sequence else 0 for r in records], dtype=np.int64)
    return series, numbers


def _blocks(records: Sequence[SignRecord]) -> dict[tuple[str, int], list[int]]:
    """Indices of the records that twin rules compare: one block per collection and class."""
    blocks: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        if record.origin in RULES:
            blocks[(record.origin, record.class_id)].append(i)
    return blocks


def twin_groups(records: Sequence[SignRecord]) -> list[int]:
    """A group number per record: records joined by identical bytes, by the reader's group
    key, or as near-twins (transitively) share a number."""
    parent = list(range(len(records)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i: int, j: int) -> None:
        parent[find(i)] = find(j)

    first_with: dict[str, int] = {}
    for i, record in enumerate(records):
        for key in (f"sha1:{record.sha1}", record.group):
            if key and key != "sha1:":
                join(i, first_with.setdefault(key, i))
    for (origin, _class_id), indices in _blocks(records).items():
        block = [records[i] for i in indices]
        for a, b in np.argwhere(np.triu(_twin_pairs(block, block, RULES[origin]), 1)):
            join(indices[a], indices[b])
    roots: dict[int, int] = {}
    return [roots.setdefault(find(i), len(roots)) for i in range(len(records))]


def novel(train: Sequence[SignRecord], test: Sequence[SignRecord]) -> list[bool]:
    """Per test record: True when no training record of its class and collection is its
    twin even under loosened rules (`NOVELTY_SLACK`): a sign the model has not seen in
    another photo. Records of collections without twin rules are all novel."""
    result = [True] * len(test)
    train_blocks = _blocks(train)
    for key, test_indices in _blocks(test).items():
        if key not in train_blocks:
            continue
        twins = _twin_pairs(
            [test[i] for i in test_indices],
            [train[i] for i in train_blocks[key]],
            RULES[key[0]],
            slack=NOVELTY_SLACK,
        )
        for row, i in enumerate(test_indices):
            result[i] = not twins[row].any()
    return result
