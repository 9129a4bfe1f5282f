"""tools/eval_runs.py re-scores a finished mask_grpo run: with the run's own evaluation seed and size it reproduces
the run's first and last in-training evaluations exactly (base and trained weights)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from shared.training import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("eval_runs", ROOT / "tools" / "eval_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rescoring_reproduces_the_in_training_evaluations(tmp_path):
    from mask_grpo.backends.shapes import tiny_shapes_policy
    from mask_grpo.cli import main

    torch.set_num_threads(1)
    tiny_shapes_policy().save_pretrained(tmp_path / "base")
    run = tmp_path / "run"
    assert main(["train", "--set", f"model.path={tmp_path / 'base'}", "--set", f"run.dir={run}",
                 "--set", "prompts.per_iteration=2", "--set", "sample.group_size=2", "--set", "train.iterations=3",
                 "--set", "train.lr=0.1", "--set", "run.eval_every=3", "--set", "run.eval_per_tag=2",
                 "--set", "run.grids=false", "--set", "run.progress=false", "--set", "run.eval_seed=3",
                 "--set", "reward.names=jpeg_compressibility", "--set", "reward.kwargs={}"]) == 0
    m = read_metrics(run)
    assert m[0]["eval/reward_mean"] != m[-1]["eval/reward_mean"]  # the weights moved enough to tell them apart
    out = _tool().main([str(run), "--per-tag", "2", "--samples", "2", "--seed", "3"])
    assert out["base"]["eval/reward_mean"] == pytest.approx(m[0]["eval/reward_mean"], abs=1e-6)
    assert out["runs"][str(run)]["eval/reward_mean"] == pytest.approx(m[-1]["eval/reward_mean"], abs=1e-6)
