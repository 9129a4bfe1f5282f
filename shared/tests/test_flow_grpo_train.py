"""The flow-matching GRPO trainer end to end on a tiny pixel-space SD3 pipeline (seconds per run, CPU).

Porting checklist as tests (shared_core.md §9): on-policy ratio exactly 1; β = 0 builds no reference and runs no
reference forward; a killed run resumes with identical metrics; a short seeded run raises a reward. Units of
variable layouts: the slot losses sum to mean_i mean_j (ℓ_ij + β·KL_ij), the batched chunk forward (one transformer
forward per slot, chunk_grpo.md §4) equals one forward per step position; custom selectors; hybrid evaluation.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch

from shared.advantages import AdvantageOutput, group_advantages
from shared.errors import ConfigError
from shared.flow_grpo.config import RunConfig
from shared.flow_grpo.objective import Reference, slot_loss
from shared.flow_grpo.train import train, unit_weights
from shared.flow_grpo.units import Chunks, slots
from shared.losses import gaussian_mean_kl
from shared.rewards import register_reward
from shared.rollout import SamplerConfig, adapter_for, sample, step_log_prob
from shared.tiny import TinySD3Config, tiny_sd3_pipeline
from shared.training import load_config, read_metrics

KILL = {"after_calls": None, "calls": 0}


@register_reward("test_flow_grpo_brightness")
class Brightness:
    """Mean pixel value (a reward any image model can move). Raises KeyboardInterrupt on call KILL["after_calls"]
    + 1 to simulate a killed process."""

    name = "test_flow_grpo_brightness"

    def __call__(self, images, prompts, metadata=None):
        KILL["calls"] += 1
        if KILL["after_calls"] is not None and KILL["calls"] > KILL["after_calls"]:
            raise KeyboardInterrupt("simulated kill")
        return images.float().mean(dim=(1, 2, 3))


@pytest.fixture(scope="module")
def base_pipe():
    return tiny_sd3_pipeline(TinySD3Config(vae_channels=None, with_t5=False, patch_size=4))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, base_pipe) -> Path:
    d = tmp_path_factory.mktemp("tiny_sd3")
    base_pipe.save_pretrained(d)
    return d


def _cfg(run_dir: Path, model_dir: Path, *overrides: str) -> RunConfig:
    base = [f"model.path={model_dir}", f"run.dir={run_dir}", "reward.names=test_flow_grpo_brightness",
            "prompts.per_iteration=2", "sample.group_size=4", "sample.num_steps=4", "sample.noise_level=0.9",
            "train.iterations=2", "train.fraction=0.75", "run.eval_every=0", "run.grids=false",
            "run.progress=false", "run.save_every=0"]
    return load_config(RunConfig, overrides=base + list(overrides))


def _fresh(base_pipe):
    KILL.update(after_calls=None, calls=0)
    return copy.deepcopy(base_pipe)


def _forward_counter(pipe) -> list[int]:
    calls = [0]
    pipe.transformer.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize(("units", "checkpointing"), [("in_order", True), ("random", False)])
def test_first_optimiser_step_is_on_policy(tmp_path, base_pipe, model_dir, units, checkpointing):
    cfg = _cfg(tmp_path / "run", model_dir, f"train.units={units}", "train.iterations=1", "sample.micro_batch_size=4",
               "sample.guidance_scale=3",  # CFG batching in rollout and recompute, two micro-batches
               f"model.gradient_checkpointing={checkpointing}")
    pipe = _fresh(base_pipe)
    last = train(cfg, pipeline=pipe)
    assert pipe.transformer.gradient_checkpointing is checkpointing
    assert last["ratio_min"] == 1.0 and last["ratio_max"] == 1.0  # exactly, not approximately
    assert last["clipfrac_low"] == 0.0 and last["clipfrac_high"] == 0.0 and last["approx_kl"] == 0.0


def test_flux_pipeline_trains_on_policy(tmp_path):
    from shared.tiny import TinyFluxConfig, tiny_flux_pipeline

    KILL.update(after_calls=None, calls=0)
    pipe = tiny_flux_pipeline(TinyFluxConfig())
    d = tmp_path / "flux"
    pipe.save_pretrained(d)
    cfg = _cfg(tmp_path / "run", d, "sample.resolution=32", "sample.kind=dance", "sample.schedule=dance",
               "train.units=random", "train.iterations=1", "sample.group_size=2")
    last = train(cfg, pipeline=pipe)
    assert last["ratio_min"] == 1.0 and last["ratio_max"] == 1.0 and last["optimizer_steps"] == 1


def test_beta_zero_runs_no_reference_forward(tmp_path, base_pipe, model_dir):
    # 8 samples, one micro-batch; T = 4 sampling forwards, K = 3 trained units per iteration
    pipe = _fresh(base_pipe)
    calls = _forward_counter(pipe)
    last = train(_cfg(tmp_path / "a", model_dir, "train.kl_beta=0", "train.iterations=2"), pipeline=pipe)
    assert calls[0] == 2 * (4 + 3) and "kl" not in last
    pipe = _fresh(base_pipe)
    calls = _forward_counter(pipe)  # the frozen reference copy inherits the hook, so its forwards count too
    last = train(_cfg(tmp_path / "b", model_dir, "train.kl_beta=0.04", "train.iterations=2"), pipeline=pipe)
    assert calls[0] == 2 * (4 + 3 + 3)
    assert last["kl"] > 0  # the policy has moved away from the reference after the first step


def test_resume_after_kill_continues_with_identical_metrics(tmp_path, base_pipe, model_dir):
    settings = ("train.iterations=4", "run.save_every=2", "train.units=random", "sample.kind=dance",
                "sample.noise_level=0.5", "train.steps_per_rollout=2", "train.ema_decay=0.9", "train.adv_std=group",
                "train.lr=1e-3")
    straight = train(_cfg(tmp_path / "straight", model_dir, *settings), pipeline=_fresh(base_pipe))
    killed_dir = tmp_path / "killed"
    _fresh(base_pipe)
    KILL["after_calls"] = 3  # dies during iteration 4's reward, after checkpoint 2 and the log of iteration 3
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(killed_dir, model_dir, *settings), pipeline=copy.deepcopy(base_pipe))
    assert [r["step"] for r in read_metrics(killed_dir)] == [1, 2, 3]
    resumed = train(_cfg(killed_dir, model_dir, *settings), pipeline=_fresh(base_pipe))

    def strip(records):
        return [{k: v for k, v in r.items() if not k.startswith("time")} for r in records]

    a, b = strip(read_metrics(tmp_path / "straight")), strip(read_metrics(killed_dir))
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert a == b
    assert strip([straight]) == strip([resumed])
    assert a[-1]["optimizer_steps"] == 2 and a[-1]["ratio_max"] != 1.0  # the second part is off-policy


def _zero_from(first: int):
    """Per-group centred brightness advantages with rows first.. set to exactly 0 (as if their groups had tied)."""

    def fn(rewards, group_ids, *, iteration, total):
        out = group_advantages(rewards, group_ids, std="none")
        adv = out.advantages.clone()
        adv[first:] = 0.0
        return AdvantageOutput(adv, 0.5, out.mean_group_std)

    return fn


@pytest.mark.parametrize(("kl_beta", "first_zero"), [(0.0, 4), (0.04, 4), (0.0, 0)])
def test_zero_advantage_rows_are_left_out_with_an_identical_step(tmp_path, base_pipe, model_dir, kl_beta, first_zero):
    # 8 samples in micro-batches of 4 (T = 4 sampling forwards, 3 trained units each); rows first_zero.. have A = 0
    runs = {}
    for skip in (True, False):
        pipe = _fresh(base_pipe)
        calls = _forward_counter(pipe)
        cfg = _cfg(tmp_path / str(skip), model_dir, "train.iterations=1", "sample.micro_batch_size=4",
                   f"train.skip_zero_advantage={skip}", f"train.kl_beta={kl_beta}", "train.lr=1e-3",
                   "train.weight_decay=0.1")
        last = train(cfg, pipeline=pipe, advantages=_zero_from(first_zero))
        runs[skip] = calls[0], [p.detach().clone() for p in pipe.transformer.parameters()], last
    (n_skip, after_skip, last_skip), (n_all, after_all, last_all) = runs[True], runs[False]
    before = list(base_pipe.transformer.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after_all, before, strict=True))  # the step moved weights
    # the same step, bit for bit (with every row left out, AdamW still applies its weight decay)
    assert all(torch.equal(a, b) for a, b in zip(after_skip, after_all, strict=True))
    left_out = (8 - first_zero) // 4  # micro-batches whose 3 unit forwards are not run
    if kl_beta == 0:
        assert (n_skip, n_all) == (2 * 4 + 3 * (2 - left_out), 2 * 4 + 6)
        assert (last_skip["rows_skipped"], last_all["rows_skipped"]) == ((8 - first_zero) / 8, 0)
    else:  # the KL term has a gradient at A = 0: nothing is left out (+ 3 reference forwards per micro-batch)
        assert (n_skip, n_all, last_skip["rows_skipped"]) == (2 * 4 + 12, 2 * 4 + 12, 0)


def test_seeded_run_raises_brightness(tmp_path, base_pipe, model_dir):
    cfg = _cfg(tmp_path / "run", model_dir, "train.iterations=12", "train.lr=3e-3", "train.adv_std=group",
               "train.fraction=1.0", "run.grids=true", "run.save_every=12")
    train(cfg, pipeline=_fresh(base_pipe))
    rewards = [r["reward_mean"] for r in read_metrics(tmp_path / "run")]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last - first > 0.15, rewards  # rollout noise on a batch mean of 8 is ~0.01
    for name in ("samples_before.png", "samples_after.png", "reward_curve.png"):
        assert (tmp_path / "run" / name).is_file(), name
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-00000012" / "manifest.json").is_file()


def test_cli_runs_from_a_model_folder(tmp_path, model_dir, capsys):
    from shared.flow_grpo.cli import main

    KILL.update(after_calls=None, calls=0)
    last = main(["--set", f"model.path={model_dir}", "--set", f"run.dir={tmp_path / 'cli'}",
                 "--set", "reward.names=test_flow_grpo_brightness", "--set", "prompts.per_iteration=1",
                 "--set", "sample.group_size=2", "--set", "sample.num_steps=2", "--set", "train.iterations=1",
                 "--set", "train.fraction=0.5", "--set", "run.eval_every=1", "--set", "run.eval_per_tag=1",
                 "--set", "run.eval_steps=2", "--set", "run.progress=false"])
    assert "eval/geneval" in last and 0.0 <= last["eval/geneval"] <= 1.0
    assert (tmp_path / "cli" / "checkpoints").is_dir() and "metrics" in capsys.readouterr().out
    assert read_metrics(tmp_path / "cli")[0]["step"] == 0  # the baseline evaluation before training


def test_lora_trains_only_the_adapter_with_kl_to_the_disabled_adapter(tmp_path, base_pipe, model_dir):
    import peft  # noqa: F401  (installed: LoRA is part of the trainer)
    from safetensors.torch import load_file

    pipe = _fresh(base_pipe)
    before = {n: p.detach().clone() for n, p in pipe.transformer.named_parameters()}
    cfg = _cfg(tmp_path / "run", model_dir, "lora.rank=4", "lora.alpha=8", "train.kl_beta=0.04", "train.lr=1e-2",
               "train.iterations=2", "run.save_every=1", "run.eval_every=2", "run.eval_steps=3",
               "run.eval_hybrid_steps=1", "run.eval_per_tag=1")
    train(cfg, pipeline=pipe)
    evals, logs = read_metrics(tmp_path / "run")[0], read_metrics(tmp_path / "run")[1:]
    assert logs[0]["kl"] == 0.0 and logs[0]["ratio_max"] == 1.0  # adapter starts as the identity
    assert logs[1]["kl"] > 0
    # hybrid evaluation's base model is the network with the adapter disabled: identical to the policy at first
    assert evals["step"] == 0 and evals["eval_hybrid/reward_mean"] == evals["eval/reward_mean"]
    assert logs[1]["eval_hybrid/reward_mean"] != logs[1]["eval/reward_mean"]
    after = {n.replace(".base_layer", ""): p for n, p in pipe.transformer.named_parameters() if "lora" not in n}
    assert after.keys() == before.keys() and all(torch.equal(before[n], after[n]) for n in before)  # base untouched
    saved = load_file(tmp_path / "run" / "checkpoints" / "checkpoint-00000002" / "model.safetensors")
    assert saved and all("lora" in k for k in saved)



# ------------------------------------------------------------------------------- variable layouts, batched forward

LAYOUT = [[[0, 1], [4, 5, 2]], [[3]], [[2, 3, 4], [0], [5]], [[1, 0, 5]]]  # n_i = 2, 1, 3, 1; sizes vary
ADV = torch.tensor([1.0, -0.5, 0.3, -2.0])


def _rollout(base_pipe, guidance: float = 3.0):
    """A 4-sample, 6-step CFG rollout of the tiny pipeline, then the policy moved off it (ratios ≠ 1, KL > 0)."""
    pipe = _fresh(base_pipe)
    adapter = adapter_for(pipe)
    cfg = SamplerConfig(num_steps=6, noise_level=0.9, guidance_scale=guidance, height=32, width=32)
    traj = sample(adapter, ["a photo of a red circle", "a photo of two squares"], cfg, group_size=2,
                  generator=torch.Generator().manual_seed(0), decode=False)
    reference = Reference(adapter, lora=False)  # frozen copy of the rollout policy
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in pipe.transformer.parameters():
            p.add_(2e-3 * torch.randn(p.shape, generator=g))
    return pipe, adapter, cfg, traj, reference


def _slot_pass(pipe, adapter, cfg, traj, reference, *, batched: bool, kl_beta: float = 0.1):
    """Σ over slots of slot_loss (each backpropagated), and the accumulated gradient as one vector."""
    pipe.transformer.zero_grad(set_to_none=True)
    weights, total = unit_weights(LAYOUT, len(LAYOUT)), 0.0
    for slot in slots(LAYOUT):
        out = slot_loss(adapter, traj, slot, ADV, weights, cfg, clip_low=0.5, kl_beta=kl_beta,
                        reference=reference, batched=batched)
        out.loss.backward()
        total += out.loss.item()
    grads = torch.cat([p.grad.flatten() for p in pipe.transformer.parameters() if p.grad is not None])
    return total, grads


def test_slot_losses_sum_to_mean_over_samples_of_mean_over_units(base_pipe):
    pipe, adapter, cfg, traj, reference = _rollout(base_pipe)
    beta = 0.1
    total, _ = _slot_pass(pipe, adapter, cfg, traj, reference, batched=True, kl_beta=beta)
    # by hand: every step of every sample under θ and π_ref, then mean_i mean_j (ℓ_ij + β·KL_ij)
    with torch.no_grad():
        new = [step_log_prob(adapter, traj, t, cfg) for t in range(6)]
        ref = [reference.step(traj, torch.full((4,), t), cfg) for t in range(6)]
    kl = torch.stack([gaussian_mean_kl(n.mean, r.mean, n.std, step_delta=traj.sigmas[t + 1] - traj.sigmas[t])
                      for t, (n, r) in enumerate(zip(new, ref, strict=True))], dim=1)
    lp = torch.stack([n.log_prob for n in new], dim=1)
    per_sample = []
    for i, units in enumerate(LAYOUT):
        terms = []
        for u in units:
            r = torch.exp(lp[i, u].mean() - traj.log_probs[i, u].mean())
            ell = torch.maximum(-ADV[i] * r, -ADV[i] * r.clamp(0.5, 1.5))
            terms.append(ell + beta * kl[i, u].mean())
        per_sample.append(torch.stack(terms).mean())
    expected = torch.stack(per_sample).mean().item()
    assert abs(expected) > 0.2 and kl.min() > 0
    assert total == pytest.approx(expected, rel=1e-5)


def test_batched_slot_forward_equals_one_forward_per_step_position(base_pipe):
    pipe, adapter, cfg, traj, reference = _rollout(base_pipe)
    loss_b, grad_b = _slot_pass(pipe, adapter, cfg, traj, reference, batched=True)
    loss_p, grad_p = _slot_pass(pipe, adapter, cfg, traj, reference, batched=False)
    assert loss_b == pytest.approx(loss_p, rel=1e-5)
    assert grad_b.norm() > 0 and (grad_b - grad_p).norm() <= 1e-5 * grad_p.norm()


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_batched_mode_runs_one_transformer_forward_per_slot(base_pipe, guidance):
    pipe, adapter, cfg, traj, _ = _rollout(base_pipe, guidance)
    batches: list[int] = []
    pipe.transformer.register_forward_pre_hook(lambda m, args, kw: batches.append(kw["hidden_states"].shape[0]),
                                               with_kwargs=True)
    layout = slots(LAYOUT)
    _slot_pass(pipe, adapter, cfg, traj, None, batched=True, kl_beta=0.0)
    cfg_rows = 2 if guidance > 1 else 1  # CFG doubles the forward batch ([uncond, cond]), not the forward count
    assert batches == [cfg_rows * len(s.flat()[0]) for s in layout] == [cfg_rows * n for n in (9, 4, 1)]
    batches.clear()
    _slot_pass(pipe, adapter, cfg, traj, None, batched=False, kl_beta=0.0)
    assert len(batches) == sum(s.max_size for s in layout) == 7


class _GroupChunks:
    """A custom selector using the rollout: group 0 trains chunks {0, 2} of [1, 2, 1], group 1 chunk {1}."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, tuple, list[int]]] = []

    def __call__(self, num_steps, batch, generator=None, *, traj=None):
        self.seen.append((batch, tuple(traj.latents.shape[:2]), traj.group_ids.tolist()))
        return [[[0], [3]] if int(g) == 0 else [[1, 2]] for g in traj.group_ids]


@dataclasses.dataclass
class _PackageConfig(RunConfig):
    """What a package such as chunk_grpo does: a RunConfig subclass with its own section."""

    extra: dict = dataclasses.field(default_factory=lambda: {"chunks": [1, 2, 1]})


def _package_cfg(run_dir: Path, model_dir: Path, *overrides: str) -> _PackageConfig:
    base = _cfg(run_dir, model_dir, "train.units=custom", "train.iterations=1", "sample.guidance_scale=3",
                "sample.micro_batch_size=4", *overrides)
    return _PackageConfig(**{f.name: getattr(base, f.name) for f in dataclasses.fields(RunConfig)})


def test_custom_selector_with_variable_layouts_trains_in_both_forward_modes(tmp_path, base_pipe, model_dir):
    runs = {}
    for batched in (True, False):
        selector = _GroupChunks()
        cfg = _package_cfg(tmp_path / f"run_{batched}", model_dir, f"train.batched_units={batched}",
                           "run.save_every=1")
        runs[batched] = train(cfg, pipeline=_fresh(base_pipe), selector=selector)
        assert selector.seen == [(8, (8, 5), selector.seen[0][2])] and sorted(selector.seen[0][2]) == [0] * 4 + [1] * 4
    a, b = runs[True], runs[False]
    assert a["optimizer_steps"] == 1 and 0 < a["grad_norm"]
    for key in ("policy_loss", "ratio_mean", "ratio_min", "ratio_max", "approx_kl"):
        assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
    from shared.training import latest_checkpoint, load_checkpoint

    saved = load_checkpoint(latest_checkpoint(tmp_path / "run_True" / "checkpoints"))["config"]
    assert saved["extra"] == {"chunks": [1, 2, 1]} and saved["train"]["units"] == "custom"


def test_custom_units_need_a_selector_and_its_units_are_checked(tmp_path, base_pipe, model_dir):
    with pytest.raises(ConfigError, match="train.units"):
        train(_package_cfg(tmp_path / "a", model_dir), pipeline=_fresh(base_pipe))

    def out_of_range(num_steps, batch, generator=None, *, traj=None):
        return [[[num_steps]]] * batch

    with pytest.raises(ValueError, match=r"steps \[4\] outside \[0, 4\)"):
        train(_package_cfg(tmp_path / "b", model_dir), pipeline=_fresh(base_pipe), selector=out_of_range)


def test_hybrid_evaluation_reports_plain_and_hybrid_metrics(tmp_path, base_pipe, model_dir):
    cfg = _cfg(tmp_path / "run", model_dir, "train.iterations=2", "train.lr=3e-3", "train.fraction=1.0",
               "run.eval_every=2", "run.eval_steps=4", "run.eval_hybrid_steps=2", "run.eval_per_tag=1",
               "run.grids=true")
    pipe = _fresh(base_pipe)
    train(cfg, pipeline=pipe)
    first, last = read_metrics(tmp_path / "run")[0], read_metrics(tmp_path / "run")[-1]
    for record in (first, last):
        assert {"eval/reward_mean", "eval/geneval", "eval_hybrid/reward_mean", "eval_hybrid/geneval"} <= set(record)
    assert first["eval_hybrid/reward_mean"] == first["eval/reward_mean"]  # the frozen copy is the initial policy
    assert last["eval_hybrid/reward_mean"] != last["eval/reward_mean"]
    for name in ("samples_before.png", "samples_after.png", "samples_after_hybrid.png"):
        assert (tmp_path / "run" / name).is_file(), name
    assert not (tmp_path / "run" / "samples_before_hybrid.png").exists()


def test_evaluation_noise_comes_from_run_eval_seed_not_train_seed(tmp_path, base_pipe, model_dir):
    def first_eval(name: str, *overrides: str) -> float:
        cfg = _cfg(tmp_path / name, model_dir, "train.iterations=1", "run.eval_every=1", "run.eval_steps=2",
                   "run.eval_per_tag=1", *overrides)
        train(cfg, pipeline=_fresh(base_pipe))
        return read_metrics(tmp_path / name)[0]["eval/reward_mean"]

    base = first_eval("s0", "train.seed=0")
    assert first_eval("s1", "train.seed=1") == base  # same images for every training seed
    assert first_eval("e7", "train.seed=0", "run.eval_seed=7") != base
