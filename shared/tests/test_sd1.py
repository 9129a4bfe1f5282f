"""Stable Diffusion 1.x in the flow rollout and trainer: DDIM in flow coordinates (tiny models, CPU, seconds).

The SD1 adapter runs the ε-prediction UNet as a flow (x = y/c, σ = √(1−ᾱ)/c, c = √ᾱ + √(1−ᾱ)); the SDE kind
``ddim`` is DDPO's DDIM with η = noise_level. Checked against diffusers: the η = 0 rollout equals
``StableDiffusionPipeline(eta=0)``, one η > 0 step equals ``DDIMScheduler.step`` with the same noise and its
log-prob differences equal ``ddim_step``'s (DDPO's ``ddim_with_logprob``); recomputation is on-policy; the trainer
runs full fine-tune and LoRA on the UNet.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import pytest
import torch

from shared.errors import ConfigError
from shared.flow_grpo.config import RunConfig
from shared.flow_grpo.train import train
from shared.rewards import register_reward
from shared.rollout import SD1Adapter, SamplerConfig, adapter_for, recompute_log_probs, sample, step_log_prob
from shared.rollout.loading import load_pipeline
from shared.sde import alpha_bar_from_sigma, ddim_alphas, ddim_step, sde_step, sigma_from_alpha_bar, vp_scale
from shared.tiny import SD1_SCHEDULER_CONFIG, tiny_sd1_pipeline
from shared.training import load_config, read_metrics

PROMPTS = ["a photo of a red circle", "a photo of two blue squares"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sd1():
    pipe = tiny_sd1_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, sd1) -> Path:
    d = tmp_path_factory.mktemp("tiny_sd1")
    sd1.save_pretrained(d)
    return d


# ------------------------------------------------------------------------------------------ coordinates, sde kind


def test_flow_coordinates_of_a_vp_state():
    """x = y/c at σ(ᾱ) is (1−σ)·x0 + σ·ε for y = √ᾱ·x0 + √(1−ᾱ)·ε, and the maps invert each other."""
    alpha_bar = torch.tensor([0.999, 0.7, 0.2, 0.004], dtype=torch.float64)
    sigma = sigma_from_alpha_bar(alpha_bar)
    torch.testing.assert_close(alpha_bar_from_sigma(sigma), alpha_bar, rtol=1e-12, atol=0)
    torch.testing.assert_close(vp_scale(sigma), alpha_bar.sqrt() + (1 - alpha_bar).sqrt(), rtol=1e-12, atol=0)
    x0, eps = 0.3, -1.7
    y = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps
    torch.testing.assert_close(y / vp_scale(sigma), (1 - sigma) * x0 + sigma * eps, rtol=1e-12, atol=1e-15)
    assert sigma_from_alpha_bar(1.0) == 0.0 and vp_scale(0.5) == pytest.approx(math.sqrt(2))


def test_ddim_kind_at_eta_zero_is_the_euler_step_and_validates_eta():
    gen = torch.Generator().manual_seed(0)
    x, v = torch.randn(3, 8, generator=gen), torch.randn(3, 8, generator=gen)
    ddim = sde_step(v, x, 0.8, 0.5, kind="ddim", noise_level=0.0)
    torch.testing.assert_close(ddim.prev_sample, x - 0.3 * v)
    assert torch.isnan(ddim.log_prob).all()
    # σ = 1 (a flow model's first step) is defined: s = η·σ′
    assert sde_step(v, x, 1.0, 0.5, kind="ddim", noise_level=1.0, generator=gen).step_std.item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="eta"):
        sde_step(v, x, 0.8, 0.5, kind="ddim", noise_level=1.2)
    with pytest.raises(ValueError, match="eta"):
        SamplerConfig(kind="ddim", noise_level=1.5)


def test_sd1_config_validation():
    with pytest.raises(ConfigError, match="eta"):
        load_config(RunConfig, overrides=["sample.kind=ddim", "sample.noise_level=1.5"])


# --------------------------------------------------------------------------------------------- pipeline, adapter


def test_tiny_sd1_pipeline_round_trip(sd1, model_dir):
    loaded = load_pipeline(model_dir)
    assert type(loaded).__name__ == "StableDiffusionPipeline" and loaded.safety_checker is None
    for key, value in SD1_SCHEDULER_CONFIG.items():
        assert loaded.scheduler.config[key] == value
    adapter = adapter_for(loaded)
    assert isinstance(adapter, SD1Adapter) and adapter.transformer is loaded.unet
    state = sd1.unet.state_dict()
    assert all(torch.equal(state[k], v) for k, v in loaded.unet.state_dict().items())
    cfg = SamplerConfig(num_steps=3, kind="ddim", noise_level=1.0, guidance_scale=3.0, height=32, width=32)
    a = sample(adapter_for(sd1), PROMPTS, cfg, generator=torch.Generator().manual_seed(4))
    b = sample(adapter, PROMPTS, cfg, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.latents, b.latents) and torch.equal(a.images, b.images)


def test_sd1_sigmas_follow_ddim_set_timesteps(sd1):
    adapter = adapter_for(sd1)
    sigmas = adapter.sigmas(10, 32, 32)
    sched = copy.deepcopy(sd1.scheduler)
    sched.set_timesteps(10)
    assert sched.timesteps.tolist() == list(range(901, 0, -100))  # leading spacing, steps_offset 1
    a_t, a_prev = ddim_alphas(sched, sched.timesteps)
    torch.testing.assert_close(sigmas[:-1], sigma_from_alpha_bar(a_t.double()).float(), rtol=0, atol=1e-7)
    torch.testing.assert_close(sigmas[1:], sigma_from_alpha_bar(a_prev.double()).float(), rtol=0, atol=1e-7)
    assert sigmas[-1].item() == pytest.approx(float(sigma_from_alpha_bar(float(sched.alphas_cumprod[0]))))  # ᾱ[0]
    assert adapter.timesteps(sigmas[:-1]).tolist() == sched.timesteps.tolist()


def test_sd1_adapter_refuses_what_it_cannot_run(sd1):
    from diffusers import DDIMScheduler, PNDMScheduler

    with pytest.raises(TypeError, match="no rollout adapter"):
        adapter_for(object())
    other = copy.copy(sd1)
    other.scheduler = DDIMScheduler(**{**SD1_SCHEDULER_CONFIG, "prediction_type": "v_prediction"})
    with pytest.raises(ValueError, match="epsilon"):
        SD1Adapter(other)
    other.scheduler = DDIMScheduler(**{**SD1_SCHEDULER_CONFIG, "clip_sample": True})
    with pytest.raises(ValueError, match="clip_sample"):
        SD1Adapter(other)
    other.scheduler = DDIMScheduler(**{**SD1_SCHEDULER_CONFIG, "timestep_spacing": "trailing"})
    with pytest.raises(ValueError, match="timestep_spacing"):
        SD1Adapter(other).sigmas(3, 32, 32)  # 999, 666, 332: DDIM steps 666 → 333
    # SD 1.4 ships PNDM: its schedule is taken over into a private DDIM scheduler (DDPO's from_config)
    other.scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1)
    assert torch.equal(SD1Adapter(other).sigmas(5, 32, 32), adapter_for(sd1).sigmas(5, 32, 32))
    adapter = adapter_for(sd1)
    cond = adapter.encode(PROMPTS, cfg=False)
    with pytest.raises(ValueError, match="training timesteps"):  # e.g. schedule=dance sigmas
        adapter.velocity(torch.zeros(2, 4, 16, 16), torch.tensor(0.5), cond, guidance_scale=1.0)


# --------------------------------------------------------------------------------------------- against diffusers


@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_ddim_eta_zero_matches_diffusers_pipeline(sd1, guidance):
    """η = 0 through our sampler = StableDiffusionPipeline(eta=0) from the same initial latent: latents and images."""
    noise = torch.randn((2, 4, 16, 16), generator=torch.Generator().manual_seed(3))
    kw = dict(num_inference_steps=4, height=32, width=32, guidance_scale=guidance, eta=0.0)
    ref_latents = sd1(PROMPTS, latents=noise.clone(), output_type="latent", **kw).images
    ref_images = sd1(PROMPTS, latents=noise.clone(), output_type="pt", **kw).images
    adapter = adapter_for(sd1)
    cfg = SamplerConfig(num_steps=4, kind="ddim", noise_level=0.0, guidance_scale=guidance, height=32, width=32)
    traj = sample(adapter, PROMPTS, cfg, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(adapter.from_flow(traj.latents[:, 0], traj.sigmas[0]), noise, rtol=0, atol=1e-6)
    final = adapter.from_flow(traj.latents[:, -1], traj.sigmas[-1])
    assert ref_latents.abs().max() > 1  # a real comparison, not of near-zero tensors
    torch.testing.assert_close(final, ref_latents, rtol=1e-5, atol=1e-4)
    assert 0.05 < ref_images.std() and 0 < ref_images.mean() < 1
    torch.testing.assert_close(traj.images, ref_images, rtol=0, atol=1e-4)
    assert torch.isnan(traj.log_probs).all()  # deterministic steps have no log-prob


@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_ddim_kind_step_matches_ddim_scheduler_and_ddpo_log_prob(sd1, eta):
    """Every step of a 10-step chain: ×c′ our ``ddim`` step is ``DDIMScheduler.step(eta, variance_noise)``; its
    log-prob is ``ddim_step``'s + log c′, so log-prob differences (ratios) are DDPO's."""
    adapter = adapter_for(sd1)
    sched = copy.deepcopy(sd1.scheduler)
    sched.set_timesteps(10)
    sigmas = adapter.sigmas(10, 32, 32)
    cond = adapter.encode(PROMPTS, cfg=True)
    gen = torch.Generator().manual_seed(7)
    y = torch.randn(2, 4, 16, 16, generator=gen)
    for k, t in enumerate(sched.timesteps):
        noise, other = torch.randn(y.shape, generator=gen), torch.randn(y.shape, generator=gen)
        with torch.no_grad():
            eps_u, eps_c = sd1.unet(torch.cat([y, y]), t, torch.cat([cond.negative_prompt_embeds, cond.prompt_embeds]),
                                    return_dict=False)[0].chunk(2)
            eps = eps_u + 4.0 * (eps_c - eps_u)
            ref = sched.step(eps, t, y, eta=eta, variance_noise=noise).prev_sample
            x = adapter.to_flow(y, sigmas[k])
            v = adapter.velocity(x, sigmas[k], cond, guidance_scale=4.0)
        ours = sde_step(v, x, sigmas[k], sigmas[k + 1], kind="ddim", noise_level=eta, noise=noise)
        c_next = vp_scale(sigmas[k + 1].double()).float()
        torch.testing.assert_close(adapter.from_flow(ours.prev_sample, sigmas[k + 1]), ref, rtol=1e-5, atol=2e-5)

        a_t, a_prev = ddim_alphas(sched, t)
        step_std = ddim_step(eps, y, a_t, a_prev, eta=eta, noise=noise).step_std
        candidates = [ref, ref + step_std * other]  # the drawn state and one moved by a further draw
        vp = [ddim_step(eps, y, a_t, a_prev, eta=eta, prev_sample=c).log_prob for c in candidates]
        flow = [sde_step(v, x, sigmas[k], sigmas[k + 1], kind="ddim", noise_level=eta,
                         prev_sample=adapter.to_flow(c, sigmas[k + 1])).log_prob for c in candidates]
        torch.testing.assert_close(flow[0], vp[0] + torch.log(c_next), rtol=0, atol=1e-4)
        assert (vp[0] - vp[1]).abs().min() > 0.1  # the candidates are told apart
        torch.testing.assert_close(flow[0] - flow[1], vp[0] - vp[1], rtol=0, atol=1e-4)
        y = ref


# ------------------------------------------------------------------------------------------------- recomputation


def test_on_policy_ratio_is_one_with_cfg(sd1):
    adapter = adapter_for(sd1)
    cfg = SamplerConfig(num_steps=4, kind="ddim", noise_level=1.0, guidance_scale=4.5, height=32, width=32,
                        micro_batch_size=2)
    traj = sample(adapter, PROMPTS, cfg, group_size=2, generator=torch.Generator().manual_seed(0), decode=False)
    assert torch.isfinite(traj.log_probs).all()
    with torch.no_grad():
        new = recompute_log_probs(adapter, traj, [0, 1, 2, 3], cfg)
        per_row = step_log_prob(adapter, traj, torch.tensor([3, 0, 2, 1]), cfg).log_prob  # per-sample timesteps
    assert torch.equal(torch.exp(new - traj.log_probs), torch.ones_like(new))  # same batching: exactly 1
    expected = traj.log_probs[torch.arange(4), torch.tensor([3, 0, 2, 1])]
    torch.testing.assert_close(per_row, expected, rtol=0, atol=1e-5)


def test_recompute_has_unet_gradients_and_detach_uncond_changes_them(sd1):
    pipe = copy.deepcopy(sd1)
    adapter = adapter_for(pipe)
    cfg = SamplerConfig(num_steps=3, kind="ddim", noise_level=1.0, guidance_scale=3.0, height=32, width=32)
    traj = sample(adapter, PROMPTS[:1], cfg, group_size=2, generator=torch.Generator().manual_seed(1), decode=False)
    grads = {}
    for detach in (False, True):
        pipe.unet.zero_grad(set_to_none=True)
        step_log_prob(adapter, traj, 1, dataclasses.replace(cfg, detach_uncond=detach)).log_prob.sum().backward()
        grads[detach] = torch.cat([p.grad.flatten() for p in pipe.unet.parameters() if p.grad is not None])
    assert grads[False].abs().sum() > 0 and grads[True].abs().sum() > 0
    assert not torch.allclose(grads[False], grads[True])


# ------------------------------------------------------------------------------------------------------- trainer


@register_reward("test_sd1_brightness")
class Brightness:
    """Mean pixel value: a reward any image model can move."""

    name = "test_sd1_brightness"

    def __call__(self, images, prompts, metadata=None):
        return images.float().mean(dim=(1, 2, 3))


def _cfg(run_dir: Path, model_dir: Path, *overrides: str) -> RunConfig:
    base = [f"model.path={model_dir}", f"run.dir={run_dir}", "reward.names=test_sd1_brightness",
            "prompts.per_iteration=2", "sample.group_size=2", "sample.num_steps=3", "sample.kind=ddim",
            "sample.noise_level=1.0", "sample.guidance_scale=3", "sample.resolution=32", "train.iterations=2",
            "train.fraction=0.67", "train.lr=1e-3", "run.eval_every=0", "run.grids=false", "run.progress=false",
            "run.save_every=0"]
    return load_config(RunConfig, overrides=base + list(overrides))


def test_trainer_full_fine_tune_of_the_unet(tmp_path, sd1, model_dir):
    pipe = copy.deepcopy(sd1)
    before = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    train(_cfg(tmp_path / "run", model_dir, "train.kl_beta=0.04"), pipeline=pipe)
    logs = read_metrics(tmp_path / "run")
    assert len(logs) == 2 and logs[0]["ratio_min"] == 1.0 and logs[0]["ratio_max"] == 1.0  # first step on-policy
    assert logs[0]["kl"] == 0.0 and logs[1]["kl"] > 0
    changed = [n for n, p in pipe.unet.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) > len(before) // 2


def test_trainer_lora_on_unet_attention(tmp_path, sd1, model_dir):
    pipe = copy.deepcopy(sd1)
    before = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    cfg = _cfg(tmp_path / "run", model_dir, "lora.rank=4", "lora.alpha=8", "lora.targets=to_q,to_k,to_v,to_out.0",
               "train.kl_beta=0.04", "train.lr=1e-2", "run.eval_every=2", "run.eval_steps=3", "run.eval_per_tag=1")
    train(cfg, pipeline=pipe)
    evals, *logs = read_metrics(tmp_path / "run")  # step 0: the ODE (DDIM η = 0) evaluation before training
    assert evals["step"] == 0 and math.isfinite(evals["eval/reward_mean"]) and "eval/reward_mean" in logs[1]
    assert logs[0]["kl"] == 0.0 and logs[0]["ratio_min"] == 1.0 and logs[0]["ratio_max"] == 1.0
    assert logs[1]["kl"] > 0
    params = dict(pipe.unet.named_parameters())
    lora = [n for n in params if "lora" in n]
    assert lora and all(params[n].requires_grad for n in lora)
    assert any(".attn1.to_q.lora_A" in n for n in lora) and any(".attn2.to_out.0.lora_B" in n for n in lora)
    assert any(params[n].abs().sum() > 0 for n in lora if "lora_B" in n)  # B starts at 0 and has moved
    base = {n.replace(".base_layer", ""): p for n, p in params.items() if "lora" not in n}
    assert base.keys() == before.keys() and all(torch.equal(before[n], base[n]) for n in before)
