"""Image conversion and image grids: one place for PIL / numpy / torch → uint8 RGB, and for tiling images.

Dependencies: PIL and numpy; torch tensors are handled by duck typing (``.detach()``), torch is never imported here.
This module imports nothing from ``shared`` (``shared.shapes`` and ``shared.training`` build on it).

Accepted images (:func:`to_uint8_hwc` takes one, :func:`to_pil_images` any of these or a list of them):

- PIL images in any mode; transparency is composited onto white;
- numpy arrays (H, W) or (H, W, C), C in {1, 3, 4}; uint8 as is, float in [0, 1], other integers clipped to 0..255;
  a (C, H, W) array whose last axis is not a channel count is read as channels-first;
- torch tensors (C, H, W) or (1, C, H, W), C in {1, 3, 4}; float in [0, 1] or uint8;
- batches (B, C, H, W) (torch, or numpy channels-first) and (B, H, W, C) (numpy): :func:`to_pil_images` only.

A fourth channel (alpha) of arrays and tensors is dropped.

Grid geometry (pixels; tiles of size w×h after ``scale``; ``ncol = min(nrow or ceil(sqrt(B)), B)`` images per row
as in torchvision's ``make_grid``; ``rows = ceil(B / ncol)``; ``c`` = caption band height, 0 without captions)::

    width  = ncol·w + (ncol + 1)·padding
    height = rows·(h + c) + (rows + 1)·padding
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["image_grid", "save_image_grid", "to_pil_images", "to_uint8_hwc"]

WHITE: tuple[int, int, int] = (255, 255, 255)
_CHANNELS = (1, 3, 4)


# --------------------------------------------------------------------------------------------------------------------
# conversion


def _is_tensor(x: Any) -> bool:
    return hasattr(x, "detach") and hasattr(x, "cpu")


def _tensor_to_numpy(t: Any) -> np.ndarray:
    t = t.detach().cpu()
    if str(t.dtype) != "torch.uint8":
        t = t.float()  # also bf16 / fp16, which numpy cannot hold
    return t.numpy()


def _shape_error(shape: tuple[int, ...]) -> ValueError:
    return ValueError(
        "expected images of shape (C, H, W) or (B, C, H, W) with C in 1, 3, 4 (torch), (H, W) or (H, W, C) "
        f"(numpy), or PIL images; got {shape}"
    )


def to_uint8_hwc(image: Any) -> np.ndarray:
    """One image (PIL, numpy HWC, torch CHW; see the module docstring) → numpy (H, W, 3) uint8 RGB."""
    if isinstance(image, Image.Image):
        if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
            image = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", image.size, WHITE + (255,)), image)
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if _is_tensor(image):
        arr = _tensor_to_numpy(image)
        if arr.ndim == 4 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 3 or arr.shape[0] not in _CHANNELS:
            raise _shape_error(tuple(arr.shape))
        arr = arr.transpose(1, 2, 0)
    else:
        arr = np.asarray(image)
        if arr.ndim == 4 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3:
            raise _shape_error(tuple(arr.shape))
        if arr.shape[2] not in _CHANNELS:
            if arr.shape[0] not in _CHANNELS:
                raise _shape_error(tuple(arr.shape))
            arr = arr.transpose(1, 2, 0)  # channels-first array
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    arr = arr[:, :, :3]
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if np.issubdtype(arr.dtype, np.floating):
        return np.round(np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.clip(arr, 0, 255).astype(np.uint8)


def to_pil_images(images: Any) -> list[Image.Image]:
    """PIL RGB images from one image, a batch (B, C, H, W) / (B, H, W, C), or a (nested) list of those."""
    if isinstance(images, Image.Image):
        return [Image.fromarray(to_uint8_hwc(images))]
    if isinstance(images, str | bytes):
        raise TypeError(f"expected images, got {type(images).__name__}")
    if isinstance(images, Sequence):
        return [im for item in images for im in to_pil_images(item)]
    arr = images if _is_tensor(images) else np.asarray(images)
    if arr.ndim == 4:
        batch_ok = arr.shape[1] in _CHANNELS or (not _is_tensor(arr) and arr.shape[3] in _CHANNELS)
        if not batch_ok:
            raise _shape_error(tuple(arr.shape))
        return [Image.fromarray(to_uint8_hwc(a)) for a in arr]
    return [Image.fromarray(to_uint8_hwc(arr))]


# --------------------------------------------------------------------------------------------------------------------
# grid


def _word_gap(draw: ImageDraw.ImageDraw, font: Any) -> float:
    """Pixels between words: PIL's default FreeType font (size 10) draws a 2-px space that makes short words run
    together ("trianglesare"); use at least 0.4 em."""
    return max(draw.textlength(" ", font=font), 0.4 * getattr(font, "size", 0))


def _line_length(draw: ImageDraw.ImageDraw, line: str, font: Any) -> float:
    words = line.split(" ")
    return sum(draw.textlength(w, font=font) for w in words) + _word_gap(draw, font) * (len(words) - 1)


def _draw_line(draw: ImageDraw.ImageDraw, xy: tuple[float, float], line: str, font: Any) -> None:
    (x, y), gap = xy, _word_gap(draw, font)
    for word in line.split(" "):
        draw.text((x, y), word, fill=(0, 0, 0), font=font)
        x += draw.textlength(word, font=font) + gap


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels; ``\\n`` starts a new line; words wider than a line are split; at most
    ``max_lines`` lines (the last one then ends in ``...``)."""

    def fits(s: str) -> bool:
        return _line_length(draw, s, font) <= width

    lines: list[str] = []
    for paragraph in text.split("\n"):
        pieces: list[str] = []
        for word in paragraph.split():
            while not fits(word) and len(word) > 1:
                cut = len(word) - 1
                while cut > 1 and not fits(word[:cut]):
                    cut -= 1
                pieces.append(word[:cut])
                word = word[cut:]
            pieces.append(word)
        para_lines: list[str] = []
        for piece in pieces:
            if para_lines and fits(para_lines[-1] + " " + piece):
                para_lines[-1] += " " + piece
            else:
                para_lines.append(piece)
        lines += para_lines
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and not fits(last + "..."):
            last = last[:-1]
        lines[-1] = last + "..."
    return lines


def image_grid(images: Any, *, nrow: int | None = None, padding: int = 2, captions: Sequence[str] | None = None,
               scale: int = 1, max_caption_lines: int = 3,
               background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Tile ``images`` row-major into one RGB image (geometry in the module docstring).

    Args:
        images: anything :func:`to_pil_images` takes; tiles of other sizes are resized (nearest) to the first's.
        nrow: images per row (torchvision convention); default ``ceil(sqrt(B))``.
        padding: pixels between and around tiles, filled with ``background``.
        captions: ``None`` for plain tiles, else one string per image, drawn under its tile in black with PIL's
            default font, word-wrapped to the tile width (``\\n`` forces a break) and cut to ``max_caption_lines``.
        scale: integer nearest-neighbour upscaling of every tile (tiny 32² samples become readable).
    """
    tiles = to_pil_images(images)
    if not tiles:
        raise ValueError("image_grid needs at least one image")
    if captions is not None and len(captions) != len(tiles):
        raise ValueError(f"got {len(captions)} captions for {len(tiles)} images")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an int >= 1, got {scale!r}")
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}")
    if nrow is not None and nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow!r}")
    w, h = tiles[0].size
    w, h = w * scale, h * scale
    tiles = [t.resize((w, h), Image.NEAREST) if t.size != (w, h) else t for t in tiles]
    ncol = min(nrow or math.ceil(math.sqrt(len(tiles))), len(tiles))
    rows = math.ceil(len(tiles) / ncol)

    wrapped: list[list[str]] = []
    cap_h = line_h = 0
    font = None
    if captions is not None:
        font = ImageFont.load_default()
        scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        wrapped = [_wrap(scratch, str(c), font, max(w - 2, 1), max_caption_lines) for c in captions]
        _, top, _, bottom = font.getbbox("Agy|")
        line_h = bottom - top + 2
        cap_h = max(len(x) for x in wrapped) * line_h + 2

    grid = Image.new("RGB", (ncol * w + (ncol + 1) * padding, rows * (h + cap_h) + (rows + 1) * padding), background)
    draw = ImageDraw.Draw(grid)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, ncol)
        x = padding + c * (w + padding)
        y = padding + r * (h + cap_h + padding)
        grid.paste(tile, (x, y))
        for j, line in enumerate(wrapped[i] if wrapped else []):
            _draw_line(draw, (x + 1, y + h + 1 + j * line_h), line, font)
    return grid


def save_image_grid(images: Any, path: str | Path, **kw: Any) -> Image.Image:
    """:func:`image_grid` (same keyword arguments) saved to ``path`` (parent folders created); returns the grid."""
    grid = image_grid(images, **kw)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return grid
