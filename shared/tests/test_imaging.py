"""shared.imaging: image conversion (PIL / numpy / torch) and grids, plain and captioned, with expected pixel sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from shared.imaging import _line_length, image_grid, save_image_grid, to_pil_images, to_uint8_hwc

# --------------------------------------------------------------------------------------------------------------------
# conversion


def test_to_uint8_hwc_each_input_type():
    red = np.zeros((2, 5, 3), dtype=np.uint8)  # W = 5 so that HWC and CHW are not ambiguous
    red[..., 0] = 255
    cases = {
        "pil rgb": Image.fromarray(red),
        "pil palette": Image.fromarray(red).convert("P"),
        "numpy uint8 hwc": red,
        "numpy uint8 hwc rgba": np.concatenate([red, np.zeros((2, 5, 1), np.uint8)], axis=2),  # alpha dropped
        "numpy float hwc": red.astype(np.float64) / 255,
        "numpy int hwc": red.astype(np.int64) * 2,  # clipped to 255
        "numpy float chw": red.transpose(2, 0, 1).astype(np.float32) / 255,
        "torch float chw": torch.from_numpy(red).permute(2, 0, 1).float() / 255,
        "torch float 1chw": torch.from_numpy(red).permute(2, 0, 1)[None].float() / 255,
        "torch bf16 chw": (torch.from_numpy(red).permute(2, 0, 1).float() / 255).bfloat16(),
        "torch uint8 chw": torch.from_numpy(red).permute(2, 0, 1),
    }
    for name, image in cases.items():
        out = to_uint8_hwc(image)
        assert out.dtype == np.uint8 and out.shape == (2, 5, 3), name
        assert np.array_equal(out, red), name


def test_to_uint8_hwc_gray_alpha_and_range():
    assert np.array_equal(to_uint8_hwc(np.full((2, 2), 0.5)), np.full((2, 2, 3), 128, np.uint8))  # gray → RGB
    assert np.array_equal(to_uint8_hwc(torch.ones(1, 2, 2)), np.full((2, 2, 3), 255, np.uint8))
    assert to_uint8_hwc(torch.full((3, 1, 1), 2.0))[0, 0].tolist() == [255, 255, 255]  # float clipped to [0, 1]
    assert to_uint8_hwc(torch.full((3, 1, 1), -1.0))[0, 0].tolist() == [0, 0, 0]
    transparent = Image.new("RGBA", (2, 2), (0, 0, 0, 0))
    assert to_uint8_hwc(transparent)[0, 0].tolist() == [255, 255, 255]  # composited onto white
    assert to_uint8_hwc(Image.new("L", (2, 2), 7))[0, 0].tolist() == [7, 7, 7]


def test_to_uint8_hwc_rejects_bad_shapes():
    for bad in (torch.zeros(5, 4, 4), torch.zeros(2, 3, 4, 4), np.zeros((5, 4, 5)), np.zeros(4)):
        with pytest.raises(ValueError, match="expected images of shape"):
            to_uint8_hwc(bad)


def test_to_pil_images_formats():
    batch = torch.rand(4, 3, 5, 6)
    pil = to_pil_images(batch)
    assert len(pil) == 4 and all(im.mode == "RGB" and im.size == (6, 5) for im in pil)
    assert np.array_equal(np.asarray(pil[2]), to_uint8_hwc(batch[2]))
    assert to_pil_images(torch.ones(1, 1, 4, 4))[0].getpixel((0, 0)) == (255, 255, 255)
    assert to_pil_images(torch.full((3, 2, 2), 255, dtype=torch.uint8))[0].size == (2, 2)
    assert len(to_pil_images([torch.zeros(3, 2, 2), torch.zeros(3, 2, 2)])) == 2
    assert len(to_pil_images([batch, batch[:1], Image.new("RGB", (6, 5))])) == 6  # lists of batches are flattened
    assert len(to_pil_images(np.zeros((3, 5, 6, 3), np.uint8))) == 3  # numpy (B, H, W, C)
    assert len(to_pil_images(np.zeros((3, 3, 5, 6), np.float32))) == 3  # numpy (B, C, H, W)
    assert to_pil_images(Image.new("RGBA", (3, 3)))[0].mode == "RGB"
    assert to_pil_images([]) == [] and to_pil_images(torch.zeros(0, 3, 4, 4)) == []
    with pytest.raises(ValueError, match="expected images of shape"):
        to_pil_images(torch.zeros(2, 5, 4, 4))
    with pytest.raises(TypeError):
        to_pil_images("image.png")


# --------------------------------------------------------------------------------------------------------------------
# grids


def test_grid_from_tensor_size_and_pixels(tmp_path):
    imgs = torch.zeros(5, 3, 16, 16)
    imgs[0, 0] = 1.0  # first tile pure red
    out = save_image_grid(imgs, tmp_path / "g" / "grid.png", nrow=3, padding=2)  # parent folder created
    with Image.open(tmp_path / "g" / "grid.png") as im:
        assert im.size == (3 * 16 + 4 * 2, 2 * 16 + 3 * 2) == out.size
        assert im.getpixel((2, 2)) == (255, 0, 0)  # inside the first tile
        assert im.getpixel((0, 0)) == (255, 255, 255)  # padding
        assert im.getpixel((2 + 16 + 2, 2)) == (0, 0, 0)  # second tile
        assert im.getpixel((2 + 2 * 18 + 5, 2 + 18 + 5)) == (255, 255, 255)  # empty last cell


def test_plain_grid_of_shapes_renders():  # GenEval's per-prompt grid.png
    from shared.shapes import eval_prompts, render

    recs = eval_prompts(per_tag=1)
    g = image_grid([render(r, size=32, seed=0) for r in recs[:4]], padding=2)
    assert g.mode == "RGB" and g.size == (2 * 32 + 3 * 2, 2 * 32 + 3 * 2)
    assert np.array_equal(np.asarray(g)[2:34, 2:34], np.asarray(render(recs[0], size=32, seed=0).convert("RGB")))


def test_grid_scale_default_nrow_mixed_sizes_and_background():
    tiles = [Image.new("RGB", (8, 6), (0, 0, 255)) for _ in range(4)] + [Image.new("RGB", (4, 4))]
    grid = image_grid(tiles, scale=2, padding=1)
    assert grid.size == (3 * 16 + 4, 2 * 12 + 3)  # ceil(sqrt(5)) = 3 per row; odd-sized tile resized
    assert image_grid(tiles[:2], nrow=8, padding=0).size == (2 * 8, 6)  # nrow capped at the number of images
    assert image_grid(tiles[:1], padding=0).size == (8, 6)
    grey = image_grid(tiles[:2], padding=3, background=(9, 9, 9))
    assert grey.getpixel((0, 0)) == (9, 9, 9) and grey.getpixel((3, 3)) == (0, 0, 255)


def test_grid_captions_add_a_band():
    imgs = torch.rand(4, 3, 32, 32)
    plain = image_grid(imgs, nrow=2)
    caps = ["a photo of three red circles left of a blue square", "a cat", "x", "supercalifragilistic"]
    cap = image_grid(imgs, nrow=2, captions=caps, scale=4)
    short = image_grid(imgs, nrow=2, captions=caps, scale=4, max_caption_lines=1)
    assert plain.size == (2 * 32 + 6, 2 * 32 + 6)
    assert cap.size[0] == short.size[0] == 2 * 128 + 3 * 2
    assert cap.size[1] > short.size[1] > 2 * 128 + 3 * 2  # more lines → taller band; one line still adds a band
    band = cap.crop((2, 2 + 128, 2 + 128, 2 + 128 + 10)).convert("L")
    assert min(band.getdata()) < 128  # some dark caption pixels under the first tile
    assert np.array_equal(np.asarray(cap)[2:130, 2:130], np.asarray(image_grid(imgs[:1], scale=4, padding=0)))


def test_caption_newlines_force_lines():
    img = torch.ones(1, 3, 64, 64)
    one = image_grid(img, captions=["a"], padding=0)
    three = image_grid(img, captions=["a\nb\nc"], padding=0)
    band = one.size[1] - 64
    assert band > 0 and three.size[1] - 64 > 2 * band
    cut = image_grid(img, captions=["a\nb\nc"], padding=0, max_caption_lines=2)
    assert one.size[1] < cut.size[1] < three.size[1]


def test_grid_errors(tmp_path):
    imgs = torch.rand(4, 3, 8, 8)
    with pytest.raises(ValueError, match="at least one image"):
        image_grid([])
    with pytest.raises(ValueError, match="at least one image"):
        save_image_grid(torch.zeros(0, 3, 8, 8), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(ValueError, match="3 captions for 4 images"):
        image_grid(imgs, captions=["a", "b", "c"])
    with pytest.raises(ValueError, match="scale"):
        image_grid(imgs, scale=1.5)
    with pytest.raises(ValueError, match="padding"):
        image_grid(imgs, padding=-1)


def test_old_names_are_reexports():
    import shared.imaging as imaging
    import shared.shapes
    import shared.shapes.detect
    import shared.training
    import shared.training.plots

    assert shared.shapes.image_grid is imaging.image_grid
    assert shared.shapes.detect.to_uint8_hwc is shared.shapes.to_uint8_hwc is imaging.to_uint8_hwc
    assert shared.training.save_image_grid is shared.training.plots.save_image_grid is imaging.save_image_grid
    assert shared.training.to_pil_images is shared.training.plots.to_pil_images is imaging.to_pil_images



def test_caption_words_keep_a_visible_gap():
    """PIL's default font draws a 2-px space ("trianglesare"); caption words stay at least 0.4 em (4 px at the
    default size 10) apart, and the wrap width counts that gap."""
    font = ImageFont.load_default()
    img = np.zeros((8, 60, 3), dtype=np.uint8)
    band = np.asarray(image_grid(img, captions=["ab cd"], padding=0).convert("L"))[8:]
    inked = np.flatnonzero((band < 128).any(axis=0))
    assert (np.diff(inked) - 1).max() >= 4
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    assert _line_length(scratch, "ab cd", font) >= scratch.textlength("ab cd", font=font) + 2
