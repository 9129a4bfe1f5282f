"""L1rel (Eq. 16) on hand-built latents, and its group / batch pooling."""

from __future__ import annotations

import pytest
import torch

from chunk_grpo.l1rel import EPS, batch_mean, curve_stats, group_mean, l1rel, pooled


def test_l1rel_by_hand():
    # sample 0: x0 = [[1,−1],[2,−2]] (mean|x| 1.5), x1 = x0 + 1 = [[2,0],[3,−1]] (change 1, mean|x| 1.5),
    #           x2 = 3·x1 = [[6,0],[9,−3]] (change mean |2x1| = 3) → L1rel = [1/1.5, 3/1.5]
    # sample 1: constant 4, then 4 → 2 → 2: L1rel = [0, 2/4]
    x0 = torch.tensor([[1.0, -1.0], [2.0, -2.0]])
    s0 = torch.stack([x0, x0 + 1, 3 * (x0 + 1)])
    s1 = torch.stack([torch.full((2, 2), 4.0), torch.full((2, 2), 4.0), torch.full((2, 2), 2.0)])
    out = l1rel(torch.stack([s0, s1]))  # (B=2, T+1=3, 2, 2) → (2, 2)
    expected = torch.tensor([[1 / (1.5 + EPS), 3 / (1.5 + EPS)], [0.0, 2 / (4 + EPS)]])
    assert out.shape == (2, 2) and torch.allclose(out, expected)


def test_l1rel_packed_latents_and_shape_errors():
    lat = torch.randn(3, 5, 7, 4)  # Flux-style packed (seq, C)
    assert l1rel(lat).shape == (3, 4)
    with pytest.raises(ValueError, match="T\\+1 >= 2"):
        l1rel(torch.randn(2, 1, 4))
    with pytest.raises(ValueError, match="shape"):
        l1rel(torch.randn(2, 3))


def test_group_and_batch_means():
    v = torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 20.0], [30.0, 40.0]])
    ids = torch.tensor([1, 0, 1, 0])  # groups need not be contiguous
    g = group_mean(v, ids)
    assert torch.equal(g, torch.tensor([[5.5, 11.0], [16.5, 22.0], [5.5, 11.0], [16.5, 22.0]]))
    assert torch.equal(batch_mean(v), torch.tensor([[11.0, 16.5]] * 4))
    assert torch.equal(pooled(v, ids, "trajectory"), v)
    assert torch.equal(pooled(v, ids, "group"), g)
    mean, std = curve_stats(v[:2])
    assert torch.equal(mean, torch.tensor([2.0, 3.0])) and torch.equal(std, torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match="scope"):
        pooled(v, ids, "prompt")
    with pytest.raises(ValueError, match="entries"):
        group_mean(v, ids[:3])
