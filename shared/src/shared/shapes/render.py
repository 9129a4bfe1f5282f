"""Ground-truth renderer: a correct image for any shapes record (shared_core.md §11).

`render(record_or_prompt, size=64)` draws every `include` entry's `count` objects (its `color`, else a random palette
colour) as flat PIL shapes on white, at random non-overlapping places:

- object side s = size · U(lo, hi) with (lo, hi) shrinking with the number of objects (1: 0.30–0.45, 2: 0.24–0.34,
  3–4: 0.20–0.27, more: 0.17–0.22), never below 8 px, so every object is verifiable at 32 px;
- a border margin of max(1, 0.04·size) px and a gap of max(2, 0.06·size) px between objects' boxes (a gap of ≥ 2 px
  keeps same-coloured neighbours apart after a σ≈1 px blur);
- `position` entries: the relation must hold with a 3× stricter margin than the verifier's (threshold 0.3 instead of
  0.1, see `verify.relations`), measured both on area centroids and on box centres;
- shapes: circle = disc inscribed in the s×s box, square = the box, triangle = isosceles, apex up, base = height = s.

Placement is rejection sampling (a few hundred tries at most); ≈0.2–0.3 ms per 64 px image. [our reading]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from shared.shapes.prompts import as_record
from shared.shapes.verify import relations
from shared.shapes.vocab import BACKGROUND, COLOR_NAMES, COLORS

MIN_SIZE = 16
MIN_SIDE = 8
RENDER_POSITION_THRESHOLD = 0.3  # verifier uses GenEval's 0.1
_MAX_TRIES = 400


@dataclass(frozen=True)
class PlacedShape:
    """One drawn object: its class, colour, include-entry index and box (x0, y0, x1, y1), x1/y1 exclusive."""

    shape: str
    color: str
    group: int
    box: tuple[int, int, int, int]

    @property
    def side(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def center(self) -> tuple[float, float]:
        """Centre of the pixel box (pixel-index coordinates)."""
        x0, y0, x1, y1 = self.box
        return (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2

    @property
    def centroid(self) -> tuple[float, float]:
        """Area centroid; a triangle's (apex up) sits 2/3 of the way down."""
        cx, cy = self.center
        if self.shape == "triangle":
            cy = self.box[1] + 2 * (self.side - 1) / 3
        return cx, cy

    def as_dict(self) -> dict:
        return {"class": self.shape, "color": self.color, "group": self.group, "bbox": list(self.box)}


def _side_range(n: int) -> tuple[float, float]:
    if n <= 1:
        return 0.30, 0.45
    if n == 2:
        return 0.24, 0.34
    if n <= 4:
        return 0.20, 0.27
    return 0.17, 0.22


def _objects(record: dict, rng: np.random.Generator) -> list[tuple[str, str, int]]:
    objs = []
    for g, entry in enumerate(record["include"]):
        for _ in range(entry["count"]):
            color = entry.get("color") or COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))]
            objs.append((entry["class"], color, g))
    for ex in record.get("exclude", []):
        drawn = sum(1 for o in objs if o[0] == ex["class"])
        if drawn >= ex["count"]:
            raise ValueError(
                f"record {record['prompt']!r} is contradictory: it includes {drawn} {ex['class']}(s) "
                f"but excludes {ex['count']} or more"
            )
    return objs


def _constraints_hold(record: dict, placed: list[PlacedShape]) -> bool:
    groups: dict[int, list[PlacedShape]] = {}
    for p in placed:
        groups.setdefault(p.group, []).append(p)
    for g, entry in enumerate(record["include"]):
        if "position" not in entry:
            continue
        rel, ref = entry["position"]
        for a in groups[g]:
            for b in groups[ref]:
                dims_a, dims_b = (a.side, a.side), (b.side, b.side)
                for pa, pb in ((a.centroid, b.centroid), (a.center, b.center)):
                    if rel not in relations(pa, dims_a, pb, dims_b, threshold=RENDER_POSITION_THRESHOLD):
                        return False
    return True


def layout(
    record_or_prompt: str | dict, *, size: int = 64, rng: np.random.Generator | None = None
) -> list[PlacedShape]:
    """Random placement of the record's objects satisfying every include (see module doc)."""
    record = as_record(record_or_prompt)
    if not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise ValueError(f"size={size!r}: expected an integer ≥ {MIN_SIZE}")
    rng = np.random.default_rng() if rng is None else rng
    objs = _objects(record, rng)
    n = len(objs)
    lo, hi = _side_range(n)
    margin = max(1, round(0.04 * size))
    gap = max(2, round(0.06 * size))
    for _ in range(_MAX_TRIES):
        sides = np.maximum(MIN_SIDE, (rng.uniform(lo, hi, size=n) * size).astype(int))
        boxes: list[tuple[int, int, int, int]] = []
        for s in sides:
            hi_xy = size - margin - s
            if hi_xy < margin:
                break
            xy = rng.integers(margin, hi_xy + 1, size=(30, 2))
            for x0, y0 in xy:
                x0, y0 = int(x0), int(y0)
                box = (x0, y0, x0 + int(s), y0 + int(s))
                if all(
                    box[0] >= b[2] + gap or b[0] >= box[2] + gap or box[1] >= b[3] + gap or b[1] >= box[3] + gap
                    for b in boxes
                ):
                    boxes.append(box)
                    break
            else:
                break
        if len(boxes) < n:
            continue
        placed = [PlacedShape(shape, color, g, box) for (shape, color, g), box in zip(objs, boxes)]
        if _constraints_hold(record, placed):
            return placed
    raise RuntimeError(f"could not place the objects of {record['prompt']!r} at size {size} after {_MAX_TRIES} tries")


def draw(placed: list[PlacedShape], size: int) -> Image.Image:
    """Flat shapes on a white RGB canvas."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    canvas = ImageDraw.Draw(image)
    for p in placed:
        x0, y0, x1, y1 = p.box
        fill = COLORS[p.color]
        if p.shape == "circle":
            canvas.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
        elif p.shape == "square":
            canvas.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
        elif p.shape == "triangle":
            canvas.polygon(((x0, y1 - 1), (x1 - 1, y1 - 1), ((x0 + x1 - 1) / 2, y0)), fill=fill)
        else:  # pragma: no cover - records are validated against the vocabulary
            raise ValueError(f"unknown shape {p.shape!r}")
    return image


def render_scene(
    record_or_prompt: str | dict, *, size: int = 64, seed: int | None = None, rng: np.random.Generator | None = None
) -> tuple[Image.Image, list[PlacedShape]]:
    """`render` that also returns the placed objects (class, colour, include index, box) for box/VLM tasks."""
    if rng is not None and seed is not None:
        raise ValueError("give either seed or rng, not both")
    rng = np.random.default_rng(seed) if rng is None else rng
    placed = layout(record_or_prompt, size=size, rng=rng)
    return draw(placed, size), placed


def render(
    record_or_prompt: str | dict, *, size: int = 64, seed: int | None = None, rng: np.random.Generator | None = None
) -> Image.Image:
    """A correct RGB image (white background) of `size`×`size` px for a record or prompt text.

    `seed` or `rng` (a `numpy.random.Generator`) make it reproducible; with neither the layout is fresh each call.
    """
    return render_scene(record_or_prompt, size=size, seed=seed, rng=rng)[0]
