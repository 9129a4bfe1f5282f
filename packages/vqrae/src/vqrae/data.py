"""Offline image sets for VQRAE (card §7) and the paper's augmentation (card §4: random crop + flip).

Every set is an :class:`ImageSet` of float32 images (N, 3, H, W) in [0, 1] with optional labels:

    shapes_set(n, seed=s)          shapes-world scenes of all six GenEval tags; labels multi-hot (N, 18) over the
                                   (colour, shape) pairs drawn, index = colour_index · len(SHAPES) + shape_index
    single_object_set(n, seed=s)   one object per image; labels 0..17 (same index) — the linear-probe task
    digits_set(split)              scikit-learn's bundled 8×8 digits, ink 1 − v/16 (dark on white), bilinear to
                                   image_size, grey → RGB; a fixed seeded 80/20 split; labels 0..9
    folder_set(path, image_size=s) your own png/jpg/jpeg/webp files (recursive, sorted): shorter side → s, centre crop

``load_images(source, split=..., ...)`` dispatches on ``data.source``; the shapes test split renders with
``seed + 10_000`` so held-out images differ from the training ones.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from shared.errors import ConfigError
from shared.imaging import to_uint8_hwc
from shared.shapes import COLOR_NAMES, SHAPES, generate_prompts, render_scene
from shared.shapes.prompts import colors as colour_record

__all__ = ["IMAGE_EXTENSIONS", "NUM_PAIRS", "SOURCES", "TEST_SEED_OFFSET", "ImageSet", "augment", "digits_set",
           "folder_set", "load_images", "pair_index", "shapes_set", "single_object_set"]

SOURCES: tuple[str, ...] = ("shapes", "digits", "folder")
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp")
NUM_PAIRS = len(COLOR_NAMES) * len(SHAPES)  # 18 (colour, shape) classes
TEST_SEED_OFFSET = 10_000  # shapes test split renders with seed + this
DIGITS_SPLIT_SEED = 0  # the fixed permutation of the 1,797 digits
DIGITS_TRAIN_FRACTION = 0.8


@dataclass
class ImageSet:
    """Images (N, 3, H, W) float32 in [0, 1]; ``labels`` (N,) long, (N, K) float multi-hot, or None; a ``name``."""

    images: Tensor
    labels: Tensor | None
    name: str
    captions: list[str] | None = None  # shapes-world prompts of rendered scenes (kept in token dumps)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, idx: Tensor | Sequence[int] | slice) -> tuple[Tensor, Tensor | None]:
        """(images[idx], labels[idx] or None)."""
        if not isinstance(idx, slice):
            idx = torch.as_tensor(idx, dtype=torch.long)
        return self.images[idx], (None if self.labels is None else self.labels[idx])


def pair_index(color: str, shape: str) -> int:
    """Class of a (colour, shape) pair: ``COLOR_NAMES.index(color) · len(SHAPES) + SHAPES.index(shape)``."""
    return COLOR_NAMES.index(color) * len(SHAPES) + SHAPES.index(shape)


def _to_tensor(images: list[Image.Image]) -> Tensor:
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def _render(records: list[dict], image_size: int, seed: int) -> tuple[Tensor, list[list]]:
    """Render ``records`` with one seeded stream; returns images and the objects actually drawn (the truth)."""
    rng = np.random.default_rng([seed, 1])  # prompts use default_rng(seed); keep the streams apart
    images, placed = [], []
    for rec in records:
        im, objs = render_scene(rec, size=image_size, rng=rng)
        images.append(im)
        placed.append(objs)
    return _to_tensor(images), placed


def shapes_set(n: int, *, seed: int, image_size: int = 32, tags: Iterable[str] | str | None = None) -> ImageSet:
    """``n`` shapes-world scenes balanced over ``tags`` (default all six); multi-hot (n, 18) labels of the
    (colour, shape) pairs present, read from the renderer's placed objects (colours the prompt leaves open are
    drawn at random by the renderer)."""
    records = generate_prompts(n, seed=seed, tags=tags)
    images, placed = _render(records, image_size, seed)
    labels = torch.zeros(len(records), NUM_PAIRS)
    for i, objs in enumerate(placed):
        for p in objs:
            labels[i, pair_index(p.color, p.shape)] = 1.0
    return ImageSet(images, labels, f"shapes(n={n}, seed={seed}, size={image_size})",
                    captions=[r["prompt"] for r in records])


def single_object_set(n: int, *, seed: int, image_size: int = 32) -> ImageSet:
    """``n`` single-object scenes with class labels 0..17 (colour × shape), classes balanced and shuffled."""
    if n < 0:
        raise ValueError(f"n={n}: expected a non-negative number of images")
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.arange(n) % NUM_PAIRS)
    records = [colour_record(SHAPES[c % len(SHAPES)], COLOR_NAMES[c // len(SHAPES)]) for c in classes]
    images, placed = _render(records, image_size, seed)
    labels = torch.tensor([pair_index(objs[0].color, objs[0].shape) for objs in placed], dtype=torch.long)
    return ImageSet(images, labels, f"single_object(n={n}, seed={seed}, size={image_size})")


def digits_set(split: str = "train", image_size: int = 32) -> ImageSet:
    """scikit-learn's 8×8 digits (bundled, offline) as dark ink on white, bilinear-upsampled; fixed 80/20 split."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}: expected 'train' or 'test'")
    from sklearn.datasets import load_digits

    d = load_digits()
    x = 1.0 - torch.from_numpy(d.images.astype(np.float32)) / 16.0  # (N, 8, 8), ink dark on white
    x = F.interpolate(x[:, None], size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = x.clamp(0.0, 1.0).expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(d.target.astype(np.int64))
    order = torch.from_numpy(np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(y)))
    n_train = round(DIGITS_TRAIN_FRACTION * len(y))
    idx = order[:n_train] if split == "train" else order[n_train:]
    return ImageSet(x[idx], y[idx], f"digits({split}, size={image_size})")


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _load_square(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as im:
        im = Image.fromarray(to_uint8_hwc(im))  # RGB; transparency composited onto white
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8)


def folder_set(path: str | Path, *, image_size: int, limit: int | None = None) -> ImageSet:
    """Your images under ``path`` (png/jpg/jpeg/webp, recursive, sorted; at most ``limit``): shorter side resized
    to ``image_size`` (bicubic), then centre-cropped; no labels."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"data.path={str(folder)!r} is not a folder; set data.path to a folder of images")
    files = _list_images(folder)
    if limit is not None and limit > 0:
        files = files[:limit]
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {str(folder)!r} (searched "
                         "recursively); put images there or point data.path at another folder")
    arr = np.stack([_load_square(f, image_size) for f in files])
    images = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    return ImageSet(images, None, f"folder({folder}, n={len(files)}, size={image_size})")


def augment(x: Tensor, generator: torch.Generator, *, crop_pad: int, flip: bool) -> Tensor:
    """Random crop (reflect-pad every side by ``crop_pad``, crop a random H×W window) and, with ``flip``, a
    horizontal flip with probability ½ — independently per image, drawn from ``generator`` (CPU)."""
    b, _, h, w = x.shape
    if crop_pad < 0 or crop_pad >= min(h, w):
        raise ValueError(f"crop_pad={crop_pad}: expected 0 ≤ crop_pad < {min(h, w)} (data.crop_pad)")
    if crop_pad > 0:
        p = crop_pad
        padded = F.pad(x, (p, p, p, p), mode="reflect")
        off = torch.randint(0, 2 * p + 1, (b, 2), generator=generator).to(x.device)
        rows = off[:, 0:1] + torch.arange(h, device=x.device)  # (B, H)
        cols = off[:, 1:2] + torch.arange(w, device=x.device)  # (B, W)
        bi = torch.arange(b, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()
    if flip:
        mask = (torch.rand(b, generator=generator) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x


def load_images(source: str, *, split: str, n: int, seed: int, image_size: int, path: str = "") -> ImageSet:
    """The ``split`` ("train" | "test") of ``data.source``.

    shapes: ``n`` renders seeded by ``seed`` (train) or ``seed + 10_000`` (test). digits: the fixed split, at most
    ``n`` images when n > 0. folder: ``path/<split>`` when that subfolder exists, else all of ``path`` for both
    splits (with a warning: then held-out images are training images); at most ``n`` when n > 0.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}: expected 'train' or 'test'")
    if source == "shapes":
        if n < 1:
            raise ConfigError(f"data.source=shapes needs n ≥ 1 images for split {split!r}, got {n}")
        return shapes_set(n, seed=seed if split == "train" else seed + TEST_SEED_OFFSET, image_size=image_size)
    if source == "digits":
        s = digits_set(split, image_size)
        if 0 < n < len(s):
            s = ImageSet(s.images[:n], s.labels[:n] if s.labels is not None else None, s.name)
        return s
    if source == "folder":
        if not path:
            raise ConfigError("data.path is empty while data.source=folder; set data.path to your image folder")
        sub = Path(path) / split
        if sub.is_dir():
            return folder_set(sub, image_size=image_size, limit=n if n > 0 else None)
        warnings.warn(f"{path!r} has no {split!r} subfolder: the {split} split uses every image in it (held-out "
                      "images then equal training images; add train/ and test/ subfolders to separate them)",
                      stacklevel=2)
        return folder_set(path, image_size=image_size, limit=n if n > 0 else None)
    raise ConfigError(f"data.source={source!r} is not one of {list(SOURCES)}; set data.source to one of them")
