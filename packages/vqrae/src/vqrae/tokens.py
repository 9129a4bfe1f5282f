"""VQRAE tokens for a generator: (image → token ids) and (token ids → image), in memory and as files.

In memory, ``VQRAETokenizer`` has the duck type of mask_grpo's shapes ``PatchCodec`` (``encode`` (B, 3, H, W) in
[0, 1] → (B, N) long, row-major; ``decode`` (B, N) → images in [0, 1]; ``codebook_size``; ``grid``), so a masked
generator can be trained on VQRAE codes without importing this package's internals.

On disk, a token dump is one ``.npz`` (``vqrae encode RUN --out tokens.npz``):

    format          "vqrae.tokens/1"
    ids             (M, gh, gw) int32, each in [0, codebook_size)
    codebook_size   k
    image_size      H (= W)
    captions        (M,) str, optional (shapes-world prompts when the images were rendered from them)
    run             the run folder that made it (``vqrae decode`` needs the same run's decoder)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["FORMAT", "VQRAETokenizer", "load_tokens", "save_tokens"]

FORMAT = "vqrae.tokens/1"


class VQRAETokenizer:
    """A trained VQRAE as a tokenizer (EMA weights, eval mode)."""

    def __init__(self, model, image_size: int):
        self.model = model.eval()
        self.image_size = int(image_size)

    @classmethod
    def from_run(cls, run_dir: str | Path, *, device: str = "cpu") -> VQRAETokenizer:
        from vqrae.train import load_run

        cfg, model, _ = load_run(run_dir, device=device)
        return cls(model, cfg.data.image_size)

    @property
    def codebook_size(self) -> int:
        return self.model.codebook_size

    @property
    def grid(self) -> tuple[int, int]:
        return self.model.grid

    @torch.no_grad()
    def encode(self, images: Tensor, batch_size: int = 100) -> Tensor:
        """(B, 3, H, W) in [0, 1] → (B, N) long."""
        s = self.image_size
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (s, s):
            raise ValueError(f"encode expects (B, 3, {s}, {s}) images in [0, 1], got {tuple(images.shape)}")
        dev = next(self.model.parameters()).device
        out = [self.model.encode(images[i:i + batch_size].to(dev)).reshape(-1, self.grid[0] * self.grid[1]).cpu()
               for i in range(0, len(images), batch_size)]
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, ids: Tensor, batch_size: int = 100) -> Tensor:
        """(B, N) or (B, gh, gw) ids → (B, 3, H, W) in [0, 1]."""
        dev = next(self.model.parameters()).device
        ids = ids.reshape(ids.shape[0], -1)
        return torch.cat([self.model.decode(ids[i:i + batch_size].to(dev)).cpu()
                          for i in range(0, len(ids), batch_size)])


def save_tokens(path: str | Path, ids: Tensor, *, codebook_size: int, grid: tuple[int, int], image_size: int,
                run: str = "", captions: Sequence[str] | None = None) -> Path:
    """Write a token dump (module doc); the file is written whole to a temporary name, then renamed."""
    ids = ids.reshape(ids.shape[0], *grid).cpu().numpy().astype(np.int32)
    if ids.size and (ids.min() < 0 or ids.max() >= codebook_size):
        raise ValueError(f"token ids must lie in [0, {codebook_size})")
    if captions is not None and len(captions) != len(ids):
        raise ValueError(f"{len(captions)} captions for {len(ids)} token grids")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    extra = {"captions": np.asarray(list(captions), dtype=str)} if captions is not None else {}
    np.savez_compressed(tmp, format=np.asarray(FORMAT), ids=ids, codebook_size=np.asarray(codebook_size),
                        image_size=np.asarray(image_size), run=np.asarray(str(run)), **extra)
    tmp.replace(path)
    return path


def load_tokens(path: str | Path) -> dict:
    """Read and check a token dump: {"ids": (M, gh, gw) int64 tensor, "codebook_size", "image_size", "run",
    "captions" (list or None)}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such token file; write one with `vqrae encode RUN --out {path}`")
    with np.load(path, allow_pickle=False) as z:
        fmt = str(z["format"]) if "format" in z else ""
        if fmt != FORMAT:
            raise ValueError(f"{path}: format {fmt!r} is not {FORMAT!r}; was it written by `vqrae encode`?")
        ids = torch.from_numpy(z["ids"].astype(np.int64))
        k = int(z["codebook_size"])
        if ids.ndim != 3:
            raise ValueError(f"{path}: ids must be (M, gh, gw), got {tuple(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= k):
            raise ValueError(f"{path}: ids outside [0, {k})")
        return {"ids": ids, "codebook_size": k, "image_size": int(z["image_size"]), "run": str(z["run"]),
                "captions": [str(c) for c in z["captions"]] if "captions" in z else None}
