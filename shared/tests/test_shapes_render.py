"""Shapes world: the ground-truth renderer."""

import time

import numpy as np
import pytest
from PIL import Image

from shared.shapes import all_prompts, eval_prompts, relations, render, render_scene
from shared.shapes.render import MIN_SIDE
from shared.shapes.vocab import COLORS


def test_render_is_rgb_on_white_and_reproducible():
    rec = eval_prompts()[40]
    im = render(rec, size=64, seed=7)
    assert isinstance(im, Image.Image) and im.mode == "RGB" and im.size == (64, 64)
    a = np.asarray(im)
    assert (a[0, 0] == 255).all() and (a[-1, -1] == 255).all()
    assert np.array_equal(a, np.asarray(render(rec, size=64, seed=7)))
    assert not np.array_equal(a, np.asarray(render(rec, size=64, seed=8)))
    rng1, rng2 = np.random.default_rng(3), np.random.default_rng(3)
    assert np.array_equal(np.asarray(render(rec, rng=rng1)), np.asarray(render(rec, rng=rng2)))
    assert np.array_equal(np.asarray(render(rec["prompt"], seed=1)), np.asarray(render(rec, seed=1)))  # text works too
    colours = {tuple(c) for c in a.reshape(-1, 3)}
    assert colours <= set(COLORS.values()) | {(255, 255, 255)}  # flat palette colours only


@pytest.mark.parametrize("size", [32, 64])
def test_render_scene_matches_the_record(size):
    for i, rec in enumerate(all_prompts()):
        _, placed = render_scene(rec, size=size, seed=i)
        assert len(placed) == sum(e["count"] for e in rec["include"])
        margin, gap = max(1, round(0.04 * size)), max(2, round(0.06 * size))
        for p in placed:
            entry = rec["include"][p.group]
            assert p.shape == entry["class"]
            assert p.color == entry.get("color", p.color) and p.color in COLORS
            x0, y0, x1, y1 = p.box
            assert margin <= x0 and x1 <= size - margin and margin <= y0 and y1 <= size - margin
            assert p.side >= MIN_SIDE
        for a in range(len(placed)):
            for b in range(a + 1, len(placed)):
                A, B = placed[a].box, placed[b].box
                assert A[0] >= B[2] + gap or B[0] >= A[2] + gap or A[1] >= B[3] + gap or B[1] >= A[3] + gap
        for g, entry in enumerate(rec["include"]):
            if "position" in entry:  # the relation holds even with a 3x stricter margin than the verifier's
                rel, ref = entry["position"]
                a = next(p for p in placed if p.group == g)
                b = next(p for p in placed if p.group == ref)
                assert rel in relations(a.centroid, (a.side,) * 2, b.centroid, (b.side,) * 2, threshold=0.3)


def test_uncoloured_objects_get_varied_palette_colours():
    seen = {p.color for i in range(60) for p in render_scene("a photo of four circles", seed=i)[1]}
    assert seen == set(COLORS)


def test_render_errors():
    with pytest.raises(ValueError, match="size"):
        render("a photo of a circle", size=8)
    with pytest.raises(ValueError, match="either seed or rng"):
        render("a photo of a circle", seed=1, rng=np.random.default_rng(1))
    bad = {
        "tag": "counting",
        "include": [{"class": "circle", "count": 3}],
        "exclude": [{"class": "circle", "count": 3}],
        "prompt": "x",
    }
    with pytest.raises(ValueError, match="contradictory"):
        render(bad)
    with pytest.raises(ValueError, match="outside the shapes grammar"):
        render("a photo of a dog")


def test_render_is_fast():
    recs = eval_prompts()
    render(recs[0], seed=0)
    t = time.perf_counter()
    for i, r in enumerate(recs):
        render(r, size=64, seed=i)
    per_image = (time.perf_counter() - t) / len(recs)
    print(f"render: {per_image * 1e3:.3f} ms per 64 px image")
    assert per_image < 0.005  # ≪ 10 ms (≈0.2 ms measured)
