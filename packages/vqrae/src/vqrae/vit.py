"""Plain ViT pieces shared by the tiny encoder and the decoder: patchify / unpatchify, a pre-norm block, a stack.

    patchify(x, p):     (B, C, H, W) → (B, N, C·p·p), N = (H/p)·(W/p), row-major over the patch grid,
                        each patch flattened channel-last as (p, p, C)
    unpatchify(t, g, p): the inverse for a grid g = (H/p, W/p)
    Block:              x ← x + Attn(LN(x));  x ← x + MLP(LN(x))      (pre-norm ViT, GELU MLP, no dropout)

No convolutions anywhere (the decoder must not have any, card §2); the patch embedding is a linear map on
patchified pixels, which is the same function as ViT's stride-p convolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Block", "Transformer", "patchify", "sincos_2d", "unpatchify"]


def patchify(x: Tensor, p: int) -> Tensor:
    """(B, C, H, W) → (B, (H/p)(W/p), p·p·C); H and W must be multiples of p."""
    b, c, h, w = x.shape
    if h % p or w % p:
        raise ValueError(f"image {h}×{w} is not a multiple of the patch size {p}")
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(t: Tensor, grid: tuple[int, int], p: int, channels: int = 3) -> Tensor:
    """(B, gh·gw, p·p·C) → (B, C, gh·p, gw·p): the inverse of ``patchify``."""
    b, n, _ = t.shape
    gh, gw = grid
    if n != gh * gw:
        raise ValueError(f"{n} tokens do not fill a {gh}×{gw} grid")
    x = t.reshape(b, gh, gw, p, p, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, channels, gh * p, gw * p)


def sincos_2d(grid: tuple[int, int], dim: int) -> Tensor:
    """Fixed 2-D sine-cosine position embedding (MAE's), (gh·gw, dim); dim must be a multiple of 4."""
    if dim % 4:
        raise ValueError(f"sincos_2d needs dim % 4 == 0, got {dim}")
    gh, gw = grid
    ys, xs = torch.meshgrid(torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64),
                            indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    parts = []
    for pos in (ys.reshape(-1), xs.reshape(-1)):
        ang = pos[:, None] * omega[None, :]
        parts += [ang.sin(), ang.cos()]
    return torch.cat(parts, dim=1).float()


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``."""

    def __init__(self, width: int, heads: int, mlp_dim: int, eps: float = 1e-6):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.fc1 = nn.Linear(width, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, width)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(a)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class Transformer(nn.Module):
    """``depth`` blocks and a final LayerNorm over (B, N, width) tokens; ``hidden_states`` returns every block's
    output (before the final norm) for feature losses."""

    def __init__(self, width: int, depth: int, heads: int, mlp_dim: int, eps: float = 1e-6):
        super().__init__()
        self.blocks = nn.ModuleList(Block(width, heads, mlp_dim, eps) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=eps)
        self.apply(_init)

    def forward(self, x: Tensor) -> Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def hidden_states(self, x: Tensor) -> list[Tensor]:
        out = []
        for blk in self.blocks:
            x = blk(x)
            out.append(x)
        return out


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def num_patches(image_size: int, patch: int) -> int:
    return (image_size // patch) ** 2


def grid_side(n_tokens: int) -> int:
    """Side of a square token grid; error when ``n_tokens`` is not a square."""
    s = math.isqrt(n_tokens)
    if s * s != n_tokens:
        raise ValueError(f"{n_tokens} tokens are not a square grid")
    return s
