"""JPEG (in)compressibility, DDPO's first rewards (shared_core.md §10).

    size_kB(x) = len(JPEG(uint8(x), quality=95)) / 1000
    jpeg_compressibility   = −size_kB     jpeg_incompressibility = +size_kB

[authors' code: `kvablack/ddpo-pytorch` `ddpo_pytorch/rewards.py` (`jpeg_incompressibility`, `jpeg_compressibility`);
Flow-GRPO reuses them.] Encoder: PIL, default chroma subsampling, as there.
"""

from __future__ import annotations

import io

import torch

from shared.rewards.base import check_batch, tensor_to_pil
from shared.rewards.registry import register_reward

QUALITY = 95


def jpeg_sizes_kb(images: torch.Tensor, quality: int = QUALITY) -> torch.Tensor:
    """Per-image PIL JPEG size in kB (bytes / 1000) at `quality`, float32 (B,)."""
    sizes = []
    for im in tensor_to_pil(images):
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=quality)
        sizes.append(buf.tell() / 1000.0)
    return torch.tensor(sizes, dtype=torch.float32)


@register_reward("jpeg_incompressibility")
class JpegIncompressibility:
    """+JPEG size in kB: rewards detail/noise."""

    name = "jpeg_incompressibility"
    sign = 1.0

    def __init__(self, quality: int = QUALITY):
        if not 1 <= int(quality) <= 100:
            raise ValueError(f"quality={quality}: expected 1..100")
        self.quality = int(quality)

    def __call__(self, images: torch.Tensor, prompts: list[str], metadata: list[dict] | None = None) -> torch.Tensor:
        check_batch(images, prompts, metadata)
        return self.sign * jpeg_sizes_kb(images, self.quality)


@register_reward("jpeg_compressibility")
class JpegCompressibility(JpegIncompressibility):
    """−JPEG size in kB: rewards flat, simple images."""

    name = "jpeg_compressibility"
    sign = -1.0
