"""Shared fixtures: one torch thread; a tiny encoder folder and a fast config for the model / trainer tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shared.training import load_config

from vqrae.config import VQRAEConfig
from vqrae.encoders import TinyViT, TinyViTConfig

torch.set_num_threads(1)


def tiny_encoder_dir(root: Path, *, width: int = 16, depth: int = 1, image_size: int = 16, patch: int = 4) -> Path:
    torch.manual_seed(0)
    d = root / "encoder"
    TinyViT(TinyViTConfig(image_size=image_size, patch=patch, width=width, depth=depth, heads=2)).save_pretrained(d)
    return d


def fast_config(root: Path, *overrides: str, steps: tuple[int, int] = (6, 4)) -> VQRAEConfig:
    enc = tiny_encoder_dir(root, image_size=32, patch=8)  # shapes scenes need 32 px; 4×4 tokens
    sets = [f"encoder.path={enc}", f"run.dir={root / 'run'}", "data.image_size=32", "data.train_size=64",
            "data.test_size=16", f"train.stage1_steps={steps[0]}", f"train.stage2_steps={steps[1]}",
            "train.batch_size=8", "train.warmup=2", "quantizer.codebook_size=32", "quantizer.dim=24",
            "run.save_every=5", "run.log_every=1", "run.progress=false", "run.threads=1", "eval.probe_train=36",
            "eval.probe_test=18", "eval.grid=4", "eval.batch_size=16", *overrides]
    return load_config(VQRAEConfig, preset="tiny", overrides=sets)


@pytest.fixture
def encoder_dir(tmp_path):
    """A random tiny ViT encoder folder (16 px, patch 4, width 16)."""
    return tiny_encoder_dir(tmp_path)


@pytest.fixture
def make_config(tmp_path):
    """``make_config(*overrides, steps=(s1, s2))``: the tiny preset shrunk to seconds, in ``tmp_path``."""
    return lambda *o, steps=(6, 4): fast_config(tmp_path, *o, steps=steps)
