"""Image grids: GenEval's per-prompt `grid.png` and a captioned overview of the shapes world.

`python -m shared.shapes --out docs/results/shapes_world_examples.png` (`main` here) writes the example figure
(ground-truth renders of the fixed evaluation set, 4 per tag, with their prompts and the verifier's verdict).
"""

from __future__ import annotations

import argparse
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from shared.shapes.detect import to_uint8_hwc
from shared.shapes.prompts import as_record, eval_prompts
from shared.shapes.render import render
from shared.shapes.verify import verify
from shared.shapes.vocab import BACKGROUND


def image_grid(images: Sequence, cols: int | None = None, *, pad: int = 2) -> Image.Image:
    """Tile equally sized images (PIL, numpy HWC, torch CHW) row-major on white; `cols` defaults to ⌈√n⌉."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    pil = [Image.fromarray(to_uint8_hwc(im)) for im in images]
    w, h = pil[0].size
    cols = cols or math.ceil(math.sqrt(len(pil)))
    rows = math.ceil(len(pil) / cols)
    out = Image.new("RGB", (cols * w + (cols + 1) * pad, rows * h + (rows + 1) * pad), BACKGROUND)
    for i, im in enumerate(pil):
        r, c = divmod(i, cols)
        out.paste(im.resize((w, h)), (pad + c * (w + pad), pad + r * (h + pad)))
    return out


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def render_grid(
    records: Sequence[str | dict] | None = None,
    images: Sequence | None = None,
    *,
    size: int = 64,
    scale: int | None = None,
    cols: int = 4,
    seed: int = 0,
    verdict: bool = True,
) -> Image.Image:
    """Captioned grid: each cell is an image (given, or rendered with `seed + i`) upscaled `scale`× (nearest;
    default: to ≈192 px) with its prompt and tag underneath, and with `verdict` the verifier's verdict.
    Defaults: 4 eval prompts per tag."""
    records = [as_record(r) for r in (records if records is not None else eval_prompts(per_tag=4))]
    if images is None:
        images = [render(r, size=size, seed=seed + i) for i, r in enumerate(records)]
    if len(images) != len(records):
        raise ValueError(f"{len(images)} images for {len(records)} records")
    pil = [Image.fromarray(to_uint8_hwc(im)) for im in images]
    scale = scale or max(1, 192 // max(im.size[0] for im in pil))
    cell_w = max(im.size[0] for im in pil) * scale
    font = _font(12)
    chars = max(12, cell_w // 7)
    captions = []
    for rec, im in zip(records, pil):
        lines = textwrap.wrap(rec["prompt"].removeprefix("a photo of "), chars) + [f"[{rec['tag']}]"]
        if verdict:
            lines.append("verifier: correct" if verify(im, rec).correct else "verifier: WRONG")
        captions.append(lines)
    line_h = 15
    cap_h = line_h * max(len(c) for c in captions) + 6
    img_h = max(im.size[1] for im in pil) * scale
    cell_h = img_h + cap_h
    rows = math.ceil(len(pil) / cols)
    pad = 8
    out = Image.new("RGB", (cols * (cell_w + pad) + pad, rows * (cell_h + pad) + pad), (235, 235, 235))
    canvas = ImageDraw.Draw(out)
    for i, (im, cap) in enumerate(zip(pil, captions)):
        r, c = divmod(i, cols)
        x, y = pad + c * (cell_w + pad), pad + r * (cell_h + pad)
        out.paste(im.resize((im.size[0] * scale, im.size[1] * scale), Image.NEAREST), (x, y))
        canvas.rectangle((x, y + img_h, x + cell_w - 1, y + cell_h - 1), fill=BACKGROUND)
        for j, line in enumerate(cap):
            canvas.text((x + 4, y + img_h + 3 + j * line_h), line, fill=(0, 0, 0), font=font)
    return out


def main(argv: Sequence[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description="Save a captioned grid of ground-truth shapes-world renders.")
    ap.add_argument("--out", type=Path, default=Path("docs/results/shapes_world_examples.png"))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--per-tag", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    grid = render_grid(eval_prompts(per_tag=args.per_tag), size=args.size, seed=args.seed, cols=args.per_tag)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    print(args.out)
    return args.out
