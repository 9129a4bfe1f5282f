"""A weight-free patch tokenizer for the shapes world (mask_grpo.md §10, "each token decodes to a colour patch by
lookup (no tokenizer weights)").

A 32×32 image is cut into an (S/p)×(S/p) grid of p×p patches (default 8×8 of 4×4: N = 64 tokens). The codebook is
factorised [our reading]: code 0 is the all-white patch, code 1 + c·P + j is palette colour c painted through binary
pattern j on white, so

    K = 1 + C·P        (C = 6 palette colours, P binary p×p patterns fit by k-means on rendered images)
    table[k] ∈ [0, 1]^(3·p·p)          (the RGB patch of code k)
    encode(x)_n = argmin_k ‖x_n − table[k]‖²     (nearest code in RGB, x_n the n-th patch, row-major)
    decode(z) = tile(table[z])

Shapes-world renders are flat palette colours on white without anti-aliasing, so a patch is a colour and a binary
mask (two colours share a 4×4 patch in ≈0.05 % of patches); only the masks need fitting. `fit_codec` runs weighted
k-means on the distinct non-empty masks of rendered training images and rounds each centre to a binary mask.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from shared.shapes.vocab import BACKGROUND, COLOR_NAMES, COLORS


@dataclass(frozen=True)
class PatchCodecConfig:
    """Codec geometry and fitting: `image_size` S, `patch` p (S % p == 0), `num_patterns` P (≤ the distinct masks
    seen), k-means on masks from `fit_images` rendered training images (seeded by `seed`), `kmeans_iters` rounds."""

    image_size: int = 32
    patch: int = 4
    num_patterns: int = 96
    fit_images: int = 2000
    kmeans_iters: int = 30
    seed: int = 0

    def __post_init__(self) -> None:
        if self.patch < 1 or self.image_size % self.patch:
            raise ValueError(f"patch={self.patch} must divide image_size={self.image_size}; fix: e.g. patch=4")
        if self.num_patterns < 1:
            raise ValueError(f"num_patterns={self.num_patterns} must be ≥ 1; fix: e.g. num_patterns=64")

    @property
    def grid(self) -> tuple[int, int]:
        g = self.image_size // self.patch
        return g, g

    @property
    def codebook_size(self) -> int:
        return 1 + len(COLOR_NAMES) * self.num_patterns


def palette() -> np.ndarray:
    """(1 + C, 3) uint8: white first, then `COLOR_NAMES` in order."""
    return np.asarray([BACKGROUND] + [COLORS[c] for c in COLOR_NAMES], dtype=np.uint8)


def patchify(images: Tensor, patch: int) -> Tensor:
    """(B, 3, S, S) → (B, N, 3·p·p), patches row-major, each flattened channel-first."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // patch) * (w // patch), c * patch * patch)


def unpatchify(patches: Tensor, grid: tuple[int, int], patch: int) -> Tensor:
    """Inverse of `patchify`: (B, N, 3·p·p) → (B, 3, gh·p, gw·p)."""
    b = patches.shape[0]
    gh, gw = grid
    x = patches.reshape(b, gh, gw, 3, patch, patch)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(b, 3, gh * patch, gw * patch)


def code_table(patterns: np.ndarray) -> np.ndarray:
    """(K, 3·p·p) float32 RGB patches in [0, 1] for binary `patterns` (P, p, p): white, then colour-major."""
    pal = palette().astype(np.float32) / 255.0
    white, colours = pal[0], pal[1:]
    m = patterns.reshape(len(patterns), 1, -1).astype(np.float32)  # (P, 1, pp)
    rows = [np.repeat(white[:, None], m.shape[-1], axis=1)[None]]  # (1, 3, pp)
    for col in colours:
        rows.append(m * col[None, :, None] + (1 - m) * white[None, :, None])  # (P, 3, pp)
    return np.concatenate(rows).reshape(-1, 3 * m.shape[-1])


def _render_masks(cfg: PatchCodecConfig) -> np.ndarray:
    """Binary p×p masks (non-white pixels) of every patch with ink, from `cfg.fit_images` training renders."""
    from shared.shapes.prompts import generate_prompts
    from shared.shapes.render import render

    rng = np.random.default_rng(cfg.seed)
    records = generate_prompts(cfg.fit_images, seed=cfg.seed)
    imgs = np.stack([np.asarray(render(r, size=cfg.image_size, rng=rng)) for r in records])
    ink = (imgs != np.asarray(BACKGROUND, dtype=np.uint8)).any(-1)  # (n, S, S)
    g, p = cfg.image_size // cfg.patch, cfg.patch
    masks = ink.reshape(-1, g, p, g, p).transpose(0, 1, 3, 2, 4).reshape(-1, p * p)
    return masks[masks.any(1)]


def kmeans_patterns(masks: np.ndarray, k: int, iters: int, seed: int) -> np.ndarray:
    """Weighted k-means (k-means++ start) on the distinct binary masks (n, d); centres rounded at 0.5 to binary
    masks (a centre that rounds to empty takes its cluster's most frequent mask); duplicates merged. Returns (≤k, d)."""
    uniq, counts = np.unique(masks.astype(np.uint8), axis=0, return_counts=True)
    x, w = uniq.astype(np.float64), counts.astype(np.float64)
    k = min(k, len(x))
    rng = np.random.default_rng(seed)
    centres = [x[rng.choice(len(x), p=w / w.sum())]]
    for _ in range(1, k):
        d2 = ((x[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1).min(1)
        pr = w * d2
        centres.append(x[rng.choice(len(x), p=pr / pr.sum())] if pr.sum() > 0 else x[rng.integers(len(x))])
    c = np.asarray(centres)
    for _ in range(iters):
        assign = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        for j in range(k):
            sel = assign == j
            if sel.any():
                c[j] = (w[sel, None] * x[sel]).sum(0) / w[sel].sum()
    assign = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
    out = []
    for j in range(k):
        b = c[j] >= 0.5
        if not b.any():
            sel = np.flatnonzero(assign == j)
            if sel.size == 0:
                continue
            b = x[sel[np.argmax(w[sel])]] > 0
        out.append(b)
    return np.unique(np.asarray(out, dtype=bool), axis=0)


class PatchCodec:
    """Encode images to (B, N) codes by nearest table entry and decode by lookup (module doc for the formulas)."""

    def __init__(self, cfg: PatchCodecConfig, patterns: np.ndarray):
        p = cfg.patch
        patterns = np.asarray(patterns, dtype=bool).reshape(-1, p, p)
        if len(patterns) != cfg.num_patterns:
            cfg = PatchCodecConfig(**{**asdict(cfg), "num_patterns": len(patterns)})
        self.cfg = cfg
        self.patterns = patterns
        self.table = torch.from_numpy(code_table(patterns))  # (K, 3pp) float32 on CPU

    @property
    def codebook_size(self) -> int:
        return int(self.table.shape[0])

    @property
    def grid(self) -> tuple[int, int]:
        return self.cfg.grid

    @classmethod
    def fit(cls, cfg: PatchCodecConfig) -> PatchCodec:
        """Fit the P binary patterns by k-means on masks of rendered training images (seeded, ≈1 s)."""
        masks = _render_masks(cfg)
        return cls(cfg, kmeans_patterns(masks, cfg.num_patterns, cfg.kmeans_iters, cfg.seed))

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) float in [0, 1] → (B, N) long, nearest code in RGB (squared L2)."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-1] != self.cfg.image_size:
            raise ValueError(f"encode expects (B, 3, {self.cfg.image_size}, {self.cfg.image_size}), got {tuple(images.shape)}")
        x = patchify(images.float().cpu(), self.cfg.patch)  # (B, N, D)
        t = self.table
        d2 = (x * x).sum(-1, keepdim=True) - 2 * x @ t.T + (t * t).sum(-1)  # (B, N, K)
        return d2.argmin(-1).to(images.device)

    def decode(self, codes: Tensor) -> Tensor:
        """(B, N) long → (B, 3, S, S) float in [0, 1] by table lookup and tiling."""
        if codes.ndim != 2 or codes.shape[1] != self.grid[0] * self.grid[1]:
            raise ValueError(f"decode expects (B, {self.grid[0] * self.grid[1]}) codes, got {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size}) (no [MASK]); got [{int(codes.min())}, {int(codes.max())}]")
        table = self.table.to(codes.device)
        return unpatchify(table[codes], self.grid, self.cfg.patch)

    def encode_pil(self, images) -> Tensor:
        """A list of PIL/uint8 HWC images → (B, N) codes."""
        arr = np.stack([np.asarray(im, dtype=np.uint8) for im in images]).astype(np.float32) / 255.0
        return self.encode(torch.from_numpy(arr).permute(0, 3, 1, 2))

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Tensor]:
        """Tensors to save (`codebook.safetensors`): the binary patterns and the palette."""
        return {"patterns": torch.from_numpy(self.patterns.astype(np.uint8)), "palette": torch.from_numpy(palette())}

    @classmethod
    def from_state(cls, cfg: PatchCodecConfig, state: dict[str, Tensor], source: Path | str = "<state>") -> PatchCodec:
        pal = state["palette"].numpy()
        if pal.shape != palette().shape or not np.array_equal(pal, palette()):
            raise ValueError(f"{source}: the saved palette differs from shared.shapes.vocab.COLORS; refit the codec")
        return cls(cfg, state["patterns"].numpy().astype(bool))
