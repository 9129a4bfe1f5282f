"""The trainer end to end on a tiny offline Pendulum set: it learns, resumes exactly, evaluates, and the CLI works."""

from __future__ import annotations

import json

import pytest

from shared.training import load_config, read_metrics

from wfdiffuser.cli import main
from wfdiffuser.config import WFConfig
from wfdiffuser.data import NoiseLevel, collect_episodes, write_dataset
from wfdiffuser.train import load_run, train

DATASET = "test/pendulum/tiny-v0"
TINY = ["data.dataset=" + DATASET, "data.build=false", "data.horizon=14", "model.dim=8", "model.dim_mults=1,2",
        "model.emb=8", "model.groups=4", "model.cond_dim=8", "model.cond_hidden=16", "model.inv_hidden=32",
        "model.diffusion_steps=5", "train.batch_size=16", "train.lr=3e-3", "run.progress=false",
        "run.log_every=5", "eval.episodes=2", "eval.n_envs=2", "eval.max_steps=12", "plan.sampler=ddim",
        "plan.sample_steps=2"]


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    eps = collect_episodes("Pendulum-v1", "pendulum_swing_up", [NoiseLevel(1.0, 0.5), NoiseLevel(0.5, 0.0)],
                           episodes_per_level=2, seed=0, max_steps=40)
    write_dataset(DATASET, eps, "Pendulum-v1", ref_min_score=-1200.0, ref_max_score=-150.0,
                  env_kwargs={"max_episode_steps": 40})
    return tmp_path


def _cfg(tmp_path, *extra: str) -> WFConfig:
    return load_config(WFConfig, None, TINY + [f"run.dir={tmp_path / 'run'}", *extra], preset="pendulum")


def test_loss_falls_and_evaluation_writes_scores(minari_root) -> None:
    out = train(_cfg(minari_root, "train.steps=150", "run.log_every=25"))
    losses = [m["loss"] for m in read_metrics(minari_root / "run" / "metrics.jsonl")]
    assert losses[-1] < 0.7 * losses[0], losses  # measured 1.24 → 0.75
    ev = json.loads((minari_root / "run" / "eval.json").read_text())
    assert ev["episodes"] == 2 and len(ev["returns"]) == 2 and all(r < 0 for r in ev["returns"])
    assert ev["ref_min_score"] == -1200.0 and "score_mean" in ev and "frequency_shift" in ev
    assert out["return_mean"] == pytest.approx(ev["return_mean"])


@pytest.mark.parametrize("kind", ["dd", "diffuser"])
def test_baselines_train_through_the_same_trainer(minari_root, kind: str) -> None:
    out = train(_cfg(minari_root, f"model.kind={kind}", "data.horizon=16", "train.steps=10", "run.evaluate=true"))
    assert out["kind"] == kind and len(out["returns"]) == 2


def test_resume_continues_with_identical_metrics(minari_root) -> None:
    full = _cfg(minari_root, "train.steps=20", "run.save_every=10", "run.evaluate=false", f"run.dir={minari_root}/a")
    train(full)
    part = _cfg(minari_root, "train.steps=10", "run.save_every=10", "run.evaluate=false", f"run.dir={minari_root}/b")
    train(part)
    resumed = _cfg(minari_root, "train.steps=20", "run.save_every=10", "run.evaluate=false",
                   f"run.dir={minari_root}/b")
    train(resumed)
    a = read_metrics(minari_root / "a" / "metrics.jsonl")
    b = read_metrics(minari_root / "b" / "metrics.jsonl")
    assert [m["step"] for m in b] == [5, 10, 15, 20]
    assert a == b
    _, model = load_run(minari_root / "b")
    assert model.spec.horizon == 14


def test_cli_train_eval_and_errors(minari_root, capsys) -> None:
    run = minari_root / "cli"
    args = ["train", *sum((["--set", o] for o in TINY), []), "--set", f"run.dir={run}", "--set", "train.steps=5"]
    assert main(args) == 0
    assert "return" in capsys.readouterr().out
    assert main(["eval", str(run), "--episodes", "1", "--set", "plan.guidance=0"]) == 0
    assert json.loads((run / "eval.json").read_text())["episodes"] == 1
    with pytest.raises(SystemExit):
        main(["eval", str(run), "--set", "model.dim=4"])
    assert "eval only changes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--set", "data.horizon=31"])
    assert "data.horizon" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "model.conditioner" in capsys.readouterr().out


def test_missing_dataset_is_named_before_anything_is_built(minari_root) -> None:
    from wfdiffuser.data import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError, match="mujoco/hopper/medium-v0"):
        train(_cfg(minari_root, "data.dataset=mujoco/hopper/medium-v0"))
    assert not (minari_root / "run").exists()
