"""nearest_code: equals cdist + argmin (chunk boundaries, float64, bf16 upcast), ties → lowest index, no grad,
errors."""

from __future__ import annotations

import pytest
import torch

from vqrae.quantizers import nearest_code


def _data(m: int, k: int, e: int, seed: int = 0, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, e, generator=g, dtype=dtype), torch.randn(k, e, generator=g, dtype=dtype)


@pytest.mark.parametrize("chunk", [1, 7, 23, 24, 4096])
def test_equals_cdist_argmin_across_chunk_boundaries(chunk):
    z, codes = _data(23, 50, 6)
    ref = torch.cdist(z, codes)
    idx, dist = nearest_code(z, codes, chunk=chunk)
    assert idx.dtype == torch.long and idx.shape == (23,)
    assert torch.equal(idx, ref.argmin(1))
    torch.testing.assert_close(dist, ref.min(1).values.pow(2), rtol=1e-10, atol=1e-10)


def test_float32_random_data_matches_cdist():
    z, codes = _data(300, 128, 16, seed=1, dtype=torch.float32)
    idx, dist = nearest_code(z, codes, chunk=64)
    assert dist.dtype == torch.float32
    assert torch.equal(idx, torch.cdist(z.double(), codes.double()).argmin(1))


def test_bf16_inputs_are_upcast_to_float32():
    z, codes = _data(200, 64, 16, seed=2, dtype=torch.float32)
    zb, cb = z.bfloat16(), codes.bfloat16()
    idx, dist = nearest_code(zb, cb, chunk=50)
    assert dist.dtype == torch.float32
    exact = torch.cdist(zb.double(), cb.double()).pow(2)  # the bf16 values, measured exactly
    top2 = exact.topk(2, dim=1, largest=False).values
    clear = (top2[:, 1] - top2[:, 0]) > 1e-4  # rows without a near-tie
    assert clear.float().mean() > 0.9
    assert torch.equal(idx[clear], exact.argmin(1)[clear])
    torch.testing.assert_close(dist.double(), exact.gather(1, idx[:, None]).squeeze(1), rtol=1e-5, atol=1e-5)
    # a bf16 computation of the distances would lose these digits: ‖z − c‖² is not a bf16-representable value
    assert not torch.equal(dist, dist.bfloat16().float())


def test_ties_go_to_the_lowest_index():
    codes = torch.tensor([[3.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    z = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 5.0]])
    idx, dist = nearest_code(z, codes)
    # (0,0): codes 1, 2, 3 all at distance 1 → 1; (1,0): duplicates 1 and 3 → 1; (0,5): 1, 2, 3 all at 26 → 1
    assert idx.tolist() == [1, 1, 1]
    assert dist.tolist() == [1.0, 0.0, 26.0]


def test_no_gradient_and_empty_input():
    z, codes = _data(5, 4, 3)
    z.requires_grad_(True)
    codes.requires_grad_(True)
    idx, dist = nearest_code(z, codes)
    assert not dist.requires_grad
    idx0, dist0 = nearest_code(z[:0], codes)
    assert idx0.shape == (0,) and dist0.shape == (0,)


def test_errors_name_the_problem():
    z, codes = _data(5, 4, 3)
    with pytest.raises(ValueError, match="same e"):
        nearest_code(z, codes[:, :2])
    with pytest.raises(ValueError, match="chunk"):
        nearest_code(z, codes, chunk=0)
