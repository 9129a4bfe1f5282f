"""Sample grids (PIL) and metric curves (matplotlib, Agg; no display, no pyplot global state).

Grid geometry (all in pixels, tiles of size w×h after ``scale``; ``ncol = nrow or ceil(sqrt(B))`` images per row as in
torchvision's ``make_grid``; ``rows = ceil(B / ncol)``; ``c`` = caption band height, 0 without captions)::

    width  = ncol·w + (ncol + 1)·padding
    height = rows·(h + c) + (rows + 1)·padding

Curves: one panel per key against ``step``; ``std_keys={"reward_mean": "reward_std"}`` shades mean ± std; ``smooth``
= s ∈ [0, 1) draws the debiased exponential moving average y_t = EMA_t / (1 − s^t), EMA_t = s·EMA_{t−1} + (1 − s)·x_t
(as TensorBoard's slider) over the faint raw curve. The PNG is ``figsize · dpi`` pixels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["plot_curves", "save_image_grid", "to_pil_images"]


# --------------------------------------------------------------------------------------------------------------------
# image grid


def to_pil_images(images: Any) -> list[Image.Image]:
    """PIL RGB images from a list of PIL images, a (B, C, H, W) / (C, H, W) tensor or array in [0, 1] (float) or
    0..255 (uint8) with C in {1, 3, 4}, or a list of (C, H, W) tensors."""
    if isinstance(images, Image.Image):
        return [images.convert("RGB")]
    if isinstance(images, Sequence) and not isinstance(images, str | bytes) and all(
            isinstance(im, Image.Image) for im in images):
        return [im.convert("RGB") for im in images]
    if isinstance(images, Sequence) and not isinstance(images, str | bytes):
        return [im for item in images for im in to_pil_images(item)]
    arr = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[1] not in (1, 3, 4):
        raise ValueError(f"expected images of shape (B, C, H, W) with C in 1, 3, 4; got {tuple(arr.shape)}")
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    arr = arr.transpose(0, 2, 3, 1)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return [Image.fromarray(a[..., :3]) for a in arr]


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels; words wider than a line are split; at most ``max_lines`` lines."""

    def fits(s: str) -> bool:
        return draw.textlength(s, font=font) <= width

    pieces: list[str] = []
    for word in text.split():
        while not fits(word) and len(word) > 1:
            cut = len(word) - 1
            while cut > 1 and not fits(word[:cut]):
                cut -= 1
            pieces.append(word[:cut])
            word = word[cut:]
        pieces.append(word)
    lines: list[str] = []
    for piece in pieces:
        if lines and fits(lines[-1] + " " + piece):
            lines[-1] += " " + piece
        else:
            lines.append(piece)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and not fits(last + "..."):
            last = last[:-1]
        lines[-1] = last + "..."
    return lines


def save_image_grid(images: Any, path: str | Path, *, captions: Sequence[str] | None = None, nrow: int | None = None,
                    padding: int = 2, scale: int = 1, max_caption_lines: int = 3,
                    background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Tile ``images`` into one PNG at ``path`` (parents created) and return the grid image.

    Args:
        images: see :func:`to_pil_images`; tiles of other sizes are resized to the first tile's size.
        captions: one string per image, drawn under its tile with PIL's default font, word-wrapped to the tile width
            and cut to ``max_caption_lines`` lines.
        nrow: images per row (torchvision convention); default ``ceil(sqrt(B))``.
        padding: pixels between and around tiles.
        scale: integer nearest-neighbour upscaling of every tile (tiny 32² samples become readable).
    """
    tiles = to_pil_images(images)
    if not tiles:
        raise ValueError("save_image_grid got no images")
    if captions is not None and len(captions) != len(tiles):
        raise ValueError(f"got {len(captions)} captions for {len(tiles)} images")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an int >= 1, got {scale!r}")
    w, h = tiles[0].size
    w, h = w * scale, h * scale
    tiles = [t.resize((w, h), Image.NEAREST) if t.size != (w, h) else t for t in tiles]
    ncol = nrow or math.ceil(math.sqrt(len(tiles)))
    ncol = min(ncol, len(tiles))
    rows = math.ceil(len(tiles) / ncol)

    font = ImageFont.load_default()
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped: list[list[str]] = []
    line_h = 0
    if captions is not None:
        wrapped = [_wrap(scratch, str(c), font, max(w - 2, 1), max_caption_lines) for c in captions]
        _, top, _, bottom = font.getbbox("Agy|")
        line_h = bottom - top + 2
    cap_h = (max(len(x) for x in wrapped) * line_h + 2) if wrapped else 0

    grid = Image.new("RGB", (ncol * w + (ncol + 1) * padding, rows * (h + cap_h) + (rows + 1) * padding), background)
    draw = ImageDraw.Draw(grid)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, ncol)
        x = padding + c * (w + padding)
        y = padding + r * (h + cap_h + padding)
        grid.paste(tile, (x, y))
        for j, line in enumerate(wrapped[i] if wrapped else []):
            draw.text((x + 1, y + h + 1 + j * line_h), line, fill=(0, 0, 0), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return grid


# --------------------------------------------------------------------------------------------------------------------
# curves


def _ema(values: np.ndarray, s: float) -> np.ndarray:
    out = np.empty_like(values)
    acc = 0.0
    for t, v in enumerate(values, start=1):
        acc = s * acc + (1.0 - s) * v
        out[t - 1] = acc / (1.0 - s ** t)
    return out


def plot_curves(metrics: str | Path | Sequence[Mapping[str, Any]], keys: Sequence[str] | str, path: str | Path, *,
                std_keys: Mapping[str, str] | None = None, smooth: float = 0.0, x_key: str = "step",
                title: str | None = None, figsize: tuple[float, float] | None = None, dpi: int = 100) -> Path:
    """Plot ``keys`` from a ``metrics.jsonl`` (path or run dir) or a list of records into a PNG; return its path.

    Records lacking a key, or with a non-finite value, are skipped for that key. ``figsize`` defaults to
    (6.4, 2.4 per key) inches; the PNG is exactly ``figsize · dpi`` pixels.
    """
    from matplotlib.figure import Figure  # lazy: matplotlib is slow to import

    from shared.training.metrics import read_metrics

    records = read_metrics(metrics) if isinstance(metrics, str | Path) else list(metrics)
    keys = [keys] if isinstance(keys, str) else list(keys)
    if not keys:
        raise ValueError("plot_curves needs at least one key")
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must be in [0, 1), got {smooth!r}")
    std_keys = dict(std_keys or {})
    available = sorted({k for r in records for k in r})
    for k in keys + list(std_keys.values()):
        if not any(k in r for r in records):
            raise ValueError(f"metric {k!r} not found in any record; available: {', '.join(available) or 'none'}")

    fig = Figure(figsize=figsize or (6.4, 2.4 * len(keys)), dpi=dpi)
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    for ax, key in zip(axes, keys, strict=True):
        pts = [(r.get(x_key, i), r[key], r.get(std_keys.get(key, ""), None)) for i, r in enumerate(records)
               if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
        x = np.array([p[0] for p in pts], dtype=float)
        y = np.array([p[1] for p in pts], dtype=float)
        if smooth > 0 and len(y):
            ax.plot(x, y, color="C0", alpha=0.25, linewidth=1)
            y = _ema(y, smooth)
        ax.plot(x, y, color="C0", linewidth=1.5, label=key)
        if key in std_keys:
            sd = np.array([p[2] if isinstance(p[2], int | float) else np.nan for p in pts], dtype=float)
            if smooth > 0 and len(sd):
                sd = _ema(np.nan_to_num(sd), smooth)
            ax.fill_between(x, y - sd, y + sd, color="C0", alpha=0.2, label=f"± {std_keys[key]}")
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
        if key in std_keys:
            ax.legend(loc="best", fontsize="small")
    axes[-1].set_xlabel(x_key)
    if title:
        axes[0].set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
