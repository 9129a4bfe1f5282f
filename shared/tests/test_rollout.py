"""Rollout sampler: ODE equals the diffusers pipeline, on-policy ratio is exactly 1, loading from a folder."""

from __future__ import annotations

import json

import pytest
import torch

from shared.errors import CheckpointError
from shared.rollout import SamplerConfig, adapter_for, recompute_log_probs, sample, step_log_prob
from shared.rollout.loading import load_pipeline
from shared.tiny import TinyFluxConfig, TinySD3Config, tiny_flux_pipeline, tiny_sd3_pipeline

PROMPTS = ["a photo of a red circle", "a photo of two blue squares"]


@pytest.fixture(scope="module")
def sd3():
    pipe = tiny_sd3_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def flux():
    pipe = tiny_flux_pipeline(TinyFluxConfig(guidance_embeds=True))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_sd3_ode_matches_diffusers_pipeline(sd3, guidance):
    """noise_level 0 through our sampler = the plain pipeline call (same initial noise, same sigmas)."""
    ref = sd3(PROMPTS, num_inference_steps=4, height=32, width=32, guidance_scale=guidance, max_sequence_length=16,
              output_type="latent", generator=torch.Generator().manual_seed(3)).images
    cfg = SamplerConfig(num_steps=4, noise_level=0.0, guidance_scale=guidance, height=32, width=32)
    traj = sample(adapter_for(sd3), PROMPTS, cfg, generator=torch.Generator().manual_seed(3), decode=False)
    torch.testing.assert_close(traj.latents[:, -1], ref, rtol=0, atol=1e-5)
    assert torch.isnan(traj.log_probs).all()  # deterministic steps have no log-prob


def test_flux_ode_matches_diffusers_pipeline(flux):
    ref = flux(PROMPTS, num_inference_steps=4, height=32, width=32, guidance_scale=3.5, max_sequence_length=16,
               output_type="latent", generator=torch.Generator().manual_seed(5)).images
    cfg = SamplerConfig(num_steps=4, noise_level=0.0, height=32, width=32)
    traj = sample(adapter_for(flux, distilled_guidance=3.5), PROMPTS, cfg, generator=torch.Generator().manual_seed(5), decode=False)
    torch.testing.assert_close(traj.latents[:, -1], ref, rtol=0, atol=1e-5)


def test_sd3_decoded_images_match_pipeline(sd3):
    ref = sd3(PROMPTS, num_inference_steps=3, height=32, width=32, guidance_scale=1.0, max_sequence_length=16,
              output_type="pt", generator=torch.Generator().manual_seed(1)).images
    cfg = SamplerConfig(num_steps=3, noise_level=0.0, height=32, width=32)
    traj = sample(adapter_for(sd3), PROMPTS, cfg, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(traj.images, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("kind", ["flow_grpo", "dance", "cps"])
@pytest.mark.parametrize("family", ["sd3_cfg", "flux"])
def test_on_policy_ratio_is_exactly_one(sd3, flux, kind, family):
    pipe, guidance = (sd3, 4.5) if family == "sd3_cfg" else (flux, 1.0)
    level = {"flow_grpo": 0.7, "dance": 0.3, "cps": 0.8}[kind]
    cfg = SamplerConfig(num_steps=4, kind=kind, noise_level=level, guidance_scale=guidance, height=32, width=32, micro_batch_size=2)
    adapter = adapter_for(pipe)
    traj = sample(adapter, PROMPTS, cfg, group_size=2, generator=torch.Generator().manual_seed(0), decode=False)
    steps = [0, 1, 2] if kind == "cps" else [0, 1, 2, 3]  # cps's last step (σ′ = 0) is deterministic
    new = recompute_log_probs(adapter, traj, steps, cfg)
    old = traj.log_probs[:, steps]
    assert torch.isfinite(old).all()
    assert torch.equal(torch.exp(new - old), torch.ones_like(new))


def test_recompute_has_gradients_and_ratio_moves_after_update(sd3):
    cfg = SamplerConfig(num_steps=3, noise_level=0.7, height=32, width=32)
    adapter = adapter_for(sd3)
    traj = sample(adapter, PROMPTS[:1], cfg, group_size=2, generator=torch.Generator().manual_seed(0), decode=False)
    params = [p for p in sd3.transformer.parameters()]
    saved = [p.detach().clone() for p in params]
    try:
        out = step_log_prob(adapter, traj, 1, cfg)
        out.log_prob.sum().backward()
        grads = [p.grad for p in params if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads)
        with torch.no_grad():
            for p in params:
                p.add_(0.01 * torch.randn_like(p))
            moved = step_log_prob(adapter, traj, 1, cfg).log_prob
        assert not torch.equal(moved, traj.log_probs[:, 1])
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
                p.grad = None


def test_per_sample_steps_match_uniform_steps(sd3):
    """DanceGRPO-style per-sample steps score each sample at its own transition."""
    cfg = SamplerConfig(num_steps=3, kind="dance", noise_level=0.3, height=32, width=32, micro_batch_size=1)
    adapter = adapter_for(sd3)
    traj = sample(adapter, PROMPTS, cfg, generator=torch.Generator().manual_seed(2), decode=False)
    with torch.no_grad():
        lp = step_log_prob(adapter, traj, torch.tensor([2, 0]), cfg).log_prob
    assert torch.equal(lp, torch.stack([traj.log_probs[0, 2], traj.log_probs[1, 0]]))


def test_window_of_sde_steps_and_groups(sd3):
    cfg = SamplerConfig(num_steps=4, noise_level=0.7, height=32, width=32, sde_steps=(1, 2), same_noise_per_group=True)
    adapter = adapter_for(sd3)
    traj = sample(adapter, PROMPTS, cfg, group_size=3, generator=torch.Generator().manual_seed(0), decode=False)
    assert traj.group_ids.tolist() == [0, 0, 0, 1, 1, 1]
    assert traj.latents.shape[:2] == (6, 5)
    assert torch.equal(traj.latents[0, 0], traj.latents[2, 0]) and not torch.equal(traj.latents[0, 0], traj.latents[3, 0])
    # Outside the window the steps are deterministic: same start, same first step.
    assert torch.equal(traj.latents[0, 1], traj.latents[1, 1])
    assert not torch.equal(traj.latents[0, 2], traj.latents[1, 2])
    assert torch.isnan(traj.log_probs[:, [0, 3]]).all() and torch.isfinite(traj.log_probs[:, [1, 2]]).all()
    with pytest.raises(ValueError, match="deterministically"):
        step_log_prob(adapter, traj, 0, cfg)
    sub = traj.select([4, 1])
    assert sub.prompts == [PROMPTS[1], PROMPTS[0]] and sub.group_ids.tolist() == [1, 0]
    assert torch.equal(sub.latents[0], traj.latents[4])


def test_sampler_config_validation():
    with pytest.raises(ValueError, match="num_steps"):
        SamplerConfig(num_steps=0)
    with pytest.raises(ValueError, match="sde_steps"):
        SamplerConfig(num_steps=4, sde_steps=(4,))
    with pytest.raises(ValueError, match="noise_level"):
        SamplerConfig(noise_level=-1)


def test_load_pipeline_roundtrip_pixel_space(tmp_path):
    pipe = tiny_sd3_pipeline(TinySD3Config(vae_channels=None, with_t5=False))
    pipe.save_pretrained(tmp_path / "base", safe_serialization=True)
    loaded = load_pipeline(tmp_path / "base")
    assert loaded.vae is None and loaded.text_encoder_3 is None
    cfg = SamplerConfig(num_steps=2, noise_level=0.0, height=32, width=32)
    a = sample(adapter_for(pipe), PROMPTS, cfg, generator=torch.Generator().manual_seed(0))
    b = sample(adapter_for(loaded), PROMPTS, cfg, generator=torch.Generator().manual_seed(0))
    assert a.images.shape == (2, 3, 32, 32)
    torch.testing.assert_close(a.images, b.images)


def test_load_pipeline_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pipeline(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="model_index.json"):
        load_pipeline(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model_index.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_pipeline(bad)
    (bad / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusion3Pipeline", "transformer": ["diffusers", "SD3Transformer2DModel"]}))
    with pytest.raises(CheckpointError, match="missing"):
        load_pipeline(bad)


@pytest.mark.parametrize("noise", [0.0, 0.7])
def test_hybrid_sampling_switches_model_at_switch_step(sd3, noise):
    """Hybrid inference (chunk_grpo.md §7): k = T is the plain trained sample, k = 0 the base sample, exactly."""
    import copy

    base = copy.deepcopy(sd3)
    with torch.no_grad():
        for p in base.transformer.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    trained, reference = adapter_for(sd3), adapter_for(base)
    cfg = SamplerConfig(num_steps=3, noise_level=noise, guidance_scale=2.0, height=32, width=32)

    def run(adapter, **kw):
        return sample(adapter, PROMPTS, cfg, generator=torch.Generator().manual_seed(4), decode=False, **kw).latents

    plain, base_only = run(trained), run(reference)
    assert not torch.equal(plain[:, -1], base_only[:, -1])
    assert torch.equal(run(trained, second_adapter=reference, switch_step=3), plain)
    assert torch.equal(run(trained, second_adapter=reference, switch_step=0), base_only)
    mixed = run(trained, second_adapter=reference, switch_step=2)
    assert torch.equal(mixed[:, :3], plain[:, :3]) and not torch.equal(mixed[:, 3], plain[:, 3])
    with pytest.raises(ValueError, match="together"):
        run(trained, switch_step=1)
    with pytest.raises(ValueError, match="switch_step"):
        run(trained, second_adapter=reference, switch_step=4)
