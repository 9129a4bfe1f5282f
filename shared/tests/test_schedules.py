"""Tests for shared.schedules against diffusers' schedulers and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from shared.schedules import (
    dance_sigmas,
    flux_image_seq_len,
    flux_mu,
    flux_sigmas,
    sd3_sigmas,
    shift_sigmas,
    sigma_to_timestep,
)


@pytest.mark.parametrize("num_steps", [1, 4, 10, 28, 40])
@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
def test_sd3_sigmas_equal_diffusers_scheduler(num_steps, shift):
    sched = FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(num_steps)
    sigmas = sd3_sigmas(num_steps, shift)
    assert sigmas.dtype == torch.float32 and sigmas.shape == (num_steps + 1,)
    assert torch.equal(sigmas, sched.sigmas)
    assert sigmas[0].item() == 1.0 and sigmas[-1].item() == 0.0  # σ = 1 edge case always hit on step 0
    assert torch.equal(sigma_to_timestep(sigmas[:-1]), sched.timesteps)


def test_sd3_sigmas_hand_values():
    # N = 2, shift 3: t = linspace(1, σ_min, 2) with σ_min = 3·0.001/(1 + 2·0.001) = 0.0029940; the last point is
    # shifted again: 3·0.0029940/(1 + 2·0.0029940) = 0.0089286
    torch.testing.assert_close(sd3_sigmas(2, 3.0), torch.tensor([1.0, 0.0089286, 0.0]), rtol=0, atol=1e-6)
    assert not torch.equal(sd3_sigmas(10, 3.0), sd3_sigmas(10, 1.0))  # the shift argument is used


def flux_reference(num_steps: int, seq_len: int) -> torch.Tensor:
    """FluxPipeline's recipe: calculate_shift(L), then a dynamic-shifting scheduler on linspace(1, 1/N, N)."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    sched = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096
    )
    mu = calculate_shift(seq_len, 256, 4096, 0.5, 1.15)
    sched.set_timesteps(num_steps, sigmas=np.linspace(1.0, 1 / num_steps, num_steps), mu=mu)
    return sched.sigmas


@pytest.mark.parametrize("num_steps", [1, 6, 16, 28])
@pytest.mark.parametrize("seq_len", [256, 1024, 777, 4096])
def test_flux_sigmas_equal_flux_pipeline(num_steps, seq_len):
    sigmas = flux_sigmas(num_steps, seq_len)
    assert sigmas.dtype == torch.float32 and sigmas[0].item() == 1.0 and sigmas[-1].item() == 0.0
    assert torch.equal(sigmas, flux_reference(num_steps, seq_len))


def test_flux_mu_matches_calculate_shift_and_card():
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    for seq_len in (256, 1024, 2000, 4096):
        assert flux_mu(seq_len) == calculate_shift(seq_len, 256, 4096, 0.5, 1.15)
    # card: 512² on FLUX → L = (512/16)² = 1024 → μ = 0.5 + 0.65·768/3840 = 0.63
    assert flux_image_seq_len(512, 512) == 1024
    assert flux_mu(flux_image_seq_len(512, 512)) == pytest.approx(0.63, abs=1e-12)
    assert flux_mu(256) == pytest.approx(0.5) and flux_mu(4096) == pytest.approx(1.15)
    assert flux_mu(1024, base_shift=0.0, max_shift=1.0) == pytest.approx(768 / 3840)
    assert flux_image_seq_len(32, 32, vae_scale_factor=2) == 64  # the tiny VAE of card §12 (factor 2)
    with pytest.raises(ValueError, match="vae_scale_factor"):
        flux_image_seq_len(512, 512, vae_scale_factor=0)
    with pytest.raises(ValueError, match="max_seq_len"):
        flux_mu(1024, base_seq_len=256, max_seq_len=256)


def test_flux_sigmas_hand_values():
    # N = 2, L = 1024 (μ = 0.63): σ = [1, 0.5] ↦ e^μ/(e^μ + 1/σ − 1) = [1, e^0.63/(e^0.63 + 1)] = [1, 0.6524895]
    torch.testing.assert_close(flux_sigmas(2, 1024), torch.tensor([1.0, 0.6524895, 0.0]), rtol=0, atol=1e-6)


def test_dance_sigmas_hand_values():
    # S = 4, shift 3: t = 1, .75, .5, .25, 0 ↦ 3t/(1 + 2t) = 1, 2.25/2.5, 1.5/2, .75/1.5, 0
    torch.testing.assert_close(dance_sigmas(4, 3.0), torch.tensor([1.0, 0.9, 0.75, 0.5, 0.0]), rtol=0, atol=1e-7)
    torch.testing.assert_close(dance_sigmas(4, 1.0), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]), rtol=0, atol=1e-7)
    sig = dance_sigmas(16)
    assert sig.shape == (17,) and bool((sig[1:] < sig[:-1]).all())


def test_shift_and_timestep_helpers():
    assert shift_sigmas(0.5, 3.0) == pytest.approx(0.75)  # 1.5/2
    assert sigma_to_timestep(0.25) == 250.0
    torch.testing.assert_close(sigma_to_timestep(torch.tensor([1.0, 0.5])), torch.tensor([1000.0, 500.0]))


@pytest.mark.parametrize("fn", [sd3_sigmas, dance_sigmas])
def test_validation(fn):
    with pytest.raises(ValueError, match="num_steps"):
        fn(0)
    with pytest.raises(ValueError, match="shift"):
        fn(4, shift=0.0)
    with pytest.raises(ValueError, match="num_steps"):
        flux_sigmas(0, 1024)
