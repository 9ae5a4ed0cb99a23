"""Matrix-based Rényi α-order entropy of a batch of representations (Sanchez Giraldo et al.).

The batch is the sample: n representations t_1..t_n give a Gram matrix
K_ij = exp(-||t_i - t_j||^2 / (2 sigma^2)), normalised to A = K / tr(K), and

    H_alpha(A) = log2(sum_i lambda_i(A)^alpha) / (1 - alpha)        [bits]

which lies in [0, log2 n]: 0 when all representations coincide (K is all ones, one non-zero
eigenvalue), log2 n when they are far apart relative to sigma (K is the identity). The joint
entropy of two representations of the same batch uses the Hadamard product K_a ∘ K_b, and
I(X; Y) = H(X) + H(Y) - H(X, Y).

Numerics. Distances, Gram matrices and eigenvalues are computed in float64 with autocast
switched off: the eigenvalues of A sum to 1 and most of them are tiny, so float16/float32
would make the small ones noise. Eigenvalues come from `torch.linalg.eigvalsh` (its backward
needs no eigenvalue gaps, so duplicated samples still give finite gradients) and are clamped
at 0 because rounding makes a few of them slightly negative. Entropies computed from features
come back in the features' dtype (float16/bfloat16 promoted to float32).

Pooling. `pool_to` average-pools spatial maps (N, C, H, W) to at most pool_to x pool_to before
flattening. Early ResNet maps flatten to 10^4-10^5 numbers per sample; there pairwise distances
concentrate (all nearly equal, so the Gram says little about which samples resemble which)
and the n^2·d Gram costs more than it needs to. Pooling to e.g. 4x4 keeps every channel and the
coarse layout. `None` flattens the full map, as in the DIB paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Floor for sigma: when every sample in the batch is identical the k-NN distance is 0, and any
# positive bandwidth gives the right Gram (all ones); the floor only avoids 0/0.
_MIN_SIGMA = 1e-12


def flatten_features(t: Tensor, pool_to: int | None = None) -> Tensor:
    """(n, ...) -> (n, d); spatial maps are first average-pooled to at most pool_to x pool_to."""
    if t.ndim == 4 and pool_to is not None:
        height, width = t.shape[-2:]
        t = F.adaptive_avg_pool2d(t, (min(pool_to, height), min(pool_to, width)))
    return t.flatten(1)


def _sq_distances(x: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances of the rows of x, float64, exact zeros on the diagonal.

    Uses ||a||^2 + ||b||^2 - 2ab (one matmul, no n x n x d difference tensor) on centred rows.
    Centring leaves distances unchanged but removes the shared offset (large for ReLU
    features) before the subtraction cancels it: otherwise the rounding residue between
    identical samples is relative to the raw norms, and since sigma follows the data's scale,
    a collapsed batch would read that residue as spread (measured: up to several bits for
    identical samples instead of 0).
    """
    x = _check_batch(x).flatten(1).double()
    x = x - x.mean(dim=0, keepdim=True)
    sq_norms = (x * x).sum(dim=1)
    sq = (sq_norms[:, None] + sq_norms[None, :] - 2.0 * (x @ x.T)).clamp_min(0.0)
    diagonal = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    return sq.masked_fill(diagonal, 0.0)


def sigma_knn(x: Tensor, k: int = 10) -> Tensor:
    """Kernel width: the mean distance from each sample to its k nearest neighbours.

    Self-distances are excluded and k is capped at n - 1, so any batch of n >= 2 works. The
    rule follows the data's own scale, so the entropy does not change when a layer rescales
    its features. It is computed without gradient (a bandwidth, not something to optimise)
    on x's device; returns a float64 scalar tensor.
    """
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        distances = _sq_distances(x.detach()).sqrt()
        n = distances.shape[0]
        distances.fill_diagonal_(float("inf"))
        nearest = distances.topk(min(k, n - 1), dim=1, largest=False).values
        return nearest.mean().clamp_min(_MIN_SIGMA)


def gram(x: Tensor, sigma: Tensor | float) -> Tensor:
    """Gaussian Gram matrix K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2)) of x's rows, float64."""
    with torch.autocast(x.device.type, enabled=False):
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
        return torch.exp(-_sq_distances(x) / (2.0 * sigma * sigma))


def renyi_entropy(K: Tensor, alpha: float = 1.01) -> Tensor:
    """H_alpha in bits of the Gram matrix K (normalised here by its trace); K's dtype."""
    _check_alpha(alpha)
    with torch.autocast(K.device.type, enabled=False):
        A = K.double() / torch.trace(K.double())
        eigenvalues = torch.linalg.eigvalsh(A).clamp_min(0.0)
        # Zero eigenvalues contribute 0; keeping them out of pow() keeps the gradient finite
        # for alpha < 1, where d(lambda^alpha)/d(lambda) is infinite at 0.
        positive = eigenvalues > 0
        safe = torch.where(positive, eigenvalues, torch.ones_like(eigenvalues))
        power_sum = torch.where(positive, safe**alpha, torch.zeros_like(eigenvalues)).sum()
        return (torch.log2(power_sum) / (1.0 - alpha)).to(K.dtype)


def joint_entropy(K_a: Tensor, K_b: Tensor, alpha: float = 1.01) -> Tensor:
    """H_alpha(A, B) from the Hadamard product K_a ∘ K_b of two Gram matrices of one batch."""
    if K_a.shape != K_b.shape:
        raise ValueError(
            f"Gram matrices of one batch needed, got shapes {K_a.shape} and {K_b.shape}"
        )
    return renyi_entropy(K_a * K_b, alpha)


def representation_gram(t: Tensor, k: int = 10, pool_to: int | None = None) -> Tensor:
    """Gram matrix of a batch of representations with sigma from `sigma_knn` (float64)."""
    x = flatten_features(t, pool_to)
    return gram(x, sigma_knn(x, k))


def representation_entropy(
    t: Tensor, alpha: float = 1.01, k: int = 10, pool_to: int | None = None
) -> Tensor:
    """H_alpha(T) in bits of a batch of representations t (n, ...): the DIB regulariser."""
    entropy = renyi_entropy(representation_gram(t, k, pool_to), alpha)
    return entropy.to(_result_dtype(t))


def mutual_information(
    x: Tensor, y: Tensor, alpha: float = 1.01, k: int = 10, pool_to: int | None = None
) -> Tensor:
    """I_alpha(X; Y) = H(X) + H(Y) - H(X, Y) in bits, for two representations of one batch.

    The `--reg mi` term is mutual_information(T_{k-1}, T_k). Note that I(X; X) =
    2 H(K) - H(K∘K) <= H(X), with equality only where K∘K = K (a 0/1 Gram: samples either
    identical or far apart), because K∘K is the Gram of a narrower kernel.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same batch, got {x.shape[0]} and {y.shape[0]}")
    K_x = representation_gram(x, k, pool_to)
    K_y = representation_gram(y, k, pool_to)
    information = (
        renyi_entropy(K_x, alpha) + renyi_entropy(K_y, alpha) - joint_entropy(K_x, K_y, alpha)
    )
    return information.to(torch.promote_types(_result_dtype(x), _result_dtype(y)))


def label_gram(labels: Tensor) -> Tensor:
    """Gram matrix of class labels, K_ij = [y_i == y_j] (float64): the Gram of one-hot labels
    under any kernel narrower than their spacing. Its H_alpha is the Rényi entropy of the
    class frequencies in the batch, and I_alpha(T; Y) uses it like any other Gram."""
    labels = labels.reshape(-1)
    if labels.shape[0] < 2:
        raise ValueError(f"need a batch of at least 2 labels, got {labels.shape[0]}")
    return (labels[:, None] == labels[None, :]).double()


def information_from_grams(
    K_a: Tensor,
    K_b: Tensor,
    alpha: float = 1.01,
    entropy_a: Tensor | None = None,
    entropy_b: Tensor | None = None,
) -> Tensor:
    """I_alpha(A; B) = H(A) + H(B) - H(A, B) in bits from two Gram matrices of one batch.

    For analysis, where one Gram serves many pairs: pass each marginal entropy once computed
    (`entropy_a`, `entropy_b`) and only the joint entropy of the Hadamard product is new.
    """
    entropy_a = renyi_entropy(K_a, alpha) if entropy_a is None else entropy_a
    entropy_b = renyi_entropy(K_b, alpha) if entropy_b is None else entropy_b
    return entropy_a + entropy_b - joint_entropy(K_a, K_b, alpha)


def information_matrix(grams: list[Tensor], alpha: float = 1.01) -> Tensor:
    """The L x L matrix of I_alpha(T_i; T_j) of L Gram matrices of one batch (float64, bits),
    with H_alpha(T_i) on the diagonal (the Shannon identity I(T; T) = H(T); the estimator's
    own 2 H(K) - H(K∘K) equals it only for 0/1 Grams). Symmetric by construction: each
    marginal entropy is computed once and each joint entropy once per pair."""
    entropies = [renyi_entropy(K, alpha).double() for K in grams]
    matrix = torch.diag(torch.stack(entropies)) if grams else torch.zeros(0, 0)
    for i in range(len(grams)):
        for j in range(i + 1, len(grams)):
            value = information_from_grams(grams[i], grams[j], alpha, entropies[i], entropies[j])
            matrix[i, j] = matrix[j, i] = value
    return matrix


def _check_batch(x: Tensor) -> Tensor:
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(
            f"need a batch of at least 2 samples shaped (n, ...), got {tuple(x.shape)}"
        )
    return x


def _check_alpha(alpha: float) -> None:
    if alpha <= 0 or alpha == 1:
        raise ValueError(f"alpha must be > 0 and != 1 (1 is the Shannon limit), got {alpha}")


def _result_dtype(t: Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)
