"""Diffusion-step and return embeddings of the Janner / Decision Diffuser U-Net (card §3, §7).

The public code builds both inside ``TemporalUnet``; here they are separate modules so one embedding can be shared
and the U-Net takes a ready (B, emb_dim) vector. The band embedding is concat[time, return, cross] (card §3: 384-d).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["ReturnEmbedding", "SinusoidalPosEmb", "TimeEmbedding"]


def _check_dim(dim: int, name: str = "dim") -> None:
    if not isinstance(dim, int) or dim < 4 or dim % 2:
        raise ValueError(f"{name}={dim!r} must be an even integer ≥ 4")


class SinusoidalPosEmb(nn.Module):
    """t (B,) → [sin(t·ω_k), cos(t·ω_k)]_k (B, dim), ω_k = 10000^(−k/(dim/2 − 1)), k = 0..dim/2 − 1 (Janner)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        _check_dim(dim)
        self.dim = dim

    def forward(self, t: Tensor) -> Tensor:
        if t.ndim != 1:
            raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}")
        half = self.dim // 2
        k = torch.arange(half, device=t.device, dtype=torch.get_default_dtype())
        freqs = torch.exp(k * (-math.log(10000.0) / (half - 1)))
        arg = t.to(freqs.dtype)[:, None] * freqs[None, :]
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


class TimeEmbedding(nn.Module):
    """Diffusion step t (B,) → (B, dim): sinusoid(dim) → Linear(dim, 4·dim) → Mish → Linear(4·dim, dim)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        _check_dim(dim)
        self.dim = dim
        self.out_dim = dim
        self.mlp = nn.Sequential(SinusoidalPosEmb(dim), nn.Linear(dim, dim * 4), nn.Mish(), nn.Linear(dim * 4, dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(t)


class ReturnEmbedding(nn.Module):
    """Return label y (B, 1) → (B, dim): Linear(1, dim) → Mish → Linear(dim, 4·dim) → Mish → Linear(4·dim, dim).

    ``drop_mask`` (B,) bool zeroes the embedding where True: DD's null condition ∅ = zeroed return embedding, used
    for the Bernoulli(p_drop) dropout in training and for the unconditional classifier-free-guidance pass.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim={dim!r} must be a positive integer")
        self.dim = dim
        self.out_dim = dim
        self.mlp = nn.Sequential(
            nn.Linear(1, dim), nn.Mish(), nn.Linear(dim, dim * 4), nn.Mish(), nn.Linear(dim * 4, dim)
        )

    def forward(self, returns: Tensor, drop_mask: Tensor | None = None) -> Tensor:
        if returns.ndim != 2 or returns.shape[1] != 1:
            raise ValueError(f"returns must have shape (B, 1), got {tuple(returns.shape)}")
        emb = self.mlp(returns)
        if drop_mask is None:
            return emb
        if drop_mask.shape != (returns.shape[0],) or drop_mask.dtype != torch.bool:
            raise ValueError(
                f"drop_mask must be a bool tensor of shape ({returns.shape[0]},), got {drop_mask.dtype} "
                f"{tuple(drop_mask.shape)}"
            )
        return emb * (~drop_mask).to(emb.dtype)[:, None]
