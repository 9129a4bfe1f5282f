"""Sample grids and metric curves are written with the expected pixel sizes."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from shared.training import MetricsLogger, plot_curves, save_image_grid, to_pil_images


def test_grid_from_tensor_size_and_pixels(tmp_path):
    imgs = torch.zeros(5, 3, 16, 16)
    imgs[0, 0] = 1.0  # first tile pure red
    out = save_image_grid(imgs, tmp_path / "g" / "grid.png", nrow=3, padding=2)
    with Image.open(tmp_path / "g" / "grid.png") as im:
        assert im.size == (3 * 16 + 4 * 2, 2 * 16 + 3 * 2) == out.size
        assert im.getpixel((2, 2)) == (255, 0, 0)  # inside the first tile
        assert im.getpixel((0, 0)) == (255, 255, 255)  # padding
        assert im.getpixel((2 + 16 + 2, 2)) == (0, 0, 0)  # second tile


def test_grid_scale_default_nrow_and_pil_input(tmp_path):
    tiles = [Image.new("RGB", (8, 6), (0, 0, 255)) for _ in range(4)] + [Image.new("RGB", (4, 4))]
    grid = save_image_grid(tiles, tmp_path / "grid.png", scale=2, padding=1)
    assert grid.size == (3 * 16 + 4, 2 * 12 + 3)  # ceil(sqrt(5)) = 3 per row; odd-sized tile resized


def test_grid_captions_add_a_band(tmp_path):
    imgs = torch.rand(4, 3, 32, 32)
    plain = save_image_grid(imgs, tmp_path / "plain.png", nrow=2)
    caps = ["a photo of three red circles left of a blue square", "a cat", "x", "supercalifragilistic"]
    cap = save_image_grid(imgs, tmp_path / "cap.png", nrow=2, captions=caps, scale=4)
    short = save_image_grid(imgs, tmp_path / "short.png", nrow=2, captions=caps, scale=4, max_caption_lines=1)
    assert cap.size[0] == 2 * 128 + 3 * 2 and cap.size[1] > short.size[1] > 2 * 128 + 3 * 2
    assert plain.size == (2 * 32 + 6, 2 * 32 + 6)
    band = cap.crop((2, 2 + 128, 2 + 128, 2 + 128 + 10)).convert("L")
    assert min(band.getdata()) < 128  # some dark caption pixels under the first tile
    with pytest.raises(ValueError, match="3 captions for 4 images"):
        save_image_grid(imgs, tmp_path / "x.png", captions=caps[:3])


def test_to_pil_images_formats():
    assert to_pil_images(torch.ones(1, 1, 4, 4))[0].getpixel((0, 0)) == (255, 255, 255)
    assert to_pil_images(torch.full((3, 2, 2), 255, dtype=torch.uint8))[0].size == (2, 2)
    assert len(to_pil_images([torch.zeros(3, 2, 2), torch.zeros(3, 2, 2)])) == 2
    with pytest.raises(ValueError, match="expected images of shape"):
        to_pil_images(torch.zeros(2, 5, 4, 4))


def test_plot_curves_from_jsonl(tmp_path):
    with MetricsLogger(tmp_path) as logger:
        for s in range(1, 31):
            logger.log({"reward_mean": math.sin(s / 5) + s / 30, "reward_std": 0.2, "loss": 1 / s}, step=s)
        logger.log({"loss": float("nan")}, step=31)  # missing / non-finite values are skipped
    p = plot_curves(tmp_path, ["reward_mean", "loss"], tmp_path / "curves.png",
                    std_keys={"reward_mean": "reward_std"}, smooth=0.6, figsize=(6, 4), dpi=50, title="run")
    with Image.open(p) as im:
        assert im.size == (300, 200)
        assert len(set(im.convert("RGB").getdata())) > 10  # something was drawn
    single = plot_curves([{"step": 1, "x": 1.0}, {"step": 2, "x": 2.0}], "x", tmp_path / "x.png", dpi=40)
    with Image.open(single) as im:
        assert im.size == (int(6.4 * 40), int(2.4 * 40))
    with pytest.raises(ValueError, match=r"'rewrd' not found.*available: loss, reward_mean, reward_std, step"):
        plot_curves(tmp_path, ["rewrd"], tmp_path / "y.png")
    with pytest.raises(ValueError, match="smooth"):
        plot_curves(tmp_path, ["loss"], tmp_path / "y.png", smooth=1.0)
