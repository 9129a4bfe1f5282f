"""Temporal U-Net shapes, validation and the public parameter count; embeddings (card §3, §5)."""

from __future__ import annotations

import math

import pytest
import torch

from wfdiffuser.embeddings import ReturnEmbedding, SinusoidalPosEmb, TimeEmbedding
from wfdiffuser.unet import TemporalUnet


def _n_params(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def test_shapes_and_embedding_changes_output() -> None:
    torch.manual_seed(0)
    net = TemporalUnet(3, dim=16, dim_mults=(1, 2, 4), emb_dim=24)
    x = torch.randn(2, 16, 3)
    emb = torch.randn(2, 24)
    out = net(x, emb)
    assert out.shape == x.shape
    assert not torch.allclose(out, net(x, emb + 1.0))
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_length_error_names_nearest_valid_lengths() -> None:
    net = TemporalUnet(3, dim=16, dim_mults=(1, 4, 8), emb_dim=16)
    net.check_length(48)
    with pytest.raises(ValueError, match=r"length 51 .* multiple of 4.*nearest valid lengths: 48 or 52"):
        net(torch.randn(1, 51, 3), torch.randn(1, 16))
    with pytest.raises(ValueError, match="nearest valid lengths: 4"):
        net.check_length(2)
    assert TemporalUnet(3, dim=16, dim_mults=(1,), emb_dim=16)(torch.randn(1, 7, 3), torch.randn(1, 16)).shape == (
        1,
        7,
        3,
    )


def test_groups_must_divide_channels() -> None:
    with pytest.raises(ValueError, match=r"groups=8 must divide every GroupNorm channel count \[12, 24\]"):
        TemporalUnet(3, dim=12, dim_mults=(1, 2), emb_dim=8, groups=8)
    TemporalUnet(3, dim=12, dim_mults=(1, 2), emb_dim=8, groups=4)
    with pytest.raises(ValueError, match="kernel_size"):
        TemporalUnet(3, dim=16, kernel_size=4)


def test_input_shape_errors() -> None:
    net = TemporalUnet(3, dim=8, dim_mults=(1, 2), emb_dim=8)
    with pytest.raises(ValueError, match=r"x must have shape \(B, L, 3\)"):
        net(torch.randn(1, 8, 4), torch.randn(1, 8))
    with pytest.raises(ValueError, match="emb must have shape"):
        net(torch.randn(1, 8, 3), torch.randn(1, 9))


def test_public_config_has_60_6m_parameters_per_band() -> None:
    """Card §3: dim 128, mults (1, 4, 8), d_s = 11, 384-d embedding (time 128 + return 128 + cross 128): 60.6 M."""
    with torch.device("meta"):
        net = TemporalUnet(11, dim=128, dim_mults=(1, 4, 8), emb_dim=384)
        time_emb, ret_emb = TimeEmbedding(128), ReturnEmbedding(128)
    total = _n_params(net, time_emb, ret_emb)
    assert round(total / 1e6, 1) == 60.6, total


def test_sinusoidal_embedding_values() -> None:
    emb = SinusoidalPosEmb(8)(torch.tensor([0.0, 3.0]))
    freqs = [10000 ** (-k / 3) for k in range(4)]
    expected = [[math.sin(3 * f) for f in freqs] + [math.cos(3 * f) for f in freqs]]
    torch.testing.assert_close(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    torch.testing.assert_close(emb[1:], torch.tensor(expected))


def test_time_embedding_shape() -> None:
    assert TimeEmbedding(16)(torch.arange(5)).shape == (5, 16)
    with pytest.raises(ValueError, match="even"):
        TimeEmbedding(15)


def test_return_embedding_drop_mask_zeroes_rows() -> None:
    torch.manual_seed(0)
    emb = ReturnEmbedding(8)
    y = torch.rand(4, 1)
    drop = torch.tensor([True, False, True, False])
    out = emb(y, drop)
    full = emb(y)
    assert torch.all(out[drop] == 0)
    torch.testing.assert_close(out[~drop], full[~drop])
    assert torch.all(full[drop] != 0)
    with pytest.raises(ValueError, match=r"returns must have shape \(B, 1\)"):
        emb(torch.rand(4))
    with pytest.raises(ValueError, match="drop_mask"):
        emb(y, torch.zeros(4))
