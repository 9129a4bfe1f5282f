"""Metric curves are written with the expected pixel sizes (sample grids: test_imaging.py)."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from shared.training import MetricsLogger, plot_curves


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
