"""The Mask-GRPO trainer on the toy policy: it learns, ratio 1 on-policy, the clip acts on a second update, the
filter resamples, β = 0 builds no reference, resume continues the same run (mask_grpo.md §5, §6, §10)."""

from __future__ import annotations

import math

import pytest
import torch

import mask_grpo.train as train_mod
from mask_grpo.config import MaskGRPOConfig
from mask_grpo.filtering import VanishingSampleFilter
from mask_grpo.toy import ToyPolicy
from shared.errors import ConfigError
from shared.training import load_config, read_metrics


def zero_fraction(images, prompts, records):
    """Reward: the fraction of token-0 cells of the toy image (token 0 decodes to 0.0)."""
    return (images[:, 0] == 0).float().mean(dim=(1, 2))


def _cfg(tmp_path, *extra):
    (tmp_path / "p.txt").write_text("p 1\np 2\np 3\n")
    return load_config(MaskGRPOConfig, overrides=[
        f"model.path={tmp_path}", f"run.dir={tmp_path / 'run'}", "prompts.source=file",
        f"prompts.file={tmp_path / 'p.txt'}", "prompts.per_iteration=3", "sample.group_size=8", "sample.steps=4",
        "train.iterations=20", "train.lr=0.05", "run.eval_every=0", "run.grids=false", "filter.min_history=4",
        "run.progress=false", *extra])


def _run(cfg, **kw):
    train_mod.train(cfg, policy=ToyPolicy(codebook_size=6, grid=(3, 4)), reward=zero_fraction, **kw)
    return read_metrics(cfg.run.dir)


def test_reward_goes_up_and_first_pass_is_on_policy(tmp_path):
    m = _run(_cfg(tmp_path))
    first = sum(r["reward_mean"] for r in m[:3]) / 3
    last = sum(r["reward_mean"] for r in m[-3:]) / 3
    assert first < 0.3 and last > first + 0.3  # toy base ≈ 1/6 of token 0
    for r in m:  # one update per rollout: every ratio is 1 and nothing is clipped
        assert r["ratio_min"] == pytest.approx(1.0, abs=1e-5) and r["ratio_max"] == pytest.approx(1.0, abs=1e-5)
        assert r["clipfrac_low"] == 0 and r["clipfrac_high"] == 0


@pytest.mark.parametrize("kind", ["p1", "p2", "ar"])
def test_second_update_is_off_policy_and_clipped(tmp_path, kind):
    m = _run(_cfg(tmp_path, "train.iterations=3", "train.updates_per_rollout=2", "train.lr=0.3",
                  f"train.logprob={kind}"))
    assert max(r["clipfrac_low"] + r["clipfrac_high"] for r in m) > 0.05
    assert max(r["ratio_max"] for r in m) > 1.2 or min(r["ratio_min"] for r in m) < 0.9
    assert all(r["optimizer_steps"] == 2 for r in m)


def test_filter_resamples_low_std_groups():
    f = VanishingSampleFilter(10.0, min_history=5, max_tries=2)
    assert not f.should_resample(0.0)  # too little history
    f.observe([0.5, 0.4, 0.3, 0.6, 0.7, 0.2, 0.8, 0.9, 0.35, 0.45])
    q = f.threshold()
    assert q == pytest.approx(float(torch.tensor([0.5, 0.4, 0.3, 0.6, 0.7, 0.2, 0.8, 0.9, 0.35, 0.45]).double()
                                     .quantile(0.1)))
    assert f.should_resample(q - 1e-3) and not f.should_resample(q + 1e-3)
    assert not f.should_resample(0.0, tries=2)  # max_tries reached: keep the last draw
    g = VanishingSampleFilter(10.0, min_history=3)
    g.observe([0.0, 0.0, 0.0, 0.5])
    assert g.threshold() == 0.0 and g.should_resample(0.0)  # ties at 0: discrete rewards


def test_trainer_redraws_filtered_groups(tmp_path):
    # a reward that is constant for prompt "p 3": its group has std 0 and is redrawn once min_history is reached
    def reward(images, prompts, records):
        r = zero_fraction(images, prompts, records)
        return torch.where(torch.tensor([p == "p 3" for p in prompts]), torch.zeros_like(r), r)

    cfg = _cfg(tmp_path, "train.iterations=6", "filter.min_history=3", "filter.max_tries=1")
    train_mod.train(cfg, policy=ToyPolicy(codebook_size=6, grid=(3, 4)), reward=reward)
    m = read_metrics(cfg.run.dir)
    assert m[0]["filter/resampled_groups"] == 0  # no history yet
    assert sum(r["filter/resampled_groups"] for r in m[1:]) >= 3
    cfg_off = _cfg(tmp_path, "train.iterations=6", "filter.enabled=false", f"run.dir={tmp_path / 'off'}")
    train_mod.train(cfg_off, policy=ToyPolicy(codebook_size=6, grid=(3, 4)), reward=reward)
    assert all(r["filter/resampled_groups"] == 0 for r in read_metrics(cfg_off.run.dir))


def test_beta_zero_builds_no_reference_and_beta_positive_a_frozen_one(tmp_path, monkeypatch):
    built = []
    real = train_mod._frozen_copy
    monkeypatch.setattr(train_mod, "_frozen_copy", lambda p: built.append(real(p)) or built[-1])
    _run(_cfg(tmp_path, "train.iterations=2"))
    assert built == []
    m = _run(_cfg(tmp_path, "train.iterations=4", "train.kl_beta=0.1", f"run.dir={tmp_path / 'kl'}"))
    assert len(built) == 1
    ref = built[0].trainable()
    assert not any(p.requires_grad for p in ref.parameters())
    assert m[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # identical to the reference before the first step
    assert m[-1]["kl"] > 0  # the reference stayed put while the policy moved


def test_resume_after_a_stop_continues_the_same_run(tmp_path):
    full = _run(_cfg(tmp_path, "train.iterations=6", "run.save_every=3", f"run.dir={tmp_path / 'full'}"))
    _run(_cfg(tmp_path, "train.iterations=3", "run.save_every=3", f"run.dir={tmp_path / 'cut'}"))
    resumed = _run(_cfg(tmp_path, "train.iterations=6", "run.save_every=3", f"run.dir={tmp_path / 'cut'}"))
    keys = ("reward_mean", "loss", "grad_norm", "filter/resampled_groups")
    assert [[r[k] for k in keys] for r in resumed] == [[r[k] for k in keys] for r in full]


def test_computational_reduction_trains_the_chosen_iterations(tmp_path):
    cfg = _cfg(tmp_path, "train.step_window=last", "train.step_count=2")
    assert cfg.trained_steps() == [2, 3]
    assert _cfg(tmp_path, "train.step_window=first", "train.step_count=1").trained_steps() == [0]
    with pytest.raises(ConfigError, match="step_count"):
        _cfg(tmp_path, "train.step_window=first", "train.step_count=9")
    m = _run(_cfg(tmp_path, "train.iterations=2", "train.step_window=first", "train.step_count=2",
                  "train.steps_per_forward=1"))
    assert all(math.isfinite(r["loss"]) for r in m)


def test_bad_config_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match="train.logprob"):
        _cfg(tmp_path, "train.logprob=p3")
    with pytest.raises(ConfigError, match="prompts.spread_groups"):
        _cfg(tmp_path, "prompts.spread_groups=true")
    with pytest.raises(ConfigError, match="model.backend"):
        _cfg(tmp_path, "model.backend=muse")


def test_unmasking_reduction_evaluates_with_more_iterations(tmp_path):
    cfg = _cfg(tmp_path, "train.iterations=2", "run.eval_every=2", "run.eval_steps=8", "run.eval_per_tag=1")
    assert train_mod.sampler_config(cfg).steps == 4
    assert train_mod.sampler_config(cfg, evaluation=True).steps == 8
    m = _run(cfg)
    assert "eval/reward_mean" in m[0] and "eval/reward_mean" in m[-1]


def test_lr_schedule_warmup_then_cosine(tmp_path):
    cfg = _cfg(tmp_path, "train.iterations=10", "train.lr_schedule=cosine", "train.warmup_steps=2")
    f = train_mod.lr_lambda(cfg)
    assert [f(0), f(1)] == [0.5, 1.0]
    assert f(2) == pytest.approx(1.0) and f(6) == pytest.approx(0.5) and f(10) == pytest.approx(0.0)
    m = _run(cfg)
    assert m[0]["lr"] == pytest.approx(0.05) and m[-1]["lr"] == pytest.approx(0.0, abs=1e-9)
    assert train_mod.lr_lambda(_cfg(tmp_path))(100) == 1.0  # constant by default


def test_evaluation_noise_comes_from_run_eval_seed_not_train_seed(tmp_path):
    def first_eval(name: str, *overrides: str) -> float:
        cfg = _cfg(tmp_path, f"run.dir={tmp_path / name}", "train.iterations=1", "run.eval_every=1",
                   "run.eval_samples=4", *overrides)
        return _run(cfg)[0]["eval/reward_mean"]

    base = first_eval("s0", "train.seed=0")
    assert first_eval("s1", "train.seed=1") == base  # same samples for every training seed
    assert first_eval("e7", "train.seed=0", "run.eval_seed=7") != base
