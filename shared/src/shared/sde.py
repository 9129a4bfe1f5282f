"""One stochastic sampling step with its Gaussian log-probability (spec card §2).

Flow matching: x_σ = (1 − σ)·x0 + σ·x1, the network predicts v ≈ x1 − x0, sampling runs σ = 1 → 0 and a step
σ → σ′ has **Δ = σ′ − σ < 0**; noise scales use √(−Δ). Predicted endpoints x̂0 = x − σ·v, x̂1 = x + (1 − σ)·v.
Every kind draws x′ = μ + s·ε, ε ~ N(0, I), or, given a stored `prev_sample`, scores it instead of drawing.

| kind        | s (multiplies ε)                     | μ                                                 |
|-------------|--------------------------------------|---------------------------------------------------|
| `flow_grpo` | g·√(−Δ), g = a·√(σ/(1−σ̃))           | x·(1 + g²Δ/(2σ)) + v·(1 + g²(1−σ)/(2σ))·Δ        |
| `dance`     | η·√(−Δ)  (g ≡ η)                     | x + Δ·v + Δ·(η²/(2σ))·(x + (1−σ)·v)               |
| `cps`       | σ′·sin(a·π/2)                        | (1−σ′)·x̂0 + √(σ′² − s²)·x̂1                       |
| `ddim`      | η·σ′·√(1 − q²), q = σ′(1−σ)/(σ(1−σ′)) | (1−σ′)·x̂0 + √(σ′² − s²)·x̂1                       |

Sources: Flow-GRPO `flow_grpo/diffusers_patch/sd3_sde_with_logprob.py` (`flow_grpo`, `cps`), DanceGRPO
`fastvideo/train_grpo_flux.py::flux_step` with `sde_solver=True` (`dance`), ddpo-pytorch
`ddpo_pytorch/diffusers_patch/ddim_with_logprob.py` (`ddim`, and `ddim_step` below).

DDIM in flow coordinates (the `ddim` kind; Song et al. 2021, "Denoising Diffusion Implicit Models", Eq. 12 with
σ_t(η) of Eq. 16). A variance-preserving (VP) model has states y_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε. With
c = √ᾱ + √(1−ᾱ) (`vp_scale`), x = y/c and σ = √(1−ᾱ)/c (`sigma_from_alpha_bar`) give x = (1−σ)·x0 + σ·ε, a
flow-matching state; conversely ᾱ = (1−σ)²/((1−σ)² + σ²) (`alpha_bar_from_sigma`) and c = 1/√((1−σ)² + σ²).
An ε-prediction ε̂ is the velocity v = ε̂ − x̂0 = (ε̂ − x)/(1−σ), so x̂0 = x − σ·v and x̂1 = x + (1−σ)·v = ε̂.
DDIM's y′ = √ᾱ′·x̂0 + √(1−ᾱ′−s_y²)·ε̂ + s_y·ε, s_y = η·√((1−ᾱ′)/(1−ᾱ))·√(1−ᾱ/ᾱ′) (`ddim_step`), divided by
c′ is exactly the `ddim` row: √ᾱ′/c′ = 1−σ′, √(1−ᾱ′)/c′ = σ′, and with r = σ/(1−σ) (so ᾱ = 1/(1+r²)),
s_y/c′ = η·σ′·√(1 − r′²/r²) = s. η = 0 is the Euler step x + Δ·v (DDIM is the flow ODE's Euler method in these
coordinates); η = 1 is DDPM's posterior variance. The map is affine per step, so the flow log-prob is the VP one
plus log c′ (per-element mean): log-ratios, and the Gaussian-mean KL, are identical to DDPO's. η ∈ [0, 1].

Log-prob: the per-element Gaussian log-density **averaged** over the non-batch dims, one value per sample,
log p = mean_d[−(x′_d − μ_d)²/(2s²) − log s − ½·log 2π]; on-policy E[log p] = −½ − log s − ½·log 2π.
All math runs in float32 whatever the input dtype (Flow-GRPO notes bf16 overflow in μ). The drawn `prev_sample`
is cast back to `sample.dtype` and the log-prob is computed on that cast value, so re-scoring the stored sample
reproduces the number bit for bit. Gradients reach the log-prob through μ only (x′ is detached; s has no
learnable part). A step with s = 0 (noise_level 0, or `cps` / `ddim` onto σ′ = 0, or DDIM η = 0) is a deterministic
step whose log-prob is undefined: it returns NaN there — never train such a step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "CPS_LOGPROBS",
    "SDE_KINDS",
    "SDEStepOutput",
    "alpha_bar_from_sigma",
    "ddim_alphas",
    "ddim_step",
    "gaussian_log_prob",
    "sde_step",
    "sigma_from_alpha_bar",
    "vp_scale",
]

SDE_KINDS = ("flow_grpo", "dance", "cps", "ddim")
CPS_LOGPROBS = ("gaussian", "flow_grpo")
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class SDEStepOutput:
    """Result of one step.

    prev_sample: x′ in `sample.dtype` (drawn, or the given one).
    log_prob: (B,) float32, mean over non-batch dims of the Gaussian log-density of x′ (NaN where s = 0).
    mean: μ, float32, shaped like `sample`; carries the graph of `model_output`.
    std: g, the diffusion coefficient **without** √(−Δ) (what Flow-GRPO returns as `std_dev_t` for its SDE and
        what the Flow-GRPO KL convention divides by); float32, broadcastable to `sample`.
    step_std: s, the std that multiplies ε (= g·√(−Δ) for every flow kind); float32, broadcastable.
    """

    prev_sample: Tensor
    log_prob: Tensor
    mean: Tensor
    std: Tensor
    step_std: Tensor


def _per_sample(value: float | Tensor, name: str, like: Tensor) -> Tensor:
    """Float, 0-d tensor or (B,) tensor → float32 tensor broadcastable to `like` (shape () or (B, 1, …, 1))."""
    t = torch.as_tensor(value, dtype=torch.float32, device=like.device)
    if t.ndim == 0:
        return t
    if t.ndim == 1 and t.shape[0] == like.shape[0]:
        return t.view(-1, *([1] * (like.ndim - 1)))
    if t.ndim == like.ndim and t.shape[0] in (1, like.shape[0]) and all(n == 1 for n in t.shape[1:]):
        return t
    raise ValueError(
        f"{name} must be a float, a 0-d tensor or a per-sample tensor of shape ({like.shape[0]},); "
        f"got shape {tuple(t.shape)}"
    )


def _check_tensors(model_output: Tensor, sample: Tensor, prev_sample: Tensor | None, noise: Tensor | None) -> None:
    if sample.ndim < 2:
        raise ValueError(f"sample must have a batch dim and at least one more dim, got shape {tuple(sample.shape)}")
    if model_output.shape != sample.shape:
        raise ValueError(f"model_output shape {tuple(model_output.shape)} != sample shape {tuple(sample.shape)}")
    if prev_sample is not None and prev_sample.shape != sample.shape:
        raise ValueError(f"prev_sample shape {tuple(prev_sample.shape)} != sample shape {tuple(sample.shape)}")
    if noise is not None and noise.shape != sample.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} != sample shape {tuple(sample.shape)}")
    if prev_sample is not None and noise is not None:
        raise ValueError("pass either prev_sample (score a stored step) or noise (draw one), not both")


def sigma_from_alpha_bar(alpha_bar: float | Tensor) -> float | Tensor:
    """Flow σ of a VP noise level ᾱ: σ = √(1−ᾱ)/(√ᾱ + √(1−ᾱ)) ∈ [0, 1] (module doc, "DDIM in flow coordinates")."""
    if torch.is_tensor(alpha_bar):
        a, b = torch.sqrt(alpha_bar), torch.sqrt(1 - alpha_bar)
    else:
        a, b = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    return b / (a + b)


def alpha_bar_from_sigma(sigma: float | Tensor) -> float | Tensor:
    """VP ᾱ of a flow σ, the inverse of `sigma_from_alpha_bar`: ᾱ = (1−σ)²/((1−σ)² + σ²)."""
    return (1 - sigma) ** 2 / ((1 - sigma) ** 2 + sigma**2)


def vp_scale(sigma: float | Tensor) -> float | Tensor:
    """c = √ᾱ + √(1−ᾱ) = 1/√((1−σ)² + σ²): the VP state is y = c·x for the flow state x at σ (c = 1 at σ ∈ {0, 1})."""
    if torch.is_tensor(sigma):
        return torch.rsqrt((1 - sigma) ** 2 + sigma**2)
    return 1 / math.sqrt((1 - sigma) ** 2 + sigma**2)


def gaussian_log_prob(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Per-sample log p = mean_d[−(x_d − μ_d)²/(2s²) − log s − ½·log 2π], shape (B,), float32.

    `std` broadcastable to x; samples whose std is 0 anywhere get NaN (log-density undefined). Gradients flow
    through `mean` (and `x` if it requires grad; callers pass a detached x′).
    """
    x, mean, std = x.float(), mean.float(), std.float()
    safe = torch.where(std > 0, std, torch.ones_like(std))
    lp = -((x - mean) ** 2) / (2 * safe**2) - torch.log(safe) - _HALF_LOG_2PI
    lp = lp.mean(dim=tuple(range(1, lp.ndim)))
    degenerate = (std <= 0).expand(x.shape).reshape(x.shape[0], -1).any(dim=1)
    return torch.where(degenerate, torch.full_like(lp, float("nan")), lp)


def _draw_or_score(
    mean: Tensor,
    step_std: Tensor,
    sample: Tensor,
    prev_sample: Tensor | None,
    generator: torch.Generator | None,
    noise: Tensor | None,
) -> Tensor:
    """x′ = μ + s·ε cast to `sample.dtype`, or the given `prev_sample` unchanged."""
    if prev_sample is not None:
        return prev_sample
    if noise is None:
        device = generator.device if generator is not None else mean.device
        noise = torch.randn(mean.shape, generator=generator, device=device, dtype=torch.float32).to(mean.device)
    return (mean + step_std * noise.float()).to(sample.dtype)


def sde_step(
    model_output: Tensor,
    sample: Tensor,
    sigma: float | Tensor,
    sigma_next: float | Tensor,
    *,
    kind: str = "flow_grpo",
    noise_level: float = 0.7,
    prev_sample: Tensor | None = None,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    cps_logprob: str = "gaussian",
) -> SDEStepOutput:
    """One flow-matching SDE step σ → σ′ (Δ = σ′ − σ < 0) with the log-prob of x′ (card §2 table).

    kind="flow_grpo": Euler–Maruyama step of the marginal-preserving reverse SDE
        dx = [v + (g²/(2σ))·(x + (1−σ)·v)]·dσ + g·dw, g = a·√(σ/(1−σ̃)), a = `noise_level`.
        σ = 1 edge case: σ̃ = σ′ when σ == 1, else σ̃ = σ (Flow-GRPO substitutes `sigmas[1]` at the first step).
    kind="dance": the same SDE family with constant diffusion g ≡ η = `noise_level` (DanceGRPO `sde_solver=True`;
        the drift −½η²·score = (η²/(2σ))·(x + (1−σ)·v)). DanceGRPO without `sde_solver` adds noise to the plain
        Euler mean, which is not marginal-preserving; that variant is deliberately not offered.
    kind="cps": coefficient-preserving sampling, s = σ′·sin(a·π/2), μ = (1−σ′)·x̂0 + √(σ′² − s²)·x̂1; a = 0 is Euler
        and the step onto σ′ = 0 is deterministic (s = 0). `std` is reported as g = s/√(−Δ) so that
        `step_std == std·√(−Δ)` holds for every kind (Flow-GRPO's CPS code returns s itself as its std).
        cps_logprob="gaussian": the Gaussian log-density above; "flow_grpo": Flow-GRPO's constant-free CPS score
        −mean_d (x′_d − μ_d)² (no 1/(2s²), no log s), which its 1e-5 clip range is calibrated to.
    kind="ddim": DDIM with η = `noise_level` ∈ [0, 1] (Song et al. 2021 Eq. 12) for an ε-prediction model run in
        flow coordinates (module doc; `shared.rollout.adapters.SD1Adapter`): the same form as `cps` with
        s = η·σ′·√(1 − q²), q = σ′(1−σ)/(σ(1−σ′)); ×c′ = `vp_scale(σ′)` it is `ddim_step`'s step in the VP
        variables, same noise ε, and its log-prob is `ddim_step`'s + log c′. `std` is g = s/√(−Δ), as for `cps`.
        It is defined for any flow model, but is DDIM only for a VP model's flow reparametrisation.

    Marginals (tested on the analytic Gaussian flow of card §2): `flow_grpo` and `dance` discretise SDEs that
    preserve the flow's marginals for any a, η > 0 and converge to them as the grid refines (Euler–Maruyama needs
    g²·(−Δ)/(2σ) < 1, i.e. a < √2 for `flow_grpo`, whose first steps near σ = 1 overshoot the variance for any
    grid). `cps` is NOT marginal-preserving for a > 0 [our reading, derived and measured]: it keeps the
    coefficients of the *predicted* endpoints, but x̂0 = E[x0 | x] has less variance than x0 and the fresh noise
    s = σ′·sin(aπ/2) does not shrink with the step, so data-part variance is lost on every step however fine the
    grid (≈ −30% of the final variance at a = 0.7 on the test flow; the mean is kept). It tends to the Euler ODE
    as a → 0 (within 5% at a = 0.1 on 100 steps).

    Args:
        model_output: velocity v (guided, if CFG is used), shaped like `sample`.
        sample: x at σ, shape (B, …) with at least one non-batch dim.
        sigma, sigma_next: σ and σ′ as floats, 0-d tensors or per-sample (B,) tensors, 0 ≤ σ′ < σ ≤ 1.
        noise_level: a (flow_grpo, cps) or η (dance; ddim, where η ≤ 1), ≥ 0. 0 gives the Euler step x + Δ·v and a
            NaN log-prob.
        prev_sample: score this stored x′ instead of drawing.
        generator / noise: randomness for the draw; `noise` is ε itself (deterministic tests).
    """
    if kind not in SDE_KINDS:
        raise ValueError(f"kind must be one of {SDE_KINDS}, got {kind!r}")
    if cps_logprob not in CPS_LOGPROBS:
        raise ValueError(f"cps_logprob must be one of {CPS_LOGPROBS}, got {cps_logprob!r}")
    if not (isinstance(noise_level, (int, float)) and math.isfinite(noise_level) and noise_level >= 0):
        raise ValueError(f"noise_level must be a finite number >= 0, got {noise_level!r}")
    if kind == "ddim" and noise_level > 1:
        raise ValueError(f"noise_level is DDIM's eta for kind='ddim' and must lie in [0, 1], got {noise_level!r}")
    _check_tensors(model_output, sample, prev_sample, noise)

    x, v = sample.float(), model_output.float()
    sig = _per_sample(sigma, "sigma", x)
    sig_next = _per_sample(sigma_next, "sigma_next", x)
    if not bool(((sig_next >= 0) & (sig_next < sig) & (sig <= 1)).all()):
        raise ValueError("sigma and sigma_next must satisfy 0 <= sigma_next < sigma <= 1 (sampling runs σ 1 → 0)")
    delta = sig_next - sig
    sqrt_neg_delta = torch.sqrt(-delta)

    if kind == "flow_grpo":
        sigma_tilde = torch.where(sig == 1, sig_next, sig)
        g = noise_level * torch.sqrt(sig / (1 - sigma_tilde))
        step_std = g * sqrt_neg_delta
        mean = x * (1 + g**2 * delta / (2 * sig)) + v * (1 + g**2 * (1 - sig) / (2 * sig)) * delta
    elif kind == "dance":
        g = torch.full_like(sig, float(noise_level))
        step_std = g * sqrt_neg_delta
        mean = x + delta * v + delta * (g**2 / (2 * sig)) * (x + (1 - sig) * v)
    else:  # cps and ddim: μ = (1−σ′)·x̂0 + √(σ′² − s²)·x̂1, x′ = μ + s·ε
        if kind == "cps":
            step_std = sig_next * math.sin(noise_level * math.pi / 2)
            direction = torch.sqrt(torch.clamp(sig_next**2 - step_std**2, min=0))
        else:  # ddim; q = r′/r with r = σ/(1−σ) lies in [0, 1) because σ′ < σ
            q = sig_next * (1 - sig) / (sig * (1 - sig_next))
            step_std = noise_level * sig_next * torch.sqrt(1 - q**2)
            direction = sig_next * torch.sqrt(1 - noise_level**2 * (1 - q**2))  # = √(σ′² − s²), no cancellation
        g = step_std / sqrt_neg_delta
        x0_hat = x - sig * v
        x1_hat = x + (1 - sig) * v
        mean = (1 - sig_next) * x0_hat + direction * x1_hat

    prev = _draw_or_score(mean, step_std, sample, prev_sample, generator, noise)
    x_prev = prev.detach().float()
    if kind == "cps" and cps_logprob == "flow_grpo":
        log_prob = -((x_prev - mean) ** 2).mean(dim=tuple(range(1, x.ndim)))
        degenerate = (step_std <= 0).expand(x.shape).reshape(x.shape[0], -1).any(dim=1)
        log_prob = torch.where(degenerate, torch.full_like(log_prob, float("nan")), log_prob)
    else:
        log_prob = gaussian_log_prob(x_prev, mean, step_std)
    return SDEStepOutput(prev_sample=prev, log_prob=log_prob, mean=mean, std=g, step_std=step_std)


def ddim_step(
    model_output: Tensor,
    sample: Tensor,
    alpha_prod_t: float | Tensor,
    alpha_prod_t_prev: float | Tensor,
    *,
    eta: float = 1.0,
    prev_sample: Tensor | None = None,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> SDEStepOutput:
    """DDIM step t → t_prev for an ε-prediction model with its log-prob (DDPO `ddim_with_logprob`).

    x̂0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t, s = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√(1 − ᾱ_t/ᾱ_prev),
    μ = √ᾱ_prev·x̂0 + √(1 − ᾱ_prev − s²)·ε̂, x′ = μ + s·ε. η = 1 gives s² = β̃_t (DDPM posterior variance),
    η = 0 deterministic DDIM (log-prob NaN). No x̂0 clipping or thresholding (SD 1.x configs use neither).
    There is no Δ here: `std` and `step_std` are both s. ᾱ values: floats, 0-d or (B,) tensors; see
    `ddim_alphas` to read them off a diffusers `DDIMScheduler`.
    """
    if not (isinstance(eta, (int, float)) and 0 <= eta <= 1):
        raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
    _check_tensors(model_output, sample, prev_sample, noise)
    x, eps = sample.float(), model_output.float()
    a_t = _per_sample(alpha_prod_t, "alpha_prod_t", x)
    a_prev = _per_sample(alpha_prod_t_prev, "alpha_prod_t_prev", x)
    if not bool(((a_t > 0) & (a_t < 1) & (a_prev > 0) & (a_prev <= 1)).all()):
        raise ValueError("alpha_prod_t must lie in (0, 1) and alpha_prod_t_prev in (0, 1]")

    x0_hat = (x - torch.sqrt(1 - a_t) * eps) / torch.sqrt(a_t)
    variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    step_std = eta * torch.sqrt(variance)
    direction = torch.sqrt(torch.clamp(1 - a_prev - step_std**2, min=0)) * eps
    mean = torch.sqrt(a_prev) * x0_hat + direction

    prev = _draw_or_score(mean, step_std, sample, prev_sample, generator, noise)
    log_prob = gaussian_log_prob(prev.detach().float(), mean, step_std)
    return SDEStepOutput(prev_sample=prev, log_prob=log_prob, mean=mean, std=step_std, step_std=step_std)


def ddim_alphas(scheduler, timestep: int | Tensor) -> tuple[Tensor, Tensor]:
    """(ᾱ_t, ᾱ_prev) for a diffusers `DDIMScheduler` after `set_timesteps`, as its `step` looks them up.

    t_prev = t − num_train_timesteps // num_inference_steps; ᾱ_prev = alphas_cumprod[t_prev], or the scheduler's
    `final_alpha_cumprod` when t_prev < 0 (SD 1.x: `set_alpha_to_one=False` → alphas_cumprod[0]).
    `timestep` may be an int or a 0-d / (B,) integer tensor. Refuses schedulers whose `step` does something
    `ddim_step` does not (non-ε prediction, x̂0 clipping, thresholding).
    """
    config = scheduler.config
    if scheduler.num_inference_steps is None:
        raise ValueError("scheduler.num_inference_steps is None: call scheduler.set_timesteps(N) first")
    if config.prediction_type != "epsilon":
        raise ValueError(
            f"scheduler.config.prediction_type must be 'epsilon' for ddim_step, got {config.prediction_type!r}"
        )
    if config.clip_sample or config.thresholding:
        raise ValueError(
            "scheduler.config.clip_sample / thresholding must be False: ddim_step does not clip x̂0 "
            "(build the scheduler with clip_sample=False, as SD 1.x configs do)"
        )
    alphas = scheduler.alphas_cumprod.to(torch.float32)
    t = torch.as_tensor(timestep, dtype=torch.long, device=alphas.device)
    t_prev = t - config.num_train_timesteps // scheduler.num_inference_steps
    a_t = alphas[t]
    final = torch.as_tensor(scheduler.final_alpha_cumprod, dtype=torch.float32, device=alphas.device)
    a_prev = torch.where(t_prev >= 0, alphas[t_prev.clamp(min=0)], final)
    return a_t, a_prev
