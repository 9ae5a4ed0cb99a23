"""Information analysis: the estimator's known properties on constructed data, the probe batch,
one network's cross-MI matrix, and the convergence matrix from encoder snapshots."""

import math
import re

import pytest
import torch

from model.analysis import (
    Settings,
    analyze_model,
    analyze_run,
    analyze_snapshots,
    layer_names,
    probe_batch,
    to_json,
    write_report,
)
from model.checkpoint import ModelFileError
from model.entropy import (
    information_from_grams,
    information_matrix,
    label_gram,
    renyi_entropy,
    representation_gram,
)
from model.network import NetConfig, SignNet
from model.snapshots import (
    list_snapshots,
    load_snapshot,
    save_snapshot,
    snapshot_model,
    stage_status,
)

N = 64


def grams_of(*features: torch.Tensor) -> list[torch.Tensor]:
    return [representation_gram(f) for f in features]


def mi(a: torch.Tensor, b: torch.Tensor, **kwargs) -> float:
    K_a, K_b = grams_of(a, b)
    return information_from_grams(K_a, K_b, **kwargs).item()


def entropy(x: torch.Tensor) -> float:
    return renyi_entropy(representation_gram(x)).item()


def cluster_codes(assignment: torch.Tensor, dim: int = 16) -> torch.Tensor:
    """One far-apart point per cluster id: a representation whose Gram is exactly 0/1."""
    return torch.eye(dim)[assignment] * 100.0


# ------------------------------------------------------------------ estimator properties


def test_information_of_a_representation_with_itself_is_its_entropy():
    torch.manual_seed(0)
    # The matrix holds H on its diagonal for any representation ...
    features = [torch.randn(N, 8), torch.randn(N, 3, 4, 4), torch.rand(N, 32)]
    matrix = information_matrix(grams_of(*features))
    for i, f in enumerate(features):
        assert matrix[i, i].item() == pytest.approx(entropy(f), abs=1e-12)
    # ... and the estimator's own I(T; T) = 2 H(K) - H(K∘K) equals H(T) for a 0/1 Gram.
    codes = cluster_codes(torch.arange(N) % 5)
    K = representation_gram(codes, k=1)
    assert information_from_grams(K, K).item() == pytest.approx(renyi_entropy(K).item(), abs=1e-9)
    assert renyi_entropy(K).item() > 2.0


@pytest.mark.parametrize("noise", [0.0, 0.1, 1.0, 10.0])
@pytest.mark.parametrize("alpha", [0.5, 1.01, 2.0])
def test_information_never_exceeds_either_entropy(noise, alpha):
    torch.manual_seed(1)
    a = torch.randn(N, 10)
    b = torch.tanh(a @ torch.randn(10, 6)) + noise * torch.randn(N, 6)
    K_a, K_b = grams_of(a, b)
    information = information_from_grams(K_a, K_b, alpha).item()
    bound = min(renyi_entropy(K_a, alpha).item(), renyi_entropy(K_b, alpha).item())
    assert 0.0 <= information <= bound + 1e-9


def test_information_matrix_is_symmetric_and_bounded():
    torch.manual_seed(2)
    x = torch.randn(N, 12)
    features = [x, x + 0.3 * torch.randn(N, 12), torch.relu(x), torch.randn(N, 5)]
    matrix = information_matrix(grams_of(*features))
    assert torch.equal(matrix, matrix.T)
    for i in range(len(features)):
        for j in range(len(features)):
            assert matrix[i, j] <= min(matrix[i, i], matrix[j, j]) + 1e-9


def test_independent_cluster_labels_share_no_information():
    # A 4 x 4 factorial design: every (a, b) pair equally often, so the joint Gram is the
    # product of the marginals' block structures: H(A, B) = H(A) + H(B) exactly.
    a, b = torch.arange(N) % 4, (torch.arange(N) // 4) % 4
    K_a, K_b = label_gram(a), label_gram(b)
    assert information_from_grams(K_a, K_b).item() == pytest.approx(0.0, abs=1e-9)
    assert information_from_grams(K_a, K_a).item() == pytest.approx(2.0, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_independent_noise_shares_no_information_beyond_chance(seed):
    # For continuous data at small n the raw value has a floor (H(A, B) <= log2 n gives
    # I >= H(A) + H(B) - log2 n): "small" means at the chance level, i.e. what the same data
    # give with the pairing destroyed by shuffling one side, far below dependent data.
    torch.manual_seed(seed)
    n = 128
    x, y = torch.randn(n, 8), torch.randn(n, 8)
    noisy_copy = x + 0.1 * torch.randn(n, 8)
    chance = mi(x, y[torch.randperm(n)])
    assert mi(x, y) == pytest.approx(chance, abs=0.15)
    assert mi(x, noisy_copy) > chance + 0.4
    assert mi(x, noisy_copy[torch.randperm(n)]) == pytest.approx(chance, abs=0.15)


def test_information_is_invariant_to_permuting_samples_consistently():
    torch.manual_seed(4)
    x = torch.randn(N, 6)
    y = x[:, :3] ** 2 + 0.5 * torch.randn(N, 3)
    labels = torch.randint(0, 5, (N,))
    perm = torch.randperm(N)
    for a, b in ((x, y), (x, x)):
        assert mi(a[perm], b[perm]) == pytest.approx(mi(a, b), abs=1e-9)
    K_x, K_y = representation_gram(x), label_gram(labels)
    K_xp, K_yp = representation_gram(x[perm]), label_gram(labels[perm])
    assert information_from_grams(K_xp, K_yp).item() == pytest.approx(
        information_from_grams(K_x, K_y).item(), abs=1e-9
    )


def test_label_gram_entropy_is_the_renyi_entropy_of_class_frequencies():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2, 2])
    alpha = 2.0
    expected = math.log2(sum(p**alpha for p in (0.25, 0.25, 0.5))) / (1 - alpha)
    assert renyi_entropy(label_gram(labels), alpha).item() == pytest.approx(expected)


# --------------------------------------------------------------------- the analysis


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from data.synth import generate_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, per_class=2, seed=0)
    return root


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return SignNet(NetConfig(image_size=32), with_aux=False).eval()


@pytest.fixture(scope="module")
def probe(synthetic):
    return probe_batch(synthetic, 32, {"test_fraction": 0.5, "seed": 0}, probe_images=24)


def test_probe_is_seeded_capped_and_from_the_held_out_side(synthetic, probe):
    again = probe_batch(synthetic, 32, {"test_fraction": 0.5, "seed": 0}, probe_images=24)
    assert torch.equal(probe.images, again.images) and torch.equal(probe.labels, again.labels)
    # No held-out hashes recorded: the split is cut again, and not called held-out.
    assert probe.images.shape == (24, 3, 32, 32) and probe.subset == "recut"
    other = probe_batch(synthetic, 32, {"test_fraction": 0.5}, probe_images=24, seed=1)
    assert not torch.equal(probe.images, other.images)
    everything = probe_batch(synthetic, 32, {"test_fraction": 0.5}, probe_images=1000)
    assert len(everything) == 58  # the held-out side holds fewer: all of it


def test_probe_takes_the_held_out_images_the_model_records(synthetic):
    from data.load import load_dataset

    held_out = [record.sha1 for record in load_dataset(synthetic).records[::10]]
    probe = probe_batch(synthetic, 32, {"test_sha1": held_out, "seed": 3}, probe_images=100)
    assert len(probe) == len(held_out) == 12 and probe.subset == "test" and not probe.note


def test_probe_falls_back_to_all_images_when_nothing_is_held_out(synthetic):
    probe = probe_batch(synthetic, 32, {"test_fraction": 0.0}, probe_images=1000)
    assert probe.subset == "all" and len(probe) == 116 and "held-out" in probe.note


def test_a_probe_too_small_for_the_kernel_is_refused(synthetic, tiny_model):
    """Up to knn + 1 images every kernel width falls back to the mean of all distances (with
    two, every entropy of every layer came out 0.713 bits)."""
    small = probe_batch(synthetic, 32, {"test_fraction": 0.5}, probe_images=11)
    with pytest.raises(ValueError, match="too few for kernel widths from 10 neighbours \\(each"):
        analyze_model(tiny_model, small, Settings())
    assert len(analyze_model(tiny_model, small, Settings(knn=9)).entropy) == 4


@pytest.mark.parametrize(("units", "count"), [("modules", 4), ("blocks", 9)])
def test_layer_analysis_has_one_symmetric_bounded_matrix(tiny_model, probe, units, count):
    info = analyze_model(tiny_model, probe, Settings(units=units))
    assert info.layers == layer_names(tiny_model, units)[0] and len(info.layers) == count
    matrix = torch.tensor(info.cross_mi, dtype=torch.float64)
    assert matrix.shape == (count, count) and torch.equal(matrix, matrix.T)
    assert matrix.diagonal().tolist() == info.entropy
    top = math.log2(len(probe)) + 1e-9
    assert all(0 <= v <= top for v in info.entropy + info.mi_input + info.mi_label)
    assert all(v <= info.entropy_label + 1e-9 for v in info.mi_label)
    assert all(v == pytest.approx(1.0) for v in torch.tensor(info.cross_mi_normalized).diag())


def test_module_names_follow_the_split(tiny_model):
    assert layer_names(tiny_model)[0] == ["stem", "layer1", "layer2+layer3", "layer4"]
    k2 = SignNet(NetConfig(image_size=32, split="k2"), with_aux=False)
    assert layer_names(k2) == (["stem+layer1.0", "layer1.1+layer2+layer3+layer4"], [0, 1])


def test_layer_analysis_is_invariant_to_the_probe_order(tiny_model, probe):
    from model.analysis import Probe

    perm = torch.randperm(len(probe), generator=torch.Generator().manual_seed(5))
    shuffled = Probe(probe.images[perm], probe.labels[perm], probe.subset, probe.data)
    a, b = analyze_model(tiny_model, probe), analyze_model(tiny_model, shuffled)
    for key in ("cross_mi", "mi_input", "mi_label"):
        assert torch.tensor(getattr(a, key)) == pytest.approx(
            torch.tensor(getattr(b, key)), abs=1e-6
        )


# ------------------------------------------------------------------------ snapshots


def test_stage_status_says_what_an_epoch_means_for_each_module():
    assert stage_status("module2", 4) == ["frozen", "training", "init", "init"]
    assert stage_status("heads", 4) == ["frozen"] * 4
    assert stage_status("aux-heads", 4) == ["frozen"] * 4  # a fine-tune's warm-up
    assert stage_status("modules", 4) == ["training"] * 4
    assert stage_status("sgd", 4) == ["training"] * 4
    assert stage_status("init", 4) == ["init"] * 4


def test_snapshot_keeps_only_the_encoder_in_float16(tmp_path):
    torch.manual_seed(0)
    model = SignNet(NetConfig(image_size=32))  # with aux heads, as greedy training has it
    path = save_snapshot(model, tmp_path, "module1", 3, 3)
    assert path == tmp_path / "snapshots" / "epoch-0003.pt"
    snapshot = load_snapshot(path)
    assert (snapshot.phase, snapshot.epoch, snapshot.global_epoch) == ("module1", 3, 3)
    assert snapshot.stage_status == ["training", "init", "init", "init"]
    assert set(snapshot.encoder) == set(model.stages.state_dict())
    assert all(v.dtype == torch.float16 for v in snapshot.encoder.values() if v.is_floating_point())
    restored = snapshot_model(snapshot)
    for name, value in model.stages.state_dict().items():
        assert torch.allclose(restored.stages.state_dict()[name].float(), value.float(), atol=1e-2)


@pytest.mark.parametrize(
    "content",
    [b"", bytes(range(256)) * 4, None],
    ids=["empty", "random bytes", "a list"],
)
def test_a_file_that_is_no_snapshot_is_a_model_file_error_naming_it(tmp_path, content):
    """It was the UnpicklingError or EOFError of torch.load, a traceback out of analyze."""
    path = tmp_path / "epoch-0001.pt"
    if content is None:
        torch.save([1, 2], path)
    else:
        path.write_bytes(content)
    with pytest.raises(ModelFileError, match=f"^{re.escape(str(path))}: not a GreedySign"):
        load_snapshot(path)
    with pytest.raises(FileNotFoundError):
        load_snapshot(tmp_path / "epoch-0002.pt")


@pytest.mark.parametrize("alpha", [math.nan, math.inf, 1.0, 0.0, -1.0])
def test_settings_refuse_an_alpha_the_estimator_does_not_take(alpha):
    """NaN passed the old check and made a report of NaN."""
    with pytest.raises(ValueError, match="alpha must be"):
        Settings(alpha=alpha)


def test_snapshot_callback_saves_every_n_epochs_and_each_phase_end(tmp_path):
    from types import SimpleNamespace

    from model.snapshots import snapshot_callback

    model = SignNet(NetConfig(image_size=32, split="k2"))
    on_epoch_end = snapshot_callback(2, tmp_path)
    done = 0
    for name, epochs in (("module1", 3), ("module2", 3), ("heads", 2)):
        for epoch in range(1, epochs + 1):
            done += 1
            on_epoch_end(model, SimpleNamespace(name=name, epochs=epochs), epoch, done)
    saved = [load_snapshot(path) for path in list_snapshots(tmp_path)]
    assert [(s.phase, s.epoch, s.global_epoch) for s in saved] == [
        ("module1", 2, 2),
        ("module1", 3, 3),
        ("module2", 1, 4),
        ("module2", 3, 6),
    ]
    with pytest.raises(ValueError, match="positive"):
        snapshot_callback(0, tmp_path)


def _greedy_run(run_dir):
    """Snapshots of a mock greedy run with K = 2 modules: the initial weights, then one epoch
    per module, each changing only that module."""
    torch.manual_seed(0)
    model = SignNet(NetConfig(image_size=32, split="k2"))
    save_snapshot(model, run_dir, "init", 0, 0)
    for k in range(model.num_stages):
        with torch.no_grad():
            for p in model.stages[k].parameters():
                p.add_(torch.randn_like(p) * p.std().clamp_min(0.05))
        save_snapshot(model, run_dir, f"module{k + 1}", 1, k + 1)
    return model


def test_convergence_matrix_from_snapshots(tmp_path, probe):
    _greedy_run(tmp_path)
    assert [p.name for p in list_snapshots(tmp_path)] == [f"epoch-{e:04d}.pt" for e in range(3)]
    final, convergence = analyze_snapshots(tmp_path, probe)
    L, E = 2, 3
    for key in ("mi_to_final", "chance_to_final", "mi_to_final_normalized", "status"):
        matrix = getattr(convergence, key)
        assert len(matrix) == L and all(len(row) == E for row in matrix)
    assert convergence.training == "greedy" and "init" in convergence.epoch_meaning
    normalized = torch.tensor(convergence.mi_to_final_normalized, dtype=torch.float64)
    # The last snapshot is the final encoder: every layer at 1.
    assert normalized[:, -1] == pytest.approx(torch.ones(L), abs=1e-9)
    # Module 1 is done after its phase (snapshot 1): T_1 is the final one from then on.
    assert normalized[0, 1:] == pytest.approx(torch.ones(E - 1), abs=1e-9)
    assert normalized[0, 0] < 0.99
    assert convergence.status == [["init", "training", "frozen"], ["init", "init", "training"]]
    assert convergence.mi_to_final[1][-1] == pytest.approx(convergence.self_mi_final[1])
    assert final.layers == convergence.layers == ["stem+layer1.0", "layer1.1+layer2+layer3+layer4"]


def test_run_analysis_writes_json_and_figures(tmp_path, synthetic):
    run = tmp_path / "run"
    _greedy_run(run)
    info, convergence = analyze_run(run, synthetic, Settings(units="blocks"), probe_images=16)
    written = write_report(tmp_path / "report", info, convergence)
    names = {path.name for path in written}
    assert {"analysis.json", "cross_mi.png", "convergence.png"} <= names
    assert all(path.stat().st_size > 0 for path in written)
    result = to_json(info, convergence)
    assert len(result["convergence"]["mi_to_final"]) == 9
    assert result["convergence"]["global_epochs"] == [0, 1, 2]
    assert result["convergence"]["status"][8] == ["init", "init", "training"]


def test_run_without_snapshots_is_refused(tmp_path, probe):
    with pytest.raises(FileNotFoundError, match="snapshot-every"):
        analyze_snapshots(tmp_path, probe)


def test_a_simultaneous_run_is_named_as_such(tmp_path, probe):
    """The simultaneous schedule trains every module each epoch, like SGD, but greedily."""
    torch.manual_seed(0)
    model = SignNet(NetConfig(image_size=32, split="k2"))
    save_snapshot(model, tmp_path, "init", 0, 0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_snapshot(model, tmp_path, "modules", 1, 1)
    _, convergence = analyze_snapshots(tmp_path, probe)
    assert convergence.training == "greedy simultaneous"
    assert "no gradient crosses" in convergence.epoch_meaning
