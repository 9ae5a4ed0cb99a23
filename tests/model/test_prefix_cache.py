"""The sequential schedule's prefix cache: what it stores is what the frozen modules give, a
run with it resumes exactly, and it refuses what it cannot serve."""

from __future__ import annotations

import pytest
import torch

from model.checkpoint import load_file
from model.greedy import network_for
from model.network import NetConfig
from model.options import get_args_parser
from model.prefix_cache import PrefixCache, bytes_per_image
from model.train import load_data, main, make_loaders

SIZE = 32


def _args(data, out, *extra):
    return get_args_parser().parse_args(
        [
            *("--data", str(data), "--out", str(out), "--image-size", str(SIZE)),
            *("--epochs", "2", "--batch-size", "16", "--workers", "0", *extra),
        ]
    )


def _cache(tiny_synthetic, tmp_path):
    args = _args(tiny_synthetic, tmp_path / "unused")
    data = load_data(args)
    loader, _ = make_loaders(data, args)
    torch.manual_seed(0)
    model = network_for("greedy-dib", NetConfig(image_size=SIZE, num_classes=len(data.label_names)))
    model.train()
    return PrefixCache(loader, model, torch.device("cpu")), model


def test_stored_prefix_is_what_the_frozen_modules_give(tiny_synthetic, tmp_path):
    cache, model = _cache(tiny_synthetic, tmp_path)
    cache.set_epoch(0, 0)  # module 1 draws the epoch: images, no prefix
    first = list(cache)
    assert len(first) == len(cache) and all(len(batch) == 5 for batch in first)
    stored = cache.bytes_stored()
    assert stored > 0

    cache.set_epoch(0, 2)  # module 3: T_2 through the frozen modules 1 and 2
    third = list(cache)
    assert [len(batch) for batch in third] == [6] * len(first)
    for (images, masks, labels, *_), (images3, masks3, labels3, *_, prefix) in zip(
        first, third, strict=True
    ):
        assert torch.equal(images, images3) and torch.equal(labels, labels3)
        assert torch.equal(masks, masks3)
        expected = model.stage_input(2, images)
        assert prefix.shape == expected.shape
        assert (prefix - expected).abs().max() <= 1e-2 * expected.abs().max()
    assert cache.bytes_stored() > stored  # T_2 is now kept beside the images

    # A cache that never saw the epoch (a resumed run) draws it and gives the same T_2.
    fresh, _ = _cache(tiny_synthetic, tmp_path)
    fresh.model.load_state_dict(model.state_dict())
    fresh.set_epoch(0, 2)
    assert all(
        torch.equal(a[-1], b[-1]) and torch.equal(a[0], b[0])
        for a, b in zip(third, list(fresh), strict=True)
    )

    # The heads phase reads the stored images; it never asks a module to go backwards.
    cache.set_epoch(0, None)
    assert all(len(batch) == 5 for batch in cache)
    cache.set_epoch(0, 1)
    with pytest.raises(RuntimeError, match="wants less"):
        list(cache)


def test_bytes_per_image_counts_image_mask_and_largest_prefix():
    model = network_for("greedy-dib", NetConfig(image_size=SIZE))
    # The stem's stride-2 output, 64 x 16 x 16 at 32 px, is the largest T_k below the top.
    assert bytes_per_image(model, SIZE) == 2 * (3 * SIZE * SIZE + SIZE * SIZE + 64 * 16 * 16)
    # A scene model's targets are two maps, sign pixels and cores.
    scenes = network_for("greedy-dib", NetConfig(image_size=SIZE, seg_channels=2))
    assert bytes_per_image(scenes, SIZE) == 2 * (3 * SIZE * SIZE + 2 * SIZE * SIZE + 64 * 16 * 16)
    # It runs where the model lives (train moves it to the GPU first); meta stands in here.
    on_cpu = bytes_per_image(model, SIZE)
    assert bytes_per_image(model.to("meta"), SIZE) == on_cpu


def test_cached_run_resumes_exactly_and_only_where_it_applies(
    tiny_synthetic, tmp_path, monkeypatch
):
    monkeypatch.setenv("GREEDYSIGN_RUNS", str(tmp_path))
    straight = main(_args(tiny_synthetic, tmp_path / "straight", "--cache-prefix"))
    assert 0 <= straight["accuracy"] <= 1
    out = tmp_path / "resumed"
    assert main(_args(tiny_synthetic, out, "--cache-prefix", "--stop-after", "module2")) == {}
    main(_args(tiny_synthetic, out, "--cache-prefix", "--resume"))
    a = load_file(tmp_path / "straight" / "model.pt")["model"]
    b = load_file(out / "model.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)

    for flags in (["--schedule", "simultaneous"], ["--method", "sgd"]):
        with pytest.raises(SystemExit, match="sequential schedule"):
            main(_args(tiny_synthetic, tmp_path / "x", "--cache-prefix", *flags))
