"""The DDPM/DDIM math against diffusers' schedulers (an independent implementation of the same formulas)."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from wfdiffuser.diffusion import Diffusion, cosine_betas, ddim_timesteps

T = 20


def _ddpm_ref() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                         variance_type="fixed_small", prediction_type="epsilon")


def test_cosine_betas_match_diffusers_and_janner_formula() -> None:
    ref = _ddpm_ref().betas.double()
    assert torch.allclose(cosine_betas(T), ref, atol=1e-7)
    # Janner's form: ᾱ from linspace(0, T+1, T+1)/(T+1), normalised by ᾱ[0]
    x = torch.linspace(0, T + 1, T + 1, dtype=torch.float64) / (T + 1)
    ac = torch.cos((x + 0.008) / 1.008 * torch.pi / 2) ** 2
    ac = ac / ac[0]
    janner = (1 - ac[1:] / ac[:-1]).clamp(0, 0.999)
    assert torch.allclose(cosine_betas(T), janner, atol=1e-12)


def test_q_sample_matches_diffusers_add_noise() -> None:
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 6, 3, generator=g), torch.randn(4, 6, 3, generator=g)
    t = torch.tensor([0, 5, 11, 19])
    ours = Diffusion(T).q_sample(x0, t, noise)
    assert torch.allclose(ours, _ddpm_ref().add_noise(x0, noise, t), atol=1e-6)


@pytest.mark.parametrize("t", [19, 7, 1, 0])
def test_ddpm_step_matches_diffusers(t: int) -> None:
    g = torch.Generator().manual_seed(t)
    x, eps = 1.5 * torch.randn(3, 8, 2, generator=g), torch.randn(3, 8, 2, generator=g)
    sched = _ddpm_ref()
    sched.set_timesteps(T)
    ref = sched.step(eps, t, x, generator=torch.Generator().manual_seed(9)).prev_sample
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    ours = Diffusion(T).ddpm_step(x, torch.full((3,), t), eps, noise, temperature=1.0)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_ddpm_low_temperature_scales_only_the_noise() -> None:
    g = torch.Generator().manual_seed(1)
    x, eps, z = (torch.randn(2, 4, 1, generator=g) for _ in range(3))
    d, t = Diffusion(T), torch.full((2,), 9)
    mean = d.ddpm_step(x, t, eps, None)
    full = d.ddpm_step(x, t, eps, z, temperature=1.0)
    half = d.ddpm_step(x, t, eps, z, temperature=0.5)
    assert torch.allclose(half - mean, 0.5 * (full - mean), atol=1e-6)
    assert not torch.allclose(full, mean)


@pytest.mark.parametrize("n", [5, 10, 20])
def test_ddim_loop_matches_diffusers(n: int) -> None:
    sched = DDIMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                          set_alpha_to_one=True, prediction_type="epsilon")
    sched.set_timesteps(n)
    assert [int(t) for t in sched.timesteps] == ddim_timesteps(T, n)

    def eps_fn(x: torch.Tensor, t: int) -> torch.Tensor:  # a fixed smooth "model"
        return torch.tanh(x * (1 + t / T))

    x0 = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(n))
    ref = x0.clone()
    for t in sched.timesteps:
        ref = sched.step(eps_fn(ref, int(t)), t, ref, eta=0.0, use_clipped_model_output=True).prev_sample
    out = Diffusion(T).sample(lambda xs, t: [eps_fn(xs[0], int(t[0]))], [(2, 6, 3)], sampler="ddim",
                              sample_steps=n, temperature=1.0, generator=torch.Generator().manual_seed(n))
    assert torch.allclose(out[0], ref, atol=1e-5)


def test_inpainting_holds_through_sampling_for_both_samplers() -> None:
    known = torch.tensor([0.3, -0.7])

    def inpaint(xs: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for x in xs:
            x = x.clone()
            x[:, 0] = known
            out.append(x)
        return out

    seen = []

    def denoise(xs: list[torch.Tensor], t: torch.Tensor) -> list[torch.Tensor]:
        seen.extend(torch.allclose(x[:, 0], known.expand_as(x[:, 0])) for x in xs)
        return [torch.randn_like(x) for x in xs]

    for sampler in ("ddpm", "ddim"):
        out = Diffusion(T).sample(denoise, [(3, 8, 2), (3, 8, 2)], inpaint=inpaint, sampler=sampler, sample_steps=4)
        assert all(torch.allclose(x[:, 0], known.expand(3, 2)) for x in out)
    assert seen and all(seen)  # the model only ever saw in-painted inputs


def test_bad_arguments_name_the_problem() -> None:
    with pytest.raises(ValueError, match="sample steps"):
        ddim_timesteps(20, 21)
    with pytest.raises(ValueError, match="sampler"):
        Diffusion(T).sample(lambda x, t: x, [(1, 4, 1)], sampler="euler")
