"""Tests for shared.sde against diffusers, hand-computed values and an analytic Gaussian flow."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

from shared.sde import ddim_alphas, ddim_step, gaussian_log_prob, sde_step

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

# Analytic flow: x0 ~ N(M, C²) per element, x1 ~ N(0, 1), x_σ = (1−σ)x0 + σx1.
M, C = 1.5, 0.5


def v_star(x: torch.Tensor, s: float) -> torch.Tensor:
    """Exact velocity E[x1 − x0 | x_σ = x] of the analytic flow (card §2)."""
    return -M + (s - (1 - s) * C**2) * (x - (1 - s) * M) / ((1 - s) ** 2 * C**2 + s**2)


def marginal(s: float) -> tuple[float, float]:
    """Mean and variance of x_σ: (1−σ)·M and (1−σ)²C² + σ²."""
    return (1 - s) * M, (1 - s) ** 2 * C**2 + s**2


def hand_step_std(kind: str, a: float, s: float, sn: float) -> float:
    """s written out from the card's table, independently of the module."""
    if kind == "flow_grpo":
        s_tilde = sn if s == 1 else s
        return a * math.sqrt(s / (1 - s_tilde)) * math.sqrt(s - sn)
    if kind == "dance":
        return a * math.sqrt(s - sn)
    return sn * math.sin(a * math.pi / 2)


# --- noise 0 = Euler = diffusers -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["flow_grpo", "dance", "cps"])
def test_noise_zero_matches_diffusers_euler(kind):
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(10)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, 5, generator=gen)
    x_ref = x.clone()
    for i, t in enumerate(sched.timesteps):
        v = torch.randn(x.shape, generator=gen)
        ref = sched.step(v, t, x_ref).prev_sample
        sigma, sigma_next = sched.sigmas[i].item(), sched.sigmas[i + 1].item()
        out = sde_step(v, x, sigma, sigma_next, kind=kind, noise_level=0.0)
        torch.testing.assert_close(out.prev_sample, ref, rtol=0, atol=1e-6)
        # per-sample tensor sigmas give the same step
        out_b = sde_step(v, x, sched.sigmas[i].repeat(3), sched.sigmas[i + 1].repeat(3), kind=kind, noise_level=0.0)
        torch.testing.assert_close(out_b.prev_sample, ref, rtol=0, atol=1e-6)
        assert torch.isnan(out.log_prob).all()  # s = 0: log-prob undefined, never train this step
        x, x_ref = out.prev_sample, ref


def test_cps_zero_is_euler_and_last_step_deterministic():
    x = torch.tensor([[1.0, -2.0]])
    v = torch.tensor([[2.0, 0.5]])
    out = sde_step(v, x, 0.5, 0.25, kind="cps", noise_level=0.0)
    # Euler: x + Δ·v = [1 − 0.25·2, −2 − 0.25·0.5] = [0.5, −2.125]
    torch.testing.assert_close(out.prev_sample, torch.tensor([[0.5, -2.125]]), rtol=0, atol=1e-7)
    assert torch.isnan(out.log_prob).all()
    # cps onto σ′ = 0: s = 0·sin(·) = 0, μ = x̂0 = x − σ·v = [1 − 0.5·2, −2 − 0.5·0.5] = [0, −2.25]
    last = sde_step(v, x, 0.5, 0.0, kind="cps", noise_level=0.7, noise=torch.ones_like(x))
    torch.testing.assert_close(last.prev_sample, torch.tensor([[0.0, -2.25]]), rtol=0, atol=1e-7)
    assert last.step_std.item() == 0.0
    assert torch.isnan(last.log_prob).all()


# --- hand-computed single steps --------------------------------------------------------------------


def test_hand_values_flow_grpo():
    # x = 1, v = 2, σ = 0.5, σ′ = 0.25, a = 0.5: Δ = −0.25, g = 0.5·√(0.5/0.5) = 0.5, s = g·√0.25 = 0.25
    # μ = 1·(1 + 0.25·(−0.25)/1) + 2·(1 + 0.25·0.5/1)·(−0.25) = 0.9375 − 0.5625 = 0.375
    x, v = torch.ones(1, 1), torch.full((1, 1), 2.0)
    out = sde_step(v, x, 0.5, 0.25, kind="flow_grpo", noise_level=0.5, prev_sample=torch.full((1, 1), 0.5))
    assert out.mean.item() == pytest.approx(0.375, abs=1e-7)
    assert out.std.item() == pytest.approx(0.5, abs=1e-7)
    assert out.step_std.item() == pytest.approx(0.25, abs=1e-7)
    # z = (0.5 − 0.375)/0.25 = 0.5: log p = −0.125 − log 0.25 − ½·log 2π = 0.3423559
    assert out.log_prob.item() == pytest.approx(0.3423559, abs=1e-6)
    ref = torch.distributions.Normal(0.375, 0.25).log_prob(torch.tensor(0.5)).item()
    assert out.log_prob.item() == pytest.approx(ref, abs=1e-6)


def test_hand_values_dance():
    # η = 0.4: s = 0.4·√0.25 = 0.2, g = 0.4; η²/(2σ) = 0.16; x̂1 = x + (1−σ)v = 2
    # μ = 1 + (−0.25)·2 + (−0.25)·0.16·2 = 0.5 − 0.08 = 0.42
    x, v = torch.ones(1, 1), torch.full((1, 1), 2.0)
    out = sde_step(v, x, 0.5, 0.25, kind="dance", noise_level=0.4, noise=torch.full((1, 1), -1.5))
    assert out.mean.item() == pytest.approx(0.42, abs=1e-7)
    assert out.std.item() == pytest.approx(0.4, abs=1e-7)
    assert out.step_std.item() == pytest.approx(0.2, abs=1e-7)
    assert out.prev_sample.item() == pytest.approx(0.42 - 1.5 * 0.2, abs=1e-7)  # μ + s·ε
    # z = −1.5: log p = −1.125 − log 0.2 − ½·log 2π = −1.125 + 1.6094379 − 0.9189385 = −0.4345006
    assert out.log_prob.item() == pytest.approx(-0.4345006, abs=1e-6)


def test_hand_values_cps():
    # a = 1/3: s = σ′·sin(π/6) = 0.125; x̂0 = 1 − 0.5·2 = 0, x̂1 = 1 + 0.5·2 = 2
    # μ = 0.75·0 + √(0.0625 − 0.015625)·2 = 0.4330127; g = s/√(−Δ) = 0.25
    x, v = torch.ones(1, 1), torch.full((1, 1), 2.0)
    prev = torch.full((1, 1), 0.5)
    out = sde_step(v, x, 0.5, 0.25, kind="cps", noise_level=1 / 3, prev_sample=prev)
    assert out.mean.item() == pytest.approx(0.4330127, abs=1e-6)
    assert out.step_std.item() == pytest.approx(0.125, abs=1e-7)
    assert out.std.item() == pytest.approx(0.25, abs=1e-7)
    ref = torch.distributions.Normal(0.4330127, 0.125).log_prob(torch.tensor(0.5)).item()
    assert out.log_prob.item() == pytest.approx(ref, abs=1e-5)
    # Flow-GRPO's constant-free score: −(0.5 − 0.4330127)² = −0.0044873
    fg = sde_step(v, x, 0.5, 0.25, kind="cps", noise_level=1 / 3, prev_sample=prev, cps_logprob="flow_grpo")
    assert fg.log_prob.item() == pytest.approx(-0.0044873, abs=1e-6)


def test_sigma_one_edge_case_is_finite():
    # σ = 1 → σ̃ = σ′: g = a·√(1/(1 − σ′)), s = g·√(1 − σ′) = a exactly, whatever σ′
    x = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(1))
    v = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(2))
    for sn in (0.96, 0.75):
        out = sde_step(v, x, 1.0, sn, kind="flow_grpo", noise_level=0.7, generator=torch.Generator().manual_seed(3))
        assert out.std.item() == pytest.approx(0.7 / math.sqrt(1 - sn), rel=1e-6)
        assert out.step_std.item() == pytest.approx(0.7, rel=1e-6)
        assert torch.isfinite(out.mean).all() and torch.isfinite(out.log_prob).all()
    # per-sample sigmas where only some samples sit at σ = 1
    sig, sig_n = torch.tensor([1.0, 0.8, 1.0, 0.5]), torch.tensor([0.9, 0.6, 0.9, 0.25])
    out = sde_step(v, x, sig, sig_n, kind="flow_grpo", noise_level=0.7, noise=torch.zeros_like(x))
    assert torch.isfinite(out.log_prob).all()
    expected_g = torch.tensor([0.7 / math.sqrt(0.1), 0.7 * math.sqrt(0.8 / 0.2), 0.7 / math.sqrt(0.1), 0.7])
    torch.testing.assert_close(out.std.flatten(), expected_g)


def test_per_sample_sigmas_equal_scalar_calls():
    gen = torch.Generator().manual_seed(4)
    x, v, eps = (torch.randn(3, 2, 4, generator=gen) for _ in range(3))
    sig, sig_n = torch.tensor([1.0, 0.7, 0.3]), torch.tensor([0.8, 0.5, 0.0])
    for kind in ("flow_grpo", "dance", "cps"):
        batched = sde_step(v, x, sig, sig_n, kind=kind, noise_level=0.6, noise=eps)
        for i in range(3):
            single = sde_step(v[i : i + 1], x[i : i + 1], sig[i].item(), sig_n[i].item(), kind=kind, noise_level=0.6,
                              noise=eps[i : i + 1])
            torch.testing.assert_close(batched.prev_sample[i : i + 1], single.prev_sample, rtol=0, atol=1e-6)
            torch.testing.assert_close(batched.log_prob[i : i + 1], single.log_prob, rtol=0, atol=1e-5, equal_nan=True)


# --- the analytic Gaussian flow -------------------------------------------------------------------


def run_chain(kind: str, a: float, steps: int = 100, batch: int = 4096, dim: int = 16, seed: int = 0):
    """Sample the analytic flow σ = 1 → 0 on a linear grid; return the final x and per-step (mean, var) errors."""
    sig = torch.linspace(1.0, 0.0, steps + 1)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, dim, generator=gen)
    errors = []
    for k in range(steps):
        s, sn = sig[k].item(), sig[k + 1].item()
        x = sde_step(v_star(x, s), x, s, sn, kind=kind, noise_level=a, generator=gen).prev_sample
        em, ev = marginal(sn)
        errors.append((abs(x.mean().item() - em), abs(x.var().item() / ev - 1)))
    return x, errors


@pytest.mark.parametrize(
    ("kind", "a", "intermediate_var_tol"),
    [("flow_grpo", 0.7, 0.12), ("dance", 0.3, 0.05), ("dance", 0.8, 0.05), ("cps", 0.1, 0.05)],
)
def test_sde_preserves_analytic_marginals(kind, a, intermediate_var_tol):
    x, errors = run_chain(kind, a)
    assert x.mean().item() == pytest.approx(M, abs=0.02)
    assert x.var().item() == pytest.approx(C**2, rel=0.05)
    # every intermediate marginal: mean exact up to noise, variance within tolerance. flow_grpo's g → ∞ as σ → 1:
    # its first steps have g²·(−Δ) ≈ a²/k on step k whatever the grid, so Euler–Maruyama overshoots the variance
    # by ≈ 11% after step 1 at a = 0.7 and relaxes it away later (final error < 1%).
    assert max(e[0] for e in errors) < 0.02
    assert max(e[1] for e in errors) < intermediate_var_tol


def test_cps_is_not_marginal_preserving_at_large_a():
    # CPS keeps the coefficients of the predicted endpoints, not the marginal: x̂0 = E[x0|x] has variance < C²,
    # and the fresh noise s = σ′·sin(aπ/2) does not shrink with the step, so the data-part variance is lost
    # every step (≈ −30% here at a = 0.7, whatever the step count). The mean is still preserved.
    x, _ = run_chain("cps", 0.7)
    assert x.mean().item() == pytest.approx(M, abs=0.02)
    assert x.var().item() < 0.85 * C**2


def test_marginal_test_rejects_noise_without_drift():
    # Wrong drift (noise added to the plain Euler mean, DanceGRPO without sde_solver) must fail the marginal test.
    sig = torch.linspace(1.0, 0.0, 101)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 16, generator=gen)
    for k in range(100):
        s, sn = sig[k].item(), sig[k + 1].item()
        x = x + (sn - s) * v_star(x, s) + 0.3 * math.sqrt(s - sn) * torch.randn(x.shape, generator=gen)
    assert abs(x.var().item() / C**2 - 1) > 0.05


# --- log-probs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "a"), [("flow_grpo", 0.7), ("dance", 0.3), ("cps", 0.7)])
@pytest.mark.parametrize(("s", "sn"), [(1.0, 0.9), (0.6, 0.5), (0.2, 0.1)])
def test_on_policy_log_prob_expectation(kind, a, s, sn):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(512, 4, 8, generator=gen)
    out = sde_step(v_star(x, s), x, s, sn, kind=kind, noise_level=a, generator=gen)
    step_std = hand_step_std(kind, a, s, sn)
    assert out.step_std.item() == pytest.approx(step_std, rel=1e-5)
    # E[log p] = −½ − log s − ½·log 2π; the per-sample mean over 32 elements has sd ≈ √(0.5/32) ≈ 0.125,
    # so the mean over 512 samples is good to ≈ 0.006.
    expected = -0.5 - math.log(step_std) - HALF_LOG_2PI
    assert out.log_prob.mean().item() == pytest.approx(expected, abs=0.025)
    assert out.log_prob.shape == (512,) and out.log_prob.dtype == torch.float32
    if kind == "cps":  # Flow-GRPO's score −mean_d (x′−μ)² has expectation −s²
        fg = sde_step(v_star(x, s), x, s, sn, kind=kind, noise_level=a, prev_sample=out.prev_sample,
                      cps_logprob="flow_grpo")
        assert fg.log_prob.mean().item() == pytest.approx(-(step_std**2), rel=0.05)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["flow_grpo", "dance", "cps"])
def test_rescoring_the_drawn_sample_is_bit_identical(kind, dtype):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(4, 3, 5, 5, generator=gen).to(dtype)
    v = torch.randn(4, 3, 5, 5, generator=gen).to(dtype)
    for s, sn in ((1.0, 0.9), (0.5, 0.4)):
        drawn = sde_step(v, x, s, sn, kind=kind, generator=gen)
        assert drawn.prev_sample.dtype == dtype
        scored = sde_step(v, x, s, sn, kind=kind, prev_sample=drawn.prev_sample)
        assert torch.equal(scored.log_prob, drawn.log_prob)
        assert torch.equal(scored.prev_sample, drawn.prev_sample)


def test_low_precision_inputs_give_float32_math():
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 4, 3, generator=gen).to(torch.bfloat16)
    v = torch.randn(2, 4, 3, generator=gen).to(torch.bfloat16)
    eps = torch.randn(2, 4, 3, generator=gen)
    for kind in ("flow_grpo", "dance", "cps"):
        low = sde_step(v, x, 0.8, 0.6, kind=kind, noise=eps)
        high = sde_step(v.float(), x.float(), 0.8, 0.6, kind=kind, noise=eps)
        for t in (low.mean, low.log_prob, low.std, low.step_std):
            assert t.dtype == torch.float32
        assert torch.equal(low.mean, high.mean)  # μ computed in float32 from the upcast inputs
        assert torch.equal(low.prev_sample, high.prev_sample.to(torch.bfloat16))
        # the log-prob scores the returned bf16 sample, not the float32 draw
        expected = gaussian_log_prob(high.prev_sample.to(torch.bfloat16).float(), high.mean, high.step_std)
        assert torch.equal(low.log_prob, expected)


def test_log_prob_gradient_flows_through_the_mean_only():
    # flow_grpo: ∂ log p/∂v = (x′ − μ)/(s²·D) · ∂μ/∂v, ∂μ/∂v = (1 + g²(1−σ)/(2σ))·Δ
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(2, 6, generator=gen)
    v = torch.randn(2, 6, generator=gen, requires_grad=True)
    prev = torch.randn(2, 6, generator=gen, requires_grad=True)
    s, sn, a = 0.6, 0.4, 0.7
    out = sde_step(v, x, s, sn, kind="flow_grpo", noise_level=a, prev_sample=prev)
    out.log_prob.sum().backward()
    g2 = a**2 * s / (1 - s)
    step_var = g2 * (s - sn)
    dmu_dv = (1 + g2 * (1 - s) / (2 * s)) * (sn - s)
    expected = (prev.detach() - out.mean.detach()) / (step_var * 6) * dmu_dv
    torch.testing.assert_close(v.grad, expected, rtol=1e-4, atol=1e-6)
    assert prev.grad is None  # x′ is detached inside the log-prob


def test_noise_and_generator_draws():
    x, v = torch.zeros(2, 3), torch.ones(2, 3)
    eps = torch.tensor([[1.0, -1.0, 0.5], [0.0, 2.0, -2.0]])
    out = sde_step(v, x, 0.5, 0.25, kind="dance", noise_level=0.4, noise=eps)
    torch.testing.assert_close(out.prev_sample, out.mean + 0.2 * eps)  # s = 0.4·√0.25
    a = sde_step(v, x, 0.5, 0.25, generator=torch.Generator().manual_seed(9))
    b = sde_step(v, x, 0.5, 0.25, generator=torch.Generator().manual_seed(9))
    c = sde_step(v, x, 0.5, 0.25, generator=torch.Generator().manual_seed(10))
    assert torch.equal(a.prev_sample, b.prev_sample) and not torch.equal(a.prev_sample, c.prev_sample)


def test_argument_validation():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="kind"):
        sde_step(x, x, 0.5, 0.4, kind="ode")
    with pytest.raises(ValueError, match="cps_logprob"):
        sde_step(x, x, 0.5, 0.4, kind="cps", cps_logprob="exact")
    with pytest.raises(ValueError, match="noise_level"):
        sde_step(x, x, 0.5, 0.4, noise_level=-0.1)
    with pytest.raises(ValueError, match="sigma_next"):
        sde_step(x, x, 0.4, 0.5)
    with pytest.raises(ValueError, match="sigma"):
        sde_step(x, x, 1.5, 0.5)
    with pytest.raises(ValueError, match="sigma"):
        sde_step(x, x, torch.ones(3), 0.5)
    with pytest.raises(ValueError, match="model_output"):
        sde_step(torch.zeros(2, 4), x, 0.5, 0.4)
    with pytest.raises(ValueError, match="prev_sample"):
        sde_step(x, x, 0.5, 0.4, prev_sample=x, noise=x)
    with pytest.raises(ValueError, match="sample"):
        sde_step(torch.zeros(2), torch.zeros(2), 0.5, 0.4)


# --- DDIM (ε-prediction) -----------------------------------------------------------------------------


def sd1_scheduler(**kw) -> DDIMScheduler:
    """SD 1.x scheduler config (scaled_linear betas, final ᾱ = ᾱ[0], no x̂0 clipping)."""
    config = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                  set_alpha_to_one=False, steps_offset=1)
    return DDIMScheduler(**{**config, **kw})


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches_diffusers(eta):
    sched = sd1_scheduler()
    sched.set_timesteps(10)
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(2, 4, 4, 4, generator=gen)
    x_ref = x.clone()
    for t in sched.timesteps:
        eps_hat = torch.randn(x.shape, generator=gen)
        noise = torch.randn(x.shape, generator=gen)
        ref = sched.step(eps_hat, t, x_ref, eta=eta, variance_noise=noise).prev_sample
        a_t, a_prev = ddim_alphas(sched, t)
        out = ddim_step(eps_hat, x, a_t, a_prev, eta=eta, noise=noise)
        torch.testing.assert_close(out.prev_sample, ref, rtol=0, atol=1e-5)
        assert torch.isnan(out.log_prob).all() == (eta == 0)
        x, x_ref = out.prev_sample, ref


def test_ddim_alphas_lookup_and_final_alpha():
    sched = sd1_scheduler()
    sched.set_timesteps(10)  # timesteps 901, 801, …, 1 (leading spacing, offset 1)
    a_t, a_prev = ddim_alphas(sched, 801)
    assert a_t.item() == sched.alphas_cumprod[801].item() and a_prev.item() == sched.alphas_cumprod[701].item()
    a_t, a_prev = ddim_alphas(sched, 1)  # t_prev = −99 < 0 → final ᾱ = ᾱ[0] (set_alpha_to_one=False)
    assert a_prev.item() == sched.alphas_cumprod[0].item()
    a_t, a_prev = ddim_alphas(sched, torch.tensor([901, 1]))
    assert a_prev.tolist() == [sched.alphas_cumprod[801].item(), sched.alphas_cumprod[0].item()]
    one = sd1_scheduler(set_alpha_to_one=True)
    one.set_timesteps(10)
    assert ddim_alphas(one, 1)[1].item() == 1.0


def test_ddim_eta_one_is_ddpm_posterior_and_log_prob_expectation():
    a_t, a_prev = 0.5, 0.8
    # s² = (1 − 0.8)/(1 − 0.5)·(1 − 0.5/0.8) = 0.4·0.375 = 0.15 = β̃_t with β_t = 1 − ᾱ_t/ᾱ_prev = 0.375
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(512, 32, generator=gen)
    eps_hat = torch.randn(512, 32, generator=gen)
    out = ddim_step(eps_hat, x, a_t, a_prev, eta=1.0, generator=gen)
    assert out.step_std.item() == pytest.approx(math.sqrt(0.15), rel=1e-6)
    assert out.std.item() == out.step_std.item()
    expected = -0.5 - 0.5 * math.log(0.15) - HALF_LOG_2PI
    assert out.log_prob.mean().item() == pytest.approx(expected, abs=0.025)
    scored = ddim_step(eps_hat, x, a_t, a_prev, eta=1.0, prev_sample=out.prev_sample)
    assert torch.equal(scored.log_prob, out.log_prob)
    # μ = √0.8·x̂0 + √(1 − 0.8 − 0.15)·ε̂, x̂0 = (x − √0.5·ε̂)/√0.5
    mu = math.sqrt(0.8) * (x - math.sqrt(0.5) * eps_hat) / math.sqrt(0.5) + math.sqrt(0.05) * eps_hat
    torch.testing.assert_close(out.mean, mu)


def test_ddim_validation():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="eta"):
        ddim_step(x, x, 0.5, 0.8, eta=1.5)
    with pytest.raises(ValueError, match="alpha_prod"):
        ddim_step(x, x, 0.0, 0.8)
    clipping = DDIMScheduler(clip_sample=True)
    clipping.set_timesteps(10)
    with pytest.raises(ValueError, match="clip_sample"):
        ddim_alphas(clipping, 1)
    with pytest.raises(ValueError, match="set_timesteps"):
        ddim_alphas(sd1_scheduler(), 1)
