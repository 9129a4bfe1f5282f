"""VQRAE: encoder → projection → SimVQ → projection → ViT decoder (card §2).

    Z_I = E(X)                      (B, N, d)  continuous features, used directly for understanding
    Ẑ_c = Z_I · P_in                (B, N, e)  e = codebook dim (the paper: 1536 ≥ d = 1152)
    Z_q, ids = Q(Ẑ_c)               nearest effective code, straight-through (vqrae.quantizers)
    Z_bot = Z_q · P_out             (B, N, d)  back to the decoder width
    X′ = D(Z_bot)                   (B, 3, H, W)

``noise_tau`` > 0 adds RAE's decoder-input noise z + σ·ε, σ ~ U(0, τ) per image, in training only (whether VQRAE
keeps it is unknown, card §6; off by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vqrae.decoder import ViTDecoder
from vqrae.quantizers import QuantizerOutput

__all__ = ["VQRAE", "VQRAEOutput"]


@dataclass
class VQRAEOutput:
    """``recon`` X′, ``features`` Z_I (continuous), ``quant`` the quantizer's output (codes, ids, losses)."""

    recon: Tensor
    features: Tensor
    quant: QuantizerOutput


class VQRAE(nn.Module):
    def __init__(self, encoder: nn.Module, quantizer: nn.Module, decoder: ViTDecoder, *, noise_tau: float = 0.0,
                 init_to_codebook_scale: bool = True):
        super().__init__()
        self.encoder = encoder
        self.quantizer = quantizer
        self.decoder = decoder
        width, dim = int(encoder.width), int(quantizer.dim)
        if decoder.spec.grid != tuple(encoder.grid):
            raise ValueError(f"decoder grid {decoder.spec.grid} differs from the encoder's {tuple(encoder.grid)}")
        self.quant_in = nn.Linear(width, dim)
        self.quant_out = nn.Linear(dim, decoder.spec.width)
        if init_to_codebook_scale:
            # [our reading] start Ẑ_c on the codebook's scale: unit-variance encoder tokens (post-LayerNorm in every
            # supported encoder) map to per-element std 1/√e, the std of SimVQ's Gaussian codes. With PyTorch's
            # default init Ẑ_c is ~6× longer than every code at e = 96, the nearest code is decided by direction
            # alone and a handful of codes take all tokens (measured: 5 % utilisation after 700 tiny-preset steps).
            nn.init.normal_(self.quant_in.weight, std=1.0 / math.sqrt(width * dim))
            nn.init.zeros_(self.quant_in.bias)
        self.noise_tau = float(noise_tau)

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.encoder.grid)

    @property
    def codebook_size(self) -> int:
        return int(self.quantizer.codebook_size)

    def features(self, images: Tensor) -> Tensor:
        """Z_I: the encoder's continuous patch tokens (what understanding uses; no quantisation error)."""
        return self.encoder(images)

    def quantize(self, features: Tensor) -> QuantizerOutput:
        return self.quantizer(self.quant_in(features))

    def decode_codes(self, codes: Tensor) -> Tensor:
        """Quantised vectors (B, N, e) → images; adds the decoder-input noise when training with noise_tau > 0."""
        z = self.quant_out(codes)
        if self.training and self.noise_tau > 0:
            sigma = torch.rand(z.shape[0], 1, 1, device=z.device, dtype=z.dtype) * self.noise_tau
            z = z + sigma * torch.randn_like(z)
        return self.decoder(z)

    def forward(self, images: Tensor) -> VQRAEOutput:
        z = self.features(images)
        q = self.quantize(z)
        return VQRAEOutput(recon=self.decode_codes(q.quantized), features=z, quant=q)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images (B, 3, H, W) in [0, 1] → token ids (B, gh, gw), row-major."""
        ids = self.quantize(self.features(images)).indices
        return ids.reshape(ids.shape[0], *self.grid)

    @torch.no_grad()
    def decode(self, ids: Tensor) -> Tensor:
        """Token ids (B, gh, gw) or (B, N) → images in [0, 1]."""
        ids = ids.reshape(ids.shape[0], -1).long()
        if ids.shape[1] != self.grid[0] * self.grid[1]:
            raise ValueError(f"{ids.shape[1]} ids per image do not fill the {self.grid[0]}×{self.grid[1]} grid")
        if (ids < 0).any() or (ids >= self.codebook_size).any():
            raise ValueError(f"token ids must lie in [0, {self.codebook_size})")
        was = self.training
        self.eval()
        out = self.decode_codes(self.quantizer.lookup(ids)).clamp(0, 1)
        self.train(was)
        return out
