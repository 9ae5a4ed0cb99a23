"""SignDataset's lazy decoding: the same items as eager decoding, a bounded cache, and errors
that still name the file."""

from __future__ import annotations

import pickle
from dataclasses import replace

import pytest
import torch

import data.dataset as dataset_module
from data.dataset import SignDataset
from data.load import load_dataset
from data.records import DataError
from data.synth import generate_synthetic

SIZE = 32


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, per_class=1, seed=5)
    return load_dataset(root).records[:24]


def _same(a, b) -> bool:
    pairs = zip(a, b, strict=True)
    return all(torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y for x, y in pairs)


@pytest.mark.parametrize("train", [True, False])
def test_lazy_and_eager_give_the_same_items(records, train):
    seed = 7 if train else None
    eager = SignDataset(records, SIZE, train=train, seed=seed, decode="eager")
    lazy = SignDataset(records, SIZE, train=train, seed=seed, decode="lazy", cache_mb=0.05)
    assert not eager.lazy and lazy.lazy
    n = len(records)
    # In any order and epoch, and for a second draw of a record (index + n).
    for epoch in (0, 3):
        eager.set_epoch(epoch)
        lazy.set_epoch(epoch)
        for i in [*range(n), *reversed(range(2 * n))]:
            assert _same(eager[i], lazy[i]), (epoch, i)
    # A DataLoader worker started with "spawn" gets a pickled copy.
    copy = pickle.loads(pickle.dumps(lazy))
    assert _same(copy[5], eager[5])


def test_auto_decodes_lazily_above_the_limit(records, monkeypatch):
    monkeypatch.setattr(dataset_module, "LAZY_ABOVE", len(records) - 1)
    assert SignDataset(records, SIZE, train=False).lazy
    assert not SignDataset(records[:-1], SIZE, train=False).lazy
    with pytest.raises(ValueError, match="decode must be one of"):
        SignDataset(records, SIZE, train=False, decode="sometimes")


def test_the_cache_is_bounded_and_serves_repeats(records, monkeypatch):
    decoded = []
    decode = dataset_module._decode

    def counting(record, longest_side):
        decoded.append(record.image_path)
        return decode(record, longest_side)

    monkeypatch.setattr(dataset_module, "_decode", counting)
    one = decode(records[0], 2 * SIZE)
    room = 3 * (one.image.nbytes + one.mask.nbytes + one.box.nbytes)
    lazy = SignDataset(records, SIZE, train=True, seed=1, decode="lazy", cache_mb=room / 2**20)
    assert decoded == []  # nothing is read up front
    for i in range(len(records)):
        lazy[i]
    assert len(decoded) == len(records)
    assert 0 < lazy._cache.bytes <= lazy._cache.max_bytes and len(lazy._cache) <= 4
    lazy[len(records) - 1]  # the most recent one is still there
    assert len(decoded) == len(records)
    lazy[0]  # long gone
    assert len(decoded) == len(records) + 1


def test_a_bad_file_fails_when_drawn_naming_it(records, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    bad = [*records[:2], replace(records[2], image_path=broken)]
    with pytest.raises(DataError, match="broken.png"):
        SignDataset(bad, SIZE, train=False, decode="eager")
    lazy = SignDataset(bad, SIZE, train=False, decode="lazy")
    lazy[0]
    with pytest.raises(DataError, match="broken.png"):
        lazy[2]
