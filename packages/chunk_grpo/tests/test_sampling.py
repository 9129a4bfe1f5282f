"""Weighted chunk sampling (Eq. 17): weights, draws without replacement, exact inclusion probabilities, chi-square."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from scipy.stats import chisquare

from chunk_grpo.sampling import (
    chunk_means,
    chunk_weights,
    draw_uniform,
    draw_weighted,
    inclusion_probabilities,
    num_trained,
    subset_probabilities,
)

N = 20_000  # draws per frequency test; a wrong law of this size is rejected with p ≪ 1e-6
ALPHA = 1e-3


def test_num_trained_is_floor_with_at_least_one():
    assert num_trained(4, 0.5) == 2  # GCPO: 2 of [2, 3, 4, 7]
    assert num_trained(4, 1.0) == 4
    assert num_trained(3, 0.5) == 1
    assert num_trained(4, 0.1) == 1  # ⌊0.4⌋ = 0, raised to 1
    with pytest.raises(ValueError, match="fraction"):
        num_trained(4, 0.0)


def test_chunk_means_and_weights_by_hand():
    curve = [0.4, 0.2, 0.3, 0.1, 0.1, 0.1, 0.9]  # the last value lies outside the chunks and is ignored
    m = chunk_means(curve, [2, 1, 3])
    assert torch.allclose(m, torch.tensor([0.3, 0.3, 0.1], dtype=torch.float64))
    w = chunk_weights(m, "normalized")  # (m + 1e-8) / Σ: [3/7, 3/7, 1/7] up to 1e-8
    assert torch.allclose(w, torch.tensor([3 / 7, 3 / 7, 1 / 7], dtype=torch.float64), atol=1e-7)
    s = chunk_weights(m, "softmax")  # e^.3 / (2e^.3 + e^.1) etc.; the +1e-8 shift cancels
    z = 2 * math.exp(0.3) + math.exp(0.1)
    assert torch.allclose(s, torch.tensor([math.exp(0.3) / z, math.exp(0.3) / z, math.exp(0.1) / z],
                                          dtype=torch.float64))
    with pytest.raises(ValueError, match="method"):
        chunk_weights(m, "uniform")
    with pytest.raises(ValueError, match=">= 0"):
        chunk_weights(torch.tensor([0.1, -0.2]))


def test_softmax_is_flatter_than_normalized_for_small_l1rel():
    m = torch.tensor([0.3, 0.2, 0.1, 0.05])
    norm, soft = chunk_weights(m, "normalized"), chunk_weights(m, "softmax")
    assert norm.max() / norm.min() == pytest.approx(6.0, rel=1e-6)  # 0.3 / 0.05
    assert soft.max() / soft.min() == pytest.approx(math.exp(0.25), rel=1e-6)  # ≈ 1.28
    assert torch.allclose(soft.sum(), torch.tensor(1.0, dtype=torch.float64))


def test_exact_subset_and_inclusion_probabilities_by_hand():
    # w = [.5, .3, .2], two draws without replacement:
    # P{0,1} = .5·.3/.5 + .3·.5/.7 = .3 + .2142857…;  P{0,2} = .5·.2/.5 + .2·.5/.8 = .2 + .125;
    # P{1,2} = .3·.2/.7 + .2·.3/.8 = .0857142… + .075.  π_j sums the subsets containing j; Σ π = 2.
    p = subset_probabilities([0.5, 0.3, 0.2], 2)
    assert p[(0, 1)] == pytest.approx(0.3 + 0.15 / 0.7)
    assert p[(0, 2)] == pytest.approx(0.325)
    assert p[(1, 2)] == pytest.approx(0.06 / 0.7 + 0.075)
    pi = inclusion_probabilities([0.5, 0.3, 0.2], 2)
    assert pi == pytest.approx([p[(0, 1)] + p[(0, 2)], p[(0, 1)] + p[(1, 2)], p[(0, 2)] + p[(1, 2)]])
    assert sum(pi) == pytest.approx(2.0)
    assert inclusion_probabilities([0.5, 0.3, 0.2], 1) == pytest.approx([0.5, 0.3, 0.2])
    assert inclusion_probabilities([0.5, 0.3, 0.2], 3) == pytest.approx([1.0, 1.0, 1.0])


def _subset_counts(weights, count, n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Counter(tuple(draw_weighted(weights, count, gen)) for _ in range(n))


def test_single_draw_frequencies_match_the_weights():
    w = chunk_weights(torch.tensor([0.4, 0.3, 0.2, 0.1]), "normalized")
    counts = _subset_counts(w, 1, N)
    obs = [counts[(j,)] for j in range(4)]
    assert chisquare(obs, [N * float(x) for x in w]).pvalue > ALPHA


def test_softmax_draw_frequencies_match_softmax_not_normalized():
    m = torch.tensor([0.9, 0.5, 0.2, 0.1])
    soft, norm = chunk_weights(m, "softmax"), chunk_weights(m, "normalized")
    counts = _subset_counts(soft, 1, N, seed=1)
    obs = [counts[(j,)] for j in range(4)]
    assert chisquare(obs, [N * float(x) for x in soft]).pvalue > ALPHA
    assert chisquare(obs, [N * float(x) for x in norm]).pvalue < 1e-6


@pytest.mark.parametrize(("weights", "count"), [([0.5, 0.3, 0.2], 2), ([0.5, 0.25, 0.15, 0.1], 2),
                                                ([0.4, 0.3, 0.2, 0.1], 3)])
def test_without_replacement_matches_the_enumerated_law_not_the_naive_one(weights, count):
    # f > 1/K: the chosen subsets follow the successive-draw law (chi-square over all K-choose-n subsets) ...
    exact = subset_probabilities(weights, count)
    counts = _subset_counts(torch.tensor(weights), count, N, seed=2)
    assert set(counts) <= set(exact)
    keys = sorted(exact)
    assert chisquare([counts[k] for k in keys], [N * exact[k] for k in keys]).pvalue > ALPHA
    # ... so each chunk's inclusion frequency is π_j, not the naive n·w_j (which can even exceed 1)
    incl = [sum(c for k, c in counts.items() if j in k) for j in range(len(weights))]
    pi = inclusion_probabilities(weights, count)
    assert all(abs(incl[j] / N - pi[j]) < 0.015 for j in range(len(weights)))
    naive = [count * w for w in weights]
    assert max(abs(incl[j] / N - naive[j]) for j in range(len(weights))) > 0.05


def test_draws_are_sorted_distinct_and_reproducible():
    w = torch.tensor([0.1, 0.2, 0.3, 0.4])
    a = [draw_weighted(w, 3, torch.Generator().manual_seed(5)) for _ in range(3)]
    assert a[0] == a[1] == a[2] and a[0] == sorted(set(a[0])) and len(a[0]) == 3
    u = draw_uniform(6, 3, torch.Generator().manual_seed(5))
    assert u == sorted(set(u)) and len(u) == 3 and all(0 <= j < 6 for j in u)
    with pytest.raises(ValueError, match="count"):
        draw_weighted(w, 5)


def test_uniform_draws_are_uniform_over_subsets():
    gen = torch.Generator().manual_seed(3)
    counts = Counter(tuple(draw_uniform(4, 2, gen)) for _ in range(N // 2))
    assert len(counts) == 6
    assert chisquare([counts[k] for k in sorted(counts)], [N / 2 / 6] * 6).pvalue > ALPHA
