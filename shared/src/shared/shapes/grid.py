"""A captioned overview of the shapes world (tiling by `shared.imaging.image_grid`, re-exported here).

`python -m shared.shapes --out docs/results/shapes_world_examples.png` (`main` here) writes the example figure
(ground-truth renders of the fixed evaluation set, 4 per tag, with their prompts and the verifier's verdict).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from shared.imaging import image_grid, to_pil_images  # image_grid re-exported as `shared.shapes.image_grid`
from shared.shapes.prompts import as_record, eval_prompts
from shared.shapes.render import render
from shared.shapes.verify import verify


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
    """Captioned grid (`shared.imaging.image_grid` on light grey): each cell is an image (given, or rendered with
    `seed + i`) upscaled `scale`× (nearest; default: to ≈192 px) with its prompt and tag underneath, and with
    `verdict` the verifier's verdict. Defaults: 4 eval prompts per tag."""
    records = [as_record(r) for r in (records if records is not None else eval_prompts(per_tag=4))]
    if images is None:
        images = [render(r, size=size, seed=seed + i) for i, r in enumerate(records)]
    if len(images) != len(records):
        raise ValueError(f"{len(images)} images for {len(records)} records")
    pil = to_pil_images(list(images))
    scale = scale or max(1, 192 // max(im.size[0] for im in pil))
    captions = []
    for rec, im in zip(records, pil):
        lines = [rec["prompt"].removeprefix("a photo of "), f"[{rec['tag']}]"]
        if verdict:
            lines.append("verifier: correct" if verify(im, rec).correct else "verifier: WRONG")
        captions.append("\n".join(lines))
    return image_grid(pil, nrow=cols, padding=8, captions=captions, scale=scale, max_caption_lines=8,
                      background=(235, 235, 235))


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
