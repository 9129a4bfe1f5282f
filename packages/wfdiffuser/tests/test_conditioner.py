"""Conditioners: the public code's nominal attention (card §3 item 4) and our STFT cross attention (card §4)."""

from __future__ import annotations

import math

import pytest
import torch

from wfdiffuser.conditioner import FourierResidualMLP, STFTCrossAttentionConditioner, StateEmbeddingConditioner
from wfdiffuser.wavelets import DWT1d


def test_state_embedding_shapes() -> None:
    cond = StateEmbeddingConditioner(11, dim=32, hidden=64)
    out = cond(torch.randn(5, 11))
    assert cond.out_dim == 32 and len(out) == 2 and all(o.shape == (5, 32) for o in out)
    with pytest.raises(ValueError, match=r"s0 must have shape \(B, 11\)"):
        cond(torch.randn(5, 1, 11))


def test_state_embedding_inputs_are_the_haar_pad1_first_pair() -> None:
    cond = StateEmbeddingConditioner(4, dim=8, hidden=16)
    window = torch.randn(3, 30, 4)
    low, high = DWT1d().forward(window)
    c_low, c_high = cond.band_inputs(window[:, 0])
    torch.testing.assert_close(c_low[:, 0], low[:, 0])
    torch.testing.assert_close(c_high[:, 0], high[:, 0])


def test_fft_over_length_one_axis_is_identity() -> None:
    """Axis 1 has length 1: FFT = identity, phase ∈ {0, π}; the block is x + m(|x|)·cos(p(∠x))."""
    torch.manual_seed(0)
    block = FourierResidualMLP(6, 16)
    x = torch.randn(4, 1, 6)
    angle = torch.where(x < 0, torch.full_like(x, math.pi), torch.zeros_like(x))
    expected = x + block.magnitude_mlp(x.abs()) * torch.cos(block.phase_mlp(angle))
    torch.testing.assert_close(block(x), expected)


def test_attention_weight_is_exactly_one_and_query_key_do_not_matter() -> None:
    torch.manual_seed(0)
    cond = StateEmbeddingConditioner(5, dim=16, hidden=32)
    s0 = 3.0 * torch.randn(6, 5)
    cross_low, cross_high, probs = cond.attend(s0)
    assert probs.shape == (6, 1, 1) and torch.all(probs == 1.0)
    # cross_b = v(mlp_b(fourier_b(c_b))): computed without query/key at all
    c_low, c_high = cond.band_inputs(s0)
    torch.testing.assert_close(cross_low, cond.value_proj(cond.low_mlp(cond.fourier_low(c_low)))[:, 0])
    torch.testing.assert_close(cross_high, cond.value_proj(cond.high_mlp(cond.fourier_high(c_high)))[:, 0])
    with torch.no_grad():  # re-drawing query/key weights changes nothing
        for p in [*cond.query_proj.parameters(), *cond.key_proj.parameters()]:
            p.normal_(0, 5.0)
    after = cond(s0)
    torch.testing.assert_close(after[0], cross_low)
    torch.testing.assert_close(after[1], cross_high)


def test_state_embedding_depends_on_s0_per_sample_only() -> None:
    cond = StateEmbeddingConditioner(3, dim=8, hidden=16)
    s0 = torch.randn(4, 3)
    full = cond(s0)
    single = cond(s0[2:3])
    torch.testing.assert_close(full[0][2:3], single[0])
    assert not torch.allclose(cond(s0 + 1.0)[0], full[0])


def test_stft_conditioner_shapes_and_cross_dependence() -> None:
    torch.manual_seed(0)
    cond = STFTCrossAttentionConditioner(channels=3, length=16, dim=16, n_fft=8, hop=2, heads=2)
    low, high = torch.randn(2, 16, 3), torch.randn(2, 16, 3)
    out = cond([low, high])
    assert cond.out_dim == 16 and [o.shape for o in out] == [(2, 16), (2, 16)]
    # the low band's output depends on the high band (low queries high) and vice versa
    out_new_high = cond([low, high + torch.randn_like(high)])
    assert not torch.allclose(out_new_high[0], out[0])
    out_new_low = cond([low + torch.randn_like(low), high])
    assert not torch.allclose(out_new_low[1], out[1])
    low_g = low.clone().requires_grad_(True)
    cond([low_g, high])[1].sum().backward()
    assert low_g.grad is not None and low_g.grad.abs().sum() > 0


def test_stft_conditioner_multiband_and_phase() -> None:
    dwt = DWT1d("db2", 2, "zero")
    bands = dwt.forward(torch.randn(2, 30, 3))
    lengths = [b.shape[1] for b in bands]
    cond = STFTCrossAttentionConditioner(3, lengths, dim=8, n_fft=8, hop=2, phase=True)
    assert cond.n_bands == 3
    out = cond(bands)
    assert [o.shape for o in out] == [(2, 8)] * 3


def test_stft_conditioner_validation() -> None:
    with pytest.raises(ValueError, match="n_fft=16 is too long"):
        STFTCrossAttentionConditioner(3, 8, n_fft=16)
    with pytest.raises(ValueError, match="heads=3 must divide dim=16"):
        STFTCrossAttentionConditioner(3, 16, dim=16, n_fft=8, heads=3)
    cond = STFTCrossAttentionConditioner(3, 16, dim=8, n_fft=8, hop=2)
    with pytest.raises(ValueError, match=r"bands\[1\] must have shape \(B, 16, 3\)"):
        cond([torch.randn(1, 16, 3), torch.randn(1, 12, 3)])
