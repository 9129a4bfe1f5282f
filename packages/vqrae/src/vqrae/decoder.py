"""The pixel decoder: a ViT mirroring the encoder with a per-token linear head to pixels (card §2, RAE-style).

    Z_bot (B, N, d) → + position embedding → ``depth`` pre-norm blocks → LayerNorm → Linear(d, p·p·3) per token
                    → unpatchify → X′ (B, 3, g·p, g·p)

The token grid is the encoder's (decoder patch size 1 on that grid), so the output resolution equals the input
resolution. No convolutions. The head predicts pixels in [0, 1] directly (no activation; evaluation clamps).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vqrae.vit import Transformer, sincos_2d, unpatchify

__all__ = ["DecoderSpec", "ViTDecoder"]


@dataclass(frozen=True)
class DecoderSpec:
    """Geometry of the decoder: token ``grid`` (gh, gw), pixel ``patch`` p, ``width`` d, ``depth``, ``heads``,
    ``mlp_dim``; a mirror of the encoder unless the config overrides a field."""

    grid: tuple[int, int]
    patch: int
    width: int
    depth: int
    heads: int
    mlp_dim: int
    channels: int = 3


class ViTDecoder(nn.Module):
    """Tokens (B, N, width) → images (B, C, gh·p, gw·p)."""

    def __init__(self, spec: DecoderSpec):
        super().__init__()
        self.spec = spec
        n = spec.grid[0] * spec.grid[1]
        init = sincos_2d(spec.grid, spec.width) if spec.width % 4 == 0 else torch.zeros(n, spec.width)
        self.pos = nn.Parameter(init.clone()[None])
        self.transformer = Transformer(spec.width, spec.depth, spec.heads, spec.mlp_dim)
        self.head = nn.Linear(spec.width, spec.patch * spec.patch * spec.channels)
        with torch.no_grad():
            self.head.bias.fill_(0.5)  # start at mid-grey instead of black

    @property
    def last_layer(self) -> Tensor:
        """The head's weight: where the GAN's adaptive weight compares gradient norms (taming's rule)."""
        return self.head.weight

    def forward(self, tokens: Tensor) -> Tensor:
        s = self.spec
        if tokens.shape[1] != s.grid[0] * s.grid[1] or tokens.shape[2] != s.width:
            raise ValueError(f"decoder expects (B, {s.grid[0] * s.grid[1]}, {s.width}) tokens, got "
                             f"{tuple(tokens.shape)}")
        x = self.transformer(tokens + self.pos)
        return unpatchify(self.head(x), s.grid, s.patch, s.channels)
