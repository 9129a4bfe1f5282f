"""A tiny pixel-space SD3 pipeline saved once per session (seconds on CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from shared.tiny import TinySD3Config, tiny_sd3_pipeline

    d = tmp_path_factory.mktemp("tiny_sd3")
    tiny_sd3_pipeline(TinySD3Config(vae_channels=None, with_t5=False, patch_size=4)).save_pretrained(d)
    return d
