"""Which chunks of a trajectory are trained: all, a uniform subset, or GCPO's weighted subset (chunk_grpo.md §6).

As in DanceGRPO only n = ⌊K·f⌋ of the K chunks (at least 1) are trained per sample, f = ``timestep_fraction``
(GCPO: f = 0.5, K = 4 → 2). GCPO's "ws" draws them with weights from the L1rel curve of that sample (Eq. 17):

    m_j = mean_{t ∈ ch_j} L1rel_t,      w_j = m_j / Σ_k m_k   ("normalized", the default)   or   w = softmax(m),

with ``torch.multinomial(w, n, replacement=False)`` per sample, after adding 1e-8 to every m_j as the authors do.
[paper, authors' code: `train_grpo_flux_hpsv3.py`]

Without replacement, w_j is the probability of chunk j being drawn **first**, not of it being trained: for n > 1
the inclusion probability π_j = P(j ∈ S) follows the successive-draw law P(i_1, …, i_n) = Π_r w_{i_r} / (1 −
Σ_{s<r} w_{i_s}) summed over the orderings that contain j (:func:`inclusion_probabilities`), which flattens the
weights (π_j ≤ 1, Σ_j π_j = n). Chunks are returned in high-noise-first order whatever the draw order.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "WEIGHT_METHODS",
    "WEIGHT_EPS",
    "chunk_means",
    "chunk_weights",
    "draw_uniform",
    "draw_weighted",
    "inclusion_probabilities",
    "num_trained",
    "subset_probabilities",
]

WEIGHT_METHODS = ("normalized", "softmax")
WEIGHT_EPS = 1e-8
"""Added to every chunk mean before normalising (authors' code: ``weights = chunk_weights + 1e-8``)."""


def num_trained(num_chunks: int, fraction: float) -> int:
    """n = max(1, ⌊K·f⌋): how many of K chunks one sample trains (DanceGRPO's ``int(K * timestep_fraction)``,
    raised to 1 so that every sample trains something)."""
    if not isinstance(num_chunks, int) or num_chunks < 1:
        raise ValueError(f"num_chunks must be a positive int, got {num_chunks!r}")
    if not (isinstance(fraction, int | float) and 0 < fraction <= 1):
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    return max(1, int(num_chunks * fraction))


def chunk_means(curve: Tensor | Sequence[float], sizes: Sequence[int]) -> Tensor:
    """m_j = mean of ``curve`` over chunk j (Eq. 17), (K,) float64; ``curve`` has one value per trained step and may
    be longer than Σ sizes (the untrained tail is ignored)."""
    c = torch.as_tensor(curve).detach().cpu().to(torch.float64).reshape(-1)
    total = sum(sizes)
    if total > c.numel():
        raise ValueError(f"chunks cover {total} steps but the curve has {c.numel()} values")
    return torch.stack([part.mean() for part in torch.split(c[:total], list(sizes))])


def chunk_weights(means: Tensor, method: str = "normalized") -> Tensor:
    """Eq. 17: (K,) chunk means → (K,) selection weights summing to 1. ``normalized``: (m + ε)/Σ(m + ε);
    ``softmax``: softmax(m) (nearly uniform for L1rel values ≪ 1, the paper's note on softmax)."""
    m = torch.as_tensor(means).detach().cpu().to(torch.float64).reshape(-1)
    if not torch.isfinite(m).all() or (m < 0).any():
        raise ValueError(f"chunk means must be finite and >= 0 (L1rel values), got {m.tolist()}")
    w = m + WEIGHT_EPS
    if method == "normalized":
        return w / w.sum()
    if method == "softmax":
        return torch.softmax(w, dim=0)
    raise ValueError(f"method must be one of {WEIGHT_METHODS}, got {method!r}")


def draw_weighted(weights: Tensor, count: int, generator: torch.Generator | None = None) -> list[int]:
    """``count`` distinct chunk indices drawn by ``torch.multinomial(weights, count, replacement=False)``, returned
    sorted (high noise first)."""
    w = torch.as_tensor(weights).detach().cpu().to(torch.float64).reshape(-1)
    if not 1 <= count <= w.numel():
        raise ValueError(f"count must be in [1, {w.numel()}], got {count}")
    idx = torch.multinomial(w, count, replacement=False, generator=generator)
    return sorted(idx.tolist())


def draw_uniform(num_chunks: int, count: int, generator: torch.Generator | None = None) -> list[int]:
    """``count`` distinct chunk indices, uniformly (the first ``count`` of a random permutation, as DanceGRPO /
    GCPO without ws), returned sorted."""
    if not 1 <= count <= num_chunks:
        raise ValueError(f"count must be in [1, {num_chunks}], got {count}")
    return sorted(torch.randperm(num_chunks, generator=generator)[:count].tolist())


def subset_probabilities(weights: Tensor | Sequence[float], count: int) -> dict[tuple[int, ...], float]:
    """Exact P(S) of every ``count``-subset S (as a sorted tuple) under successive weighted draws without
    replacement, by enumerating the orderings: P(i_1..i_n) = Π_r w_{i_r} / (1 − Σ_{s<r} w_{i_s}). K!/(K−n)!
    orderings, so for small K only (tests, docs)."""
    w = [float(x) for x in torch.as_tensor(weights, dtype=torch.float64).reshape(-1)]
    total = sum(w)
    w = [x / total for x in w]
    out: dict[tuple[int, ...], float] = {}
    for order in itertools.permutations(range(len(w)), count):
        p, used = 1.0, 0.0
        for i in order:
            p *= w[i] / (1.0 - used)
            used += w[i]
        key = tuple(sorted(order))
        out[key] = out.get(key, 0.0) + p
    return out


def inclusion_probabilities(weights: Tensor | Sequence[float], count: int) -> list[float]:
    """π_j = P(chunk j is among the ``count`` drawn) = Σ_{S ∋ j} P(S); Σ_j π_j = count. Equals the weights for
    count = 1 and all ones for count = K."""
    k = len(torch.as_tensor(weights).reshape(-1))
    pi = [0.0] * k
    for subset, p in subset_probabilities(weights, count).items():
        for j in subset:
            pi[j] += p
    return pi
