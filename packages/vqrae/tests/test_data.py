"""Offline image sets and the crop + flip augmentation (card §4, §7)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from shared.shapes import COLOR_NAMES, SHAPES, detect_objects
from vqrae.data import (
    NUM_PAIRS,
    ImageSet,
    augment,
    digits_set,
    folder_set,
    load_images,
    pair_index,
    shapes_set,
    single_object_set,
)


def _detected_pairs(image: torch.Tensor) -> set[tuple[str, str]]:
    rgb = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return {(o.color, o.shape) for o in detect_objects(rgb)}


def _label_pairs(row: torch.Tensor) -> set[tuple[str, str]]:
    return {(COLOR_NAMES[i // len(SHAPES)], SHAPES[i % len(SHAPES)]) for i in torch.nonzero(row).flatten().tolist()}


def test_pair_index_order():
    assert NUM_PAIRS == 18
    assert pair_index(COLOR_NAMES[0], SHAPES[0]) == 0
    assert pair_index(COLOR_NAMES[1], SHAPES[2]) == 1 * len(SHAPES) + 2
    assert sorted(pair_index(c, s) for c in COLOR_NAMES for s in SHAPES) == list(range(18))


@pytest.mark.parametrize("tags", [None, "counting", "two_object"])  # counting/two_object leave colours to the renderer
def test_shapes_labels_match_the_verifiers_detections(tags):
    s = shapes_set(12, seed=3, tags=tags)
    assert s.images.shape == (12, 3, 32, 32) and s.images.dtype == torch.float32
    assert 0.0 <= s.images.min() and s.images.max() <= 1.0
    assert s.labels.shape == (12, NUM_PAIRS) and set(s.labels.unique().tolist()) <= {0.0, 1.0}
    for img, row in zip(s.images, s.labels, strict=True):
        assert row.sum() >= 1
        assert _label_pairs(row) == _detected_pairs(img)


def test_shapes_set_is_seeded():
    a, b, c = shapes_set(6, seed=1), shapes_set(6, seed=1), shapes_set(6, seed=2)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert shapes_set(4, seed=0, image_size=48).images.shape == (4, 3, 48, 48)


def test_single_object_labels_are_balanced_and_true():
    s = single_object_set(36, seed=5)
    assert s.labels.dtype == torch.long
    assert torch.bincount(s.labels, minlength=18).tolist() == [2] * 18
    for img, y in zip(s.images, s.labels.tolist(), strict=True):
        (pair,) = _detected_pairs(img)
        assert pair_index(*pair) == y


def _rows(t: torch.Tensor) -> list[tuple[int, ...]]:
    """Sorted rows (rounded): equal lists ⇔ the same multiset of images."""
    return sorted(map(tuple, (t * 1e4).round().long().tolist()))


def test_digits_split():
    train, test = digits_set("train"), digits_set("test")
    assert (len(train), len(test)) == (1438, 359)
    assert train.images.shape[1:] == (3, 32, 32) and train.images.dtype == torch.float32
    assert train.images.min() >= 0 and train.images.max() <= 1
    assert torch.equal(train.images[:, 0], train.images[:, 2])  # grey
    assert train.images[:, :, 0, 0].mean() > 0.99  # ink dark on a white background
    assert set(train.labels.tolist()) == set(range(10)) == set(test.labels.tolist())
    # together the two splits are exactly the 1,797 digits, each once: a partition (so they are disjoint)
    from sklearn.datasets import load_digits

    full = 1.0 - torch.from_numpy(load_digits().images).float() / 16
    full = F.interpolate(full[:, None], size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1)
    both = torch.cat([train.images[:, :1], test.images[:, :1]]).flatten(1)
    assert _rows(both) == _rows(full.flatten(1))
    assert torch.equal(digits_set("train").images, train.images)  # fixed split
    assert digits_set("test", image_size=16).images.shape == (359, 3, 16, 16)


def test_folder_loader(tmp_path):
    bands = np.zeros((30, 60, 3), dtype=np.uint8)  # H 30, W 60: red | green | blue bands of 20 px
    bands[:, :20, 0] = bands[:, 20:40, 1] = bands[:, 40:, 2] = 255
    Image.fromarray(bands).save(tmp_path / "a.png")
    rgba = np.zeros((20, 20, 4), dtype=np.uint8)  # fully transparent → white
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "b.png")
    (tmp_path / "sub").mkdir()
    Image.fromarray(np.full((12, 12, 3), 100, dtype=np.uint8)).save(tmp_path / "sub" / "c.jpg")
    (tmp_path / "notes.txt").write_text("not an image")

    s = folder_set(tmp_path, image_size=10)
    assert len(s) == 3 and s.labels is None and s.images.shape == (3, 3, 10, 10)
    assert s.images.min() >= 0 and s.images.max() <= 1
    a = s.images[0]  # 60×30 → 20×10, centre crop keeps original columns 15..45: green in the middle
    assert a[1, 5, 5] > 0.9 and a[0, 5, 5] < 0.1 and a[2, 5, 5] < 0.1
    assert a[0, 5, 0] > 0.3 and a[2, 5, 9] > 0.3  # red at the left edge, blue at the right edge
    assert torch.allclose(s.images[1], torch.ones(3, 10, 10))
    assert abs(s.images[2].mean().item() - 100 / 255) < 0.02  # recursive: sub/c.jpg
    assert len(folder_set(tmp_path, image_size=10, limit=1)) == 1

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty"):
        folder_set(empty, image_size=8)
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        folder_set(tmp_path / "missing_dir", image_size=8)


def _windows(padded: torch.Tensor, h: int, w: int) -> list[torch.Tensor]:
    return [padded[:, i:i + h, j:j + w] for i in range(padded.shape[1] - h + 1) for j in range(padded.shape[2] - w + 1)]


def test_augment_is_a_seeded_crop_and_flip():
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y1 = augment(x, torch.Generator().manual_seed(7), crop_pad=2, flip=True)
    y2 = augment(x, torch.Generator().manual_seed(7), crop_pad=2, flip=True)
    y3 = augment(x, torch.Generator().manual_seed(8), crop_pad=2, flip=True)
    assert y1.shape == x.shape and torch.equal(y1, y2) and not torch.equal(y1, y3)
    assert torch.equal(augment(x, torch.Generator(), crop_pad=0, flip=False), x)
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    moved = flipped = 0
    for i in range(len(x)):
        wins = _windows(padded[i], 8, 8)
        plain = any(torch.equal(y1[i], v) for v in wins)
        mirrored = any(torch.equal(y1[i].flip(-1), v) for v in wins)
        assert plain or mirrored  # every output is a window of the reflect-padded image, maybe flipped
        moved += not torch.equal(y1[i], x[i]) and not torch.equal(y1[i].flip(-1), x[i])
        flipped += mirrored and not plain
    assert moved > 0 and flipped > 0
    f = augment(x, torch.Generator().manual_seed(1), crop_pad=0, flip=True)
    assert all(torch.equal(f[i], x[i]) or torch.equal(f[i], x[i].flip(-1)) for i in range(len(x)))
    with pytest.raises(ValueError, match="crop_pad"):
        augment(x, torch.Generator(), crop_pad=8, flip=False)


def test_load_images_dispatch(tmp_path):
    tr = load_images("shapes", split="train", n=5, seed=2, image_size=32)
    te = load_images("shapes", split="test", n=5, seed=2, image_size=32)
    assert torch.equal(tr.images, shapes_set(5, seed=2).images)
    assert torch.equal(te.images, shapes_set(5, seed=10_002).images)
    assert not any(torch.equal(a, b) for a in tr.images for b in te.images)
    d = load_images("digits", split="test", n=10, seed=0, image_size=16)
    assert d.images.shape == (10, 3, 16, 16) and d.labels.shape == (10,)
    for split, value in (("train", 50), ("test", 200)):
        (tmp_path / split).mkdir()
        Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(tmp_path / split / "x.png")
    f = load_images("folder", split="test", n=0, seed=0, image_size=8, path=str(tmp_path))
    assert len(f) == 1 and abs(f.images.mean().item() - 200 / 255) < 1e-3
    with pytest.raises(ValueError, match="data.source") as e:
        load_images("imagenet", split="train", n=5, seed=0, image_size=32)
    assert "shapes" in str(e.value) and "folder" in str(e.value)


def test_image_set_batch():
    s = ImageSet(torch.rand(5, 3, 4, 4), torch.arange(5), "t")
    x, y = s.batch([4, 0])
    assert len(s) == 5 and torch.equal(x, s.images[[4, 0]]) and y.tolist() == [4, 0]
    assert ImageSet(torch.rand(2, 3, 4, 4), None, "u").batch(slice(0, 1))[1] is None
