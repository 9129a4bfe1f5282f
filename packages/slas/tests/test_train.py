"""slas on the shared trainer: the advantage hook, γ = 0 ≡ Flow-GRPO batch std end to end, the dance baseline ≡
the shared trainer's own advantage, config validation, presets and the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from shared.flow_grpo.config import RunConfig
from shared.rewards import register_reward
from shared.training import FieldError, load_config, read_metrics

from slas.cli import main
from slas.config import SLASConfig
from slas.train import build_advantages, train

torch.set_num_threads(1)


@register_reward("test_slas_brightness")
class Brightness:
    """Mean pixel value: a dense reward, so every group has a spread."""

    name = "test_slas_brightness"

    def __call__(self, images, prompts, metadata=None):
        return images.float().mean(dim=(1, 2, 3))


def _common(model_dir, run_dir) -> list[str]:
    return [f"model.path={model_dir}", f"run.dir={run_dir}", "reward.names=test_slas_brightness",
            "prompts.per_iteration=2", "sample.group_size=4", "sample.num_steps=4",
            "sample.noise_level=0.9", "train.iterations=2", "train.lr=1e-3",
            "train.fraction=0.75", "lora.rank=0", "train.steps_per_rollout=2", "run.eval_every=0", "run.grids=false",
            "run.progress=false", "run.save_every=0"]


def _losses(run_dir) -> list[tuple[float, float]]:
    return [(r["policy_loss"], r["reward_mean"]) for r in read_metrics(run_dir) if "policy_loss" in r]


def test_gamma_zero_trains_exactly_like_flow_grpo_batch_std(tiny_model_dir, tmp_path):
    """γ = 0 with raw-reward σ_B, eps 1e-4, clip 5 is the shared trainer's train.adv_std=batch: same metrics."""
    from shared.flow_grpo.train import train as flow_train

    base = load_config(RunConfig, overrides=_common(tiny_model_dir, tmp_path / "flow") + [
        "train.adv_std=batch", "train.adv_eps=1e-4", "train.adv_unbiased=false", "train.adv_clip=5"])
    flow_train(base)
    cfg = load_config(SLASConfig, overrides=_common(tiny_model_dir, tmp_path / "slas") + [
        "advantage.mode=slas", "advantage.gamma=0", "advantage.clip=5"])
    train(cfg)
    ref, got = _losses(tmp_path / "flow"), _losses(tmp_path / "slas")
    assert len(ref) == 2 and ref == got  # bit-identical on CPU: same rollouts, same advantages, same updates
    logged = [r for r in read_metrics(tmp_path / "slas") if "policy_loss" in r]
    assert all(r["adv/gamma"] == 0.0 and "adv/max_abs" in r for r in logged)

    cfg = load_config(SLASConfig, overrides=_common(tiny_model_dir, tmp_path / "g1") + [
        "advantage.mode=slas", "advantage.gamma=1"])
    train(cfg)
    assert _losses(tmp_path / "g1")[0][1] == ref[0][1]  # same first rollout and rewards ...
    assert _losses(tmp_path / "g1")[0][0] != ref[0][0]  # ... but a different (shaped) loss


def test_dance_mode_is_the_shared_trainers_own_advantage(tiny_model_dir, tmp_path):
    from shared.flow_grpo.train import train as flow_train

    dance = ["train.adv_std=group", "train.adv_unbiased=true", "train.adv_eps=1e-8"]
    flow_train(load_config(RunConfig, overrides=_common(tiny_model_dir, tmp_path / "flow") + dance))
    train(load_config(SLASConfig, overrides=_common(tiny_model_dir, tmp_path / "dance") + dance
                      + ["advantage.mode=dance"]))
    assert _losses(tmp_path / "flow") == _losses(tmp_path / "dance")


def test_gamma_schedule_reaches_its_end(tiny_model_dir, tmp_path):
    cfg = load_config(SLASConfig, overrides=_common(tiny_model_dir, tmp_path / "r") + [
        "advantage.gamma=0", "advantage.gamma_schedule=linear", "advantage.gamma_end=1.0", "train.iterations=3"])
    fn = build_advantages(cfg)
    rewards, ids = torch.tensor([0.1, 0.5, 0.9, 0.2]), torch.tensor([0, 0, 1, 1])
    gammas = [fn(rewards, ids, iteration=k, total=3).gamma for k in (1, 2, 3)]
    assert gammas == pytest.approx([0.0, 0.5, 1.0])


@pytest.mark.parametrize(("override", "field"), [
    ("advantage.mode=grpo", "advantage.mode"),
    ("advantage.gamma=-0.5", "advantage.gamma"),
    ("advantage.order=sideways", "advantage.order"),
    ("advantage.sigma_b_of=median", "advantage.sigma_b_of"),
    ("advantage.recentre=always", "advantage.recentre"),
    ("advantage.ddof=2", "advantage.ddof"),
    ("advantage.stats_scope=node", "advantage.stats_scope"),
    ("advantage.gamma_schedule=step", "advantage.gamma_schedule"),
    ("advantage.clip=-1", "advantage.clip"),
])
def test_bad_advantage_config_names_the_field(override, field):
    with pytest.raises(FieldError) as err:
        load_config(SLASConfig, preset="shapes", overrides=[override])
    assert err.value.field == field and "Fix:" in str(err.value)


def test_presets(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text("{}")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    paths = [f"model.path={model}", f"prompts.file={prompts}"]
    shapes = load_config(SLASConfig, preset="shapes")
    assert shapes.advantage.mode == "slas" and len(shapes.run.eval_tags) == 6  # out-of-domain guard: all six
    assert set(shapes.prompts.tags) < set(shapes.run.eval_tags)
    assert (shapes.train.adv_std, shapes.train.adv_unbiased, shapes.train.adv_eps) == ("group", True, 1e-8)
    assert shapes.train.iterations == 12  # shared's: the measured default, minutes on CPU (packages/slas/README.md)
    flux = load_config(SLASConfig, preset="flux-dev-hpsv21", overrides=paths)
    assert (flux.sample.kind, flux.sample.num_steps, flux.train.units, flux.reward.names) == ("dance", 16, "random",
                                                                                             ["hpsv2"])
    sd = load_config(SLASConfig, preset="sd14-hpsv21", overrides=paths)
    s, t = sd.sample, sd.train
    assert (s.kind, s.noise_level, s.num_steps, s.guidance_scale, s.group_size) == ("ddim", 1.0, 50, 5.0, 16)
    assert (t.lr, t.adv_std, t.units, sd.lora.rank) == (1e-5, "group", "random", 0)
    assert sd.lora.targets == ["to_q", "to_k", "to_v", "to_out.0"]  # UNet attention, for --set lora.rank=...


def test_cli_help_shorthands_and_errors(capsys):
    with pytest.raises(SystemExit) as ok:
        main(["train", "--help"])
    assert ok.value.code == 0
    text = capsys.readouterr().out
    for name in ("advantage.gamma", "advantage.order", "advantage.stats_scope", "--advantage", "sample.sde_steps",
                 "run.eval_tags"):
        assert name in text
    assert main(["train", "--advantage", "dance", "--gamma", "1.5", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["advantage"]["mode"] == "dance" and printed["advantage"]["gamma"] == 1.5
    with pytest.raises(SystemExit) as bad:
        main(["train", "--set", "advantage.order=sideways"])
    assert bad.value.code == 2 and "advantage.order" in capsys.readouterr().err
