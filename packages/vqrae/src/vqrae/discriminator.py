"""Adversarial term for stage 2 (card §3, §7): a small PatchGAN, hinge losses, taming's adaptive weight.

    L_D        = ½·[mean(relu(1 − D(x))) + mean(relu(1 + D(x̂)))]     (hinge, with taming's ½)
    L_G        = −mean(D(x̂))
    λ_adaptive = ‖∇_W L_rec‖ / (‖∇_W L_G‖ + δ), clamped to [0, max_weight], detached; W = decoder's last layer weight
    total      = L_rec + λ_G·λ_adaptive·L_G   once ``gan_active(step, start_step)``

The paper does not name its discriminator (card §3: TiTok uses a StyleGAN-like one with LeCam); a PatchGAN with hinge
loss and the adaptive weight follows ``CompVis/taming-transformers`` (``NLayerDiscriminator``, ``hinge_d_loss``,
``calculate_adaptive_weight``, ``adopt_weight``) [our reading]. GroupNorm replaces taming's BatchNorm so that the
discriminator's output does not depend on batch composition.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from shared.errors import ConfigError

__all__ = ["PatchDiscriminator", "adaptive_weight", "gan_active", "hinge_d_loss", "hinge_g_loss"]


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups that divide ``channels``."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix / taming ``NLayerDiscriminator`` layout): image (B, C, H, W) → logits (B, 1, h, w).

        conv4×4/2(C → base), LReLU(0.2)
        for i in 1 … layers−1:  conv4×4/2(base·2^{i−1} → base·2^i), GroupNorm, LReLU(0.2)
        conv4×4/1(→ base·2^layers'), GroupNorm, LReLU(0.2)   (channel multiplier capped at 8)
        conv4×4/1(→ 1)

    Each stride-1 4×4 convolution with padding 1 shrinks the map by one pixel: a 32×32 input with ``layers=2`` gives
    6×6 logits. Weights are initialised N(0, 0.02), GroupNorm scale N(1, 0.02) (taming's ``weights_init``).
    """

    def __init__(self, in_channels: int = 3, base: int = 32, layers: int = 2):
        super().__init__()
        if layers < 1:
            raise ConfigError(f"PatchDiscriminator: layers={layers} must be ≥ 1")
        if base < 1 or in_channels < 1:
            raise ConfigError(f"PatchDiscriminator: base={base} and in_channels={in_channels} must be ≥ 1")
        mods: list[nn.Module] = [nn.Conv2d(in_channels, base, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for i in range(1, layers):
            prev, mult = mult, min(2**i, 8)
            mods += [nn.Conv2d(base * prev, base * mult, 4, 2, 1, bias=False), _norm(base * mult), nn.LeakyReLU(0.2)]
        prev, mult = mult, min(2**layers, 8)
        mods += [nn.Conv2d(base * prev, base * mult, 4, 1, 1, bias=False), _norm(base * mult), nn.LeakyReLU(0.2),
                 nn.Conv2d(base * mult, 1, 4, 1, 1)]
        self.net = nn.Sequential(*mods)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.GroupNorm):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator hinge loss with taming's factor ½: 0.5·(mean(relu(1 − real)) + mean(relu(1 + fake)))."""
    return 0.5 * (torch.relu(1.0 - real_logits).mean() + torch.relu(1.0 + fake_logits).mean())


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    """Generator hinge loss: −mean(D(x̂))."""
    return -fake_logits.mean()


def adaptive_weight(rec_loss: Tensor, g_loss: Tensor, last_layer_weight: Tensor, *, delta: float = 1e-4,
                    max_weight: float = 1e4) -> Tensor:
    """taming's VQGAN rule: λ = clamp(‖∇_W L_rec‖ / (‖∇_W L_G‖ + δ), 0, max_weight), detached.

    W is the decoder's last layer weight (both losses must depend on it). Gradients come from
    ``torch.autograd.grad(..., retain_graph=True)``, so the graph survives for the following ``backward``. The GAN
    weight λ_G (0.1 in stage 2, card §4) multiplies this outside.
    """
    if not last_layer_weight.requires_grad:
        raise ValueError("adaptive_weight: last_layer_weight does not require grad; pass the decoder's last layer "
                         "weight parameter that both losses depend on")
    rec_grad = torch.autograd.grad(rec_loss, last_layer_weight, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer_weight, retain_graph=True)[0]
    weight = rec_grad.norm() / (g_grad.norm() + delta)
    return weight.clamp(0.0, max_weight).detach()


def gan_active(step: int, start_step: int) -> bool:
    """True once ``step ≥ start_step`` (taming's ``adopt_weight``; card §3: 50k for SigLIP2, 30k for InternViT)."""
    return step >= start_step
