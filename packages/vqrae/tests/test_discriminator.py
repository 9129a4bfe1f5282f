"""PatchGAN shape and normalisation, hinge losses by hand, taming's adaptive weight vs hand-computed gradient norms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vqrae.discriminator import PatchDiscriminator, adaptive_weight, gan_active, hinge_d_loss, hinge_g_loss


@pytest.mark.parametrize(("layers", "side"), [(1, 14), (2, 6), (3, 2)])
def test_patch_discriminator_output_shape(layers: int, side: int) -> None:
    d = PatchDiscriminator(in_channels=3, base=8, layers=layers)
    out = d(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 1, side, side)


def test_patch_discriminator_in_channels_and_no_batchnorm() -> None:
    d = PatchDiscriminator(in_channels=1, base=8, layers=2)
    assert d(torch.rand(3, 1, 32, 24)).shape == (3, 1, 6, 4)  # 24 → 12 → 6 → 5 → 4
    assert any(isinstance(m, nn.GroupNorm) for m in d.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in d.modules())
    assert sum(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in d.modules()) == 3


def test_patch_discriminator_is_per_sample_in_train_mode() -> None:
    # GroupNorm: a sample's logits do not depend on the rest of the batch (BatchNorm would fail this)
    d = PatchDiscriminator(base=8, layers=2).train()
    x = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(d(x)[:1], d(x[:1]), atol=1e-5, rtol=1e-5)


def test_patch_discriminator_bad_layers() -> None:
    with pytest.raises(ValueError, match="layers"):
        PatchDiscriminator(layers=0)


def test_hinge_losses_hand_values() -> None:
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.0])
    # relu(1 − real) = (0, 0.5, 2) → 5/6;  relu(1 + fake) = (0, 1, 2) → 1;  ½·(5/6 + 1) = 11/12
    assert hinge_d_loss(real, fake).item() == pytest.approx(11 / 12)
    assert hinge_g_loss(fake).item() == pytest.approx(1 / 3)  # −mean(−2, 0, 1)
    assert hinge_d_loss(torch.full((4,), 5.0), torch.full((4,), -5.0)).item() == 0.0  # both margins satisfied


def _tiny_decoder() -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    layer = nn.Linear(3, 2, bias=False)
    x = torch.tensor([[1.0, -2.0, 0.5]])
    t = torch.tensor([[0.3, -0.7]])
    return layer, x, t


def test_adaptive_weight_matches_hand_gradient_norms() -> None:
    layer, x, t = _tiny_decoder()
    out = layer(x)
    rec = (out - t).pow(2).sum()
    g = 3.0 * out.sum()
    w = layer.weight.detach()
    grad_rec = 2 * (x @ w.T - t).T @ x  # ∂/∂W Σ(Wx − t)² = 2(Wx − t)xᵀ
    grad_g = 3.0 * torch.ones(2, 1) @ x  # ∂/∂W 3·Σ Wx = 3·1xᵀ
    expected = grad_rec.norm() / (grad_g.norm() + 1e-4)
    got = adaptive_weight(rec, g, layer.weight)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert not got.requires_grad
    (rec + got * g).backward()  # the graph was retained
    assert layer.weight.grad is not None


def test_adaptive_weight_delta_and_clamp() -> None:
    layer, x, t = _tiny_decoder()
    out = layer(x)
    rec = (out - t).pow(2).sum()
    g_zero = 0.0 * out.sum()  # ‖∇L_G‖ = 0 → ratio ‖∇L_rec‖ / δ
    n_rec = torch.autograd.grad(rec, layer.weight, retain_graph=True)[0].norm().item()
    assert adaptive_weight(rec, g_zero, layer.weight, delta=1.0).item() == pytest.approx(n_rec, rel=1e-6)
    assert adaptive_weight(rec, g_zero, layer.weight).item() == pytest.approx(1e4)  # clamped at max_weight
    assert adaptive_weight(rec, g_zero, layer.weight, max_weight=7.0).item() == pytest.approx(7.0)


def test_adaptive_weight_needs_a_grad_parameter() -> None:
    layer, x, t = _tiny_decoder()
    out = layer(x)
    with pytest.raises(ValueError, match="last_layer_weight"):
        adaptive_weight(out.sum(), out.sum(), torch.zeros(2, 3))


def test_gan_active() -> None:
    assert not gan_active(9, 10)
    assert gan_active(10, 10)
    assert gan_active(11, 10)
    assert gan_active(0, 0)
