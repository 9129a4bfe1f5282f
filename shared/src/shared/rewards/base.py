"""The reward interface: a small Protocol every reward satisfies (STYLE.md "Follow" 4–5).

    reward(images, prompts, metadata=None) -> Tensor (B,) float32

`images`: float tensor (B, 3, H, W) in [0, 1] (what the VAE decode + (x/2 + 0.5).clamp(0, 1) gives);
`prompts`: B strings; `metadata`: optional B dicts (e.g. GenEval records for the shapes reward). The trainer never
knows which reward it optimises (DDPO's `reward_fn(images, prompts, metadata)`, kvablack/ddpo-pytorch `rewards.py`).
Image conversion follows DDPO: uint8 = round(255 · x) clamped to [0, 255].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image


@runtime_checkable
class Reward(Protocol):
    """A named callable scoring a batch of images against their prompts (higher is better)."""

    name: str

    def __call__(
        self, images: torch.Tensor, prompts: list[str], metadata: list[dict] | None = None
    ) -> torch.Tensor: ...


def check_batch(images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict] | None = None) -> int:
    """Validate a reward call's arguments; return the batch size B."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor (B, 3, H, W) in [0, 1], got {got}")
    if not torch.is_floating_point(images):
        raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
    b = images.shape[0]
    if isinstance(prompts, str) or len(prompts) != b:
        raise ValueError(f"expected a list of {b} prompts, got {prompts!r:.80}")
    if metadata is not None and len(metadata) != b:
        raise ValueError(f"expected {b} metadata entries, got {len(metadata)}")
    return b


def tensor_to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [0, 1] → numpy (B, H, W, 3) uint8, rounding as DDPO does."""
    x = (images.detach().float() * 255).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) float in [0, 1] → list of RGB PIL images."""
    return [Image.fromarray(a) for a in tensor_to_uint8(images)]


def pil_to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """List of equally sized PIL images → (B, 3, H, W) float32 in [0, 1]."""
    if not images:
        raise ValueError("pil_to_tensor needs at least one image")
    arrays = [np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(f"images differ in size: {sorted({a.shape for a in arrays})}")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(255.0)
