"""The benchmark scripts run end to end on CPU with tiny settings (their numbers are not asserted: ratios belong
to the scripts' own tables), and the chunk-forward benchmark's built-in check holds: both forward modes log the
same losses."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, folder: str = "tools/bench"):
    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chunk_forward_bench_modes_agree(tmp_path):
    out = tmp_path / "cf"
    _load("chunk_forward").main(["--iterations", "2", "--chunks", "1,2,3", "--prompts", "1", "--group-size", "2",
                                 "--out", str(out)])
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["same_losses"] is True and data["ratio"] > 0
    assert len(data["batched"]["policy_loss"]) == 2


def test_skip_zero_advantage_bench_on_the_shipped_base(tmp_path):
    out = tmp_path / "sz"
    _load("skip_zero_advantage").main(["--iterations", "2", "--set", "prompts.per_iteration=4",
                                       "--set", "sample.group_size=4", "--set", "sample.micro_batch_size=4",
                                       "--out", str(out)])
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["same_first_rollout"] is True and data["first_loss_diff"] <= 1e-5
    assert data["all_rows"]["rows_skipped"] == [0.0, 0.0]
    # at least the rows of tied groups are left out (a row of another group is too if it equals its group's mean)
    skipped, tied = data["skip"]["rows_skipped"], data["skip"]["zero_std_ratio"]
    assert max(tied) > 0 and all(s >= t for s, t in zip(skipped, tied, strict=True))


def test_gpu_flow_bench_tiny_on_cpu(tmp_path):
    out = tmp_path / "gf"
    _load("gpu_flow").main(["--size", "tiny", "--device", "cpu", "--modes", "full", "--iterations", "1",
                            "--num-steps", "3", "--prompts", "1", "--group-size", "2", "--out", str(out)])
    row = json.loads(out.with_suffix(".json").read_text())["rows"][0]
    assert row["images"] == 2 and row["images_per_s"] > 0 and row["flops_train_per_sample"] > row["flops_forward_per_sample"] > 0
    assert "| full |" in out.with_suffix(".md").read_text()


def test_grad_snr_tool_runs_on_the_base(capsys):
    _load("grad_snr", "tools").main(["--prompts", "1", "--group-size", "2", "--batches", "2", "--num-steps", "4",
                                     "--chunks", "1,2"])
    out = capsys.readouterr().out
    assert "gradient cosine between independent 2-sample batches" in out and "the transitions explain" in out


def test_grad_snr_step_check_uses_common_noise(capsys):
    _load("grad_snr", "tools").main(["--prompts", "2", "--group-size", "4", "--batches", "2", "--num-steps", "4",
                                     "--chunks", "1,2", "--step-lrs", "0.05,0", "--eval-per-tag", "2",
                                     "--tags", "single_object,colors", "--skip-variance"])
    out = capsys.readouterr().out
    assert "the transitions explain" not in out
    # lr 0, taken after the large steps: the weights were restored and the evaluation redraws the same noise, so
    # nothing changes (a tiny batch may have zero advantages and no gradient; then only the noise part is tested)
    assert "lr 0: score +0.0000 (+0.000, +0.000), reward +0.0000 (+0.000, +0.000)" in out
    assert "lr 0, the 2 batches pooled: score +0.0000, reward +0.0000" in out
    assert sum(line.strip().startswith("lr 0.05") for line in out.splitlines()) == 2


def test_rollout_vlm_bench_tiny(tmp_path):
    out = tmp_path / "rv"
    _load("rollout_vlm").main(["--questions", "1", "--group", "2", "--micro-batch", "2", "--max-new-tokens", "4",
                               "--repeats", "1", "--threads", "1", "--out", str(out)])
    data = json.loads(out.with_suffix(".json").read_text())
    rows = data["rows"]
    assert set(rows) == {"ours", "batched + forward", "naive"} and data["completions"] == 2
    # the same batches and seeds: the batched sides generate the same tokens
    assert rows["ours"]["tokens"] == rows["batched + forward"]["tokens"] > 0
    assert data["ratio_ours_over_naive"] > 0 and "ours / naive" in out.with_suffix(".md").read_text()
