import math

import pytest
import torch

from model.entropy import (
    flatten_features,
    gram,
    joint_entropy,
    mutual_information,
    renyi_entropy,
    representation_entropy,
    representation_gram,
    sigma_knn,
)


def far_apart(n: int, distance: float = 10.0) -> torch.Tensor:
    """n points pairwise `distance * sqrt(2)` apart."""
    return torch.eye(n) * distance


def clusters(sizes: list[int], dim: int = 8) -> torch.Tensor:
    """Far-apart clusters of identical points: cluster i holds sizes[i] copies of one point."""
    centres = torch.eye(dim)[: len(sizes)] * 100.0
    return torch.cat(
        [centre.expand(size, dim) for centre, size in zip(centres, sizes, strict=True)]
    )


@pytest.mark.parametrize("offset", [0.0, 5.0, 1000.0])
@pytest.mark.parametrize("n", [2, 6, 33])
def test_identical_rows_have_zero_entropy(n, offset):
    # sigma follows the data's scale, so a collapsed batch must not read rounding as spread.
    torch.manual_seed(n)
    for _ in range(20):
        x = (torch.randn(1, 100) + offset).expand(n, 100)
        assert representation_entropy(x).item() == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("n", [2, 3, 7, 16])
def test_far_apart_points_with_small_sigma_have_log2_n_bits(n):
    assert renyi_entropy(gram(far_apart(n), sigma=0.5)).item() == pytest.approx(math.log2(n))


@pytest.mark.parametrize("alpha", [0.5, 1.01, 2.0])
def test_equal_clusters_give_log2_of_cluster_count_for_any_alpha(alpha):
    # A 0/1 block Gram of m equal blocks has m equal non-zero eigenvalues 1/m.
    x = clusters([3, 3, 3, 3])
    assert representation_entropy(x, alpha=alpha, k=1).item() == pytest.approx(2.0, abs=1e-9)


def test_mutual_information_of_x_with_itself_is_its_entropy_for_a_0_1_gram():
    # I(X;X) = 2 H(K) - H(K∘K), which equals H(X) where K∘K = K: identical or far-apart samples.
    x = clusters([2, 2, 2, 2, 1])
    entropy = representation_entropy(x, k=1)
    assert mutual_information(x, x, k=1).item() == pytest.approx(entropy.item(), abs=1e-9)
    assert entropy.item() > 2.0  # four pairs and a singleton: between log2 4 and log2 5


def test_mutual_information_of_x_with_itself_never_exceeds_its_entropy():
    x = torch.randn(12, 20)
    assert mutual_information(x, x).item() <= representation_entropy(x).item() + 1e-9


def test_joint_entropy_is_symmetric_and_at_least_each_marginal():
    torch.manual_seed(0)
    K_a = representation_gram(torch.randn(10, 32))
    K_b = representation_gram(torch.randn(10, 3, 4, 4))
    joint = joint_entropy(K_a, K_b)
    assert joint.item() == pytest.approx(joint_entropy(K_b, K_a).item(), abs=1e-12)
    assert joint.item() >= max(renyi_entropy(K_a).item(), renyi_entropy(K_b).item())
    assert joint.item() <= math.log2(10) + 1e-9


def test_mutual_information_of_independent_noise_is_below_either_entropy():
    torch.manual_seed(1)
    x, y = torch.randn(16, 8), torch.randn(16, 8)
    information = mutual_information(x, y)
    assert (
        0.0
        <= information.item()
        <= min(representation_entropy(x).item(), representation_entropy(y).item())
    )


def test_entropy_is_invariant_to_feature_scale():
    torch.manual_seed(2)
    x = torch.randn(9, 5)
    assert representation_entropy(100 * x).item() == pytest.approx(
        representation_entropy(x).item(), rel=1e-5
    )


@pytest.mark.parametrize("n", [2, 3, 5])
def test_small_and_odd_batches_stay_within_zero_and_log2_n(n):
    entropy = representation_entropy(torch.randn(n, 4, 3, 3), pool_to=2).item()
    assert 0.0 <= entropy <= math.log2(n) + 1e-9


@pytest.mark.parametrize(
    "x",
    [
        torch.cat([torch.ones(2, 6), torch.randn(4, 6)]),  # two identical samples
        torch.ones(5, 6),  # all identical: sigma hits its floor
    ],
    ids=["two-identical", "all-identical"],
)
def test_gradients_are_finite_even_with_identical_samples(x):
    x = x.clone().requires_grad_(True)
    t = torch.randn(x.shape[0], 3).requires_grad_(True)
    (representation_entropy(x) + mutual_information(t, x)).backward()
    assert torch.isfinite(x.grad).all()
    assert torch.isfinite(t.grad).all()


def test_gradients_are_finite_for_alpha_below_one():
    x = torch.cat([torch.ones(3, 4), torch.randn(3, 4)]).requires_grad_(True)
    representation_entropy(x, alpha=0.5).backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
        (torch.bfloat16, torch.float32),
    ],
)
def test_result_keeps_the_feature_dtype_at_least_float32(dtype, expected):
    x = torch.randn(4, 6).to(dtype)
    assert representation_entropy(x).dtype == expected
    assert mutual_information(x, x).dtype == expected


def test_entropy_under_autocast_is_computed_in_full_precision():
    x = torch.randn(6, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        entropy = representation_entropy(x)
    assert entropy.dtype == torch.float32
    assert entropy.item() == pytest.approx(representation_entropy(x).item(), abs=1e-6)


def test_sigma_is_the_mean_distance_to_the_k_nearest_other_samples():
    x = torch.tensor([[0.0], [1.0], [3.0]])
    # nearest other sample: 1, 1, 2
    assert sigma_knn(x, k=1).item() == pytest.approx(4 / 3)
    # k = 10 is capped at n - 1 = 2: all other samples, distances (1, 3), (1, 2), (3, 2)
    assert sigma_knn(x, k=10).item() == pytest.approx(2.0)


def test_sigma_carries_no_gradient():
    x = torch.randn(5, 3, requires_grad=True)
    assert not sigma_knn(x).requires_grad


def test_pooling_shrinks_large_maps_and_never_enlarges_small_ones():
    assert flatten_features(torch.randn(2, 8, 16, 16), pool_to=4).shape == (2, 8 * 4 * 4)
    assert flatten_features(torch.randn(2, 8, 2, 3), pool_to=4).shape == (2, 8 * 2 * 3)
    assert flatten_features(torch.randn(2, 8, 16, 16)).shape == (2, 8 * 16 * 16)


def test_bad_inputs_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="at least 2 samples"):
        representation_entropy(torch.randn(1, 4))
    with pytest.raises(ValueError, match="alpha"):
        representation_entropy(torch.randn(3, 4), alpha=1.0)
    with pytest.raises(ValueError, match="same batch"):
        mutual_information(torch.randn(3, 4), torch.randn(4, 4))
