"""The repro scripts run end to end on CPU at toy sizes (2 iterations, one prompt per category) and write their
table, JSON and plot; their statistics helpers are checked on constructed curves."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / "repro" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_steps_to_threshold_uses_the_trailing_mean():
    s = _load("arms")
    curve = [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert s.steps_to_threshold(curve, 0.6, window=5) == 8  # means at 5..8: 0, .2, .4, .6
    assert s.steps_to_threshold(curve, 0.7, window=5) is None
    assert s.steps_to_threshold([0.9] * 5, 0.9, window=5) == 5


@pytest.mark.parametrize(("script", "arms"), [("slas_vs_dance", "dance,slas_g1"), ("chunk_vs_step", "step,dance_grpo"),
                                              ("mask_grpo_ablation", "p1,unmask")])
def test_repro_script_runs_tiny(tmp_path, script, arms):
    out = tmp_path / "res"
    argv = ["--arms", arms, "--seeds", "1", "--iterations", "2", "--eval-per-tag", "1", "--runs", str(tmp_path / "runs"),
            "--out", str(out), "--set", "prompts.per_iteration=1", "--set", "sample.group_size=2", "--jobs", "2"]
    if script in ("slas_vs_dance", "mask_grpo_ablation"):
        argv += ["--eval-every", "1"]
    _load(script).main(argv)
    data = json.loads(out.with_suffix(".json").read_text())
    assert set(data["summary"]) == set(arms.split(","))
    assert all(len(c) == 2 for curves in data["curves"].values() for c in curves)
    assert out.with_suffix(".png").stat().st_size > 0 and "| arm |" in out.with_suffix(".md").read_text()


def test_objectives_script_runs_tiny(tmp_path):
    out = tmp_path / "obj"
    small = ["data.train_size=8", "data.test_size=3", "data.ood_size=3", "rollout.prompts_per_step=2",
             "rollout.group_size=2", "rollout.max_new_tokens=6", "eval.samples=2"]
    argv = ["--arms", "grpo,dr_grpo", "--seeds", "1", "--steps", "2", "--runs", str(tmp_path / "runs"),
            "--out", str(out), "--jobs", "2", *[x for kv in small for x in ("--set", kv)]]
    _load("objectives").main(argv)
    data = json.loads(out.with_suffix(".json").read_text())
    assert set(data["summary"]) == {"grpo", "dr_grpo"} and data["steps"] == 2
    row = data["summary"]["grpo"]
    assert set(row) >= {"test", "ood", "test_sampled", "ood_sampled", "length_mean_std"}
    assert all(len(c) == 2 for c in row["train_accuracy_curves"])
    md = out.with_suffix(".md").read_text()
    assert "| base (SFT) |" in md and "test avg@k" in md and "(share, greedy held-out)" in md
    assert out.with_suffix(".png").stat().st_size > 0
    out.with_suffix(".json").unlink()
    _load("objectives").main([*argv, "--report"])  # rebuilds the report from the finished runs, trains nothing
    assert json.loads(out.with_suffix(".json").read_text())["summary"] == data["summary"]
    assert "--report" not in out.with_suffix(".md").read_text()
