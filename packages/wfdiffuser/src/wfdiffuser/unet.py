"""Janner / Decision Diffuser temporal U-Net over (B, L, C) sequences (card §3, §5, §6).

Channels: [C, dim·m_1, …, dim·m_n]. Each resolution has two residual blocks; every level but the last downsamples
(Conv1d k=3, stride 2: L → ⌈L/2⌉); two mid blocks; the decoder concatenates the skip, runs two residual blocks and
upsamples (ConvTranspose1d k=4, stride 2: L → 2L); a final Conv1d(k)+GroupNorm+Mish block and a 1×1 conv to C.
A residual block is  h = Block(x) + Linear(Mish(emb));  out = Block(h) + Conv1x1(x)  with
Block = Conv1d(k, padding k//2) → GroupNorm(groups) → Mish. Skip shapes line up only when L is divisible by
2**(len(dim_mults) − 1) (card §5); ``check_length`` says so with the nearest valid lengths.
The embedding is passed in ready-made (the public code builds time/return embeddings inside; see ``embeddings``), and
there is no unused ``cond`` argument.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["Conv1dBlock", "ResidualTemporalBlock", "TemporalUnet"]


class Conv1dBlock(nn.Module):
    """Conv1d(in, out, k, padding=k//2) → GroupNorm(groups, out) → Mish."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(groups, out_channels),
            nn.Mish(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class ResidualTemporalBlock(nn.Module):
    """out = Block₂(Block₁(x) + Linear(Mish(emb))) + Conv1x1(x) (identity when in == out channels)."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [
                Conv1dBlock(in_channels, out_channels, kernel_size, groups),
                Conv1dBlock(out_channels, out_channels, kernel_size, groups),
            ]
        )
        self.emb_mlp = nn.Sequential(nn.Mish(), nn.Linear(emb_dim, out_channels))
        self.residual_conv = (
            nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.blocks[0](x) + self.emb_mlp(emb)[:, :, None]
        return self.blocks[1](h) + self.residual_conv(x)


class TemporalUnet(nn.Module):
    """ε-network ε_θ(x, emb): x (B, L, channels), emb (B, emb_dim) → (B, L, channels).

    Args:
        channels: per-step feature count (d_s for state diffusion).
        dim: base width; level widths are dim·m for m in dim_mults.
        dim_mults: width multipliers; len(dim_mults) − 1 downsamplings.
        emb_dim: width of the conditioning vector added in every residual block (None → dim).
        kernel_size: odd temporal kernel of the residual-block convolutions (5 in Janner/DD).
        groups: GroupNorm groups; must divide dim and every dim·m.
    """

    def __init__(
        self,
        channels: int,
        dim: int = 32,
        dim_mults: Sequence[int] = (1, 2, 4),
        emb_dim: int | None = None,
        kernel_size: int = 5,
        groups: int = 8,
    ) -> None:
        super().__init__()
        emb_dim = dim if emb_dim is None else emb_dim
        for name, value in (("channels", channels), ("dim", dim), ("emb_dim", emb_dim), ("groups", groups)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        dim_mults = tuple(dim_mults)
        if not dim_mults or any(not isinstance(m, int) or m < 1 for m in dim_mults):
            raise ValueError(f"dim_mults={dim_mults!r} must be a non-empty sequence of positive integers")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size!r} must be a positive odd integer (padding k//2 keeps L)")
        widths = sorted({dim, *(dim * m for m in dim_mults)})
        bad = [w for w in widths if w % groups]
        if bad:
            ok = [g for g in range(1, min(widths) + 1) if all(w % g == 0 for w in widths)]
            raise ValueError(
                f"groups={groups} must divide every GroupNorm channel count {widths} (dim={dim}, "
                f"dim_mults={dim_mults}); {bad} are not divisible. Choose groups in {ok} or change dim"
            )
        self.channels = channels
        self.dim = dim
        self.dim_mults = dim_mults
        self.emb_dim = emb_dim
        self.kernel_size = kernel_size
        self.groups = groups

        dims = [channels, *(dim * m for m in dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:], strict=True))
        n_res = len(in_out)

        def block(i: int, o: int) -> ResidualTemporalBlock:
            return ResidualTemporalBlock(i, o, emb_dim, kernel_size, groups)

        self.downs = nn.ModuleList()
        for ind, (d_in, d_out) in enumerate(in_out):
            is_last = ind >= n_res - 1
            down = nn.Conv1d(d_out, d_out, 3, stride=2, padding=1) if not is_last else nn.Identity()
            self.downs.append(nn.ModuleList([block(d_in, d_out), block(d_out, d_out), down]))
        mid = dims[-1]
        self.mid_block1 = block(mid, mid)
        self.mid_block2 = block(mid, mid)
        self.ups = nn.ModuleList()
        for d_in, d_out in reversed(in_out[1:]):
            up = nn.ConvTranspose1d(d_in, d_in, 4, stride=2, padding=1)
            self.ups.append(nn.ModuleList([block(d_out * 2, d_in), block(d_in, d_in), up]))
        self.final_conv = nn.Sequential(
            Conv1dBlock(dim, dim, kernel_size, groups),
            nn.Conv1d(dim, channels, 1),
        )

    @property
    def down_factor(self) -> int:
        """Total downsampling 2**(len(dim_mults) − 1); sequence lengths must be multiples of it."""
        return 2 ** (len(self.dim_mults) - 1)

    def check_length(self, length: int) -> None:
        """Raise ValueError unless ``length`` is a positive multiple of ``down_factor`` (card §5)."""
        f = self.down_factor
        if isinstance(length, int) and length >= f and length % f == 0:
            return
        lower = (length // f) * f if isinstance(length, int) else 0
        options = [n for n in (lower, lower + f) if n >= f]
        raise ValueError(
            f"sequence length {length!r} must be a positive multiple of {f} = 2**(len(dim_mults) - 1) "
            f"(dim_mults={self.dim_mults} downsample {len(self.dim_mults) - 1} times and the skip shapes must match); "
            f"nearest valid lengths: {' or '.join(map(str, options))}. With pad-1 Haar bands (L = H//2 + 1) pick the "
            "horizon with wavelets.check_horizon"
        )

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if x.ndim != 3 or x.shape[-1] != self.channels:
            raise ValueError(f"x must have shape (B, L, {self.channels}), got {tuple(x.shape)}")
        if emb.shape != (x.shape[0], self.emb_dim):
            raise ValueError(f"emb must have shape ({x.shape[0]}, {self.emb_dim}), got {tuple(emb.shape)}")
        self.check_length(x.shape[1])
        h = x.transpose(1, 2)
        skips = []
        for res1, res2, down in self.downs:
            h = res2(res1(h, emb), emb)
            skips.append(h)
            h = down(h)
        h = self.mid_block2(self.mid_block1(h, emb), emb)
        for res1, res2, up in self.ups:
            h = torch.cat([h, skips.pop()], dim=1)
            h = up(res2(res1(h, emb), emb))
        return self.final_conv(h).transpose(1, 2)
