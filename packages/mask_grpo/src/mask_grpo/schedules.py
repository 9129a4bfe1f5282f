"""Mask schedules and choice temperatures of the MaskGIT / Show-o / aMUSEd unmasking samplers (mask_grpo.md §2, §9).

Iteration t = 0..T−1, ratio r = (t+1)/T. The mask schedule γ(r) ∈ [0, 1] is the fraction of the N image tokens still
masked after iteration t:

    n_mask(t) = max(1, min(#masked_t − 1, ⌊N·γ(r)⌋)),   and the last iteration commits every remaining position.

Schedules [authors' code: Show-o `models/sampling.py`, MaskGIT `libml/mask_schedule.py`]:
    cosine   γ = cos(π/2·r)                  (default everywhere)
    linear   γ = 1 − r
    pow      γ = 1 − r^p                     (p = `exponent`; MaskGIT's "square" is p = 2, "cubic" p = 3)
    sigmoid  γ = (σ(e/τ) − σ((s + r·(e − s))/τ)) / (σ(e/τ) − σ(s/τ)),  s = −3, e = 3, τ = 1 (Show-o's defaults)

γ is evaluated in float32 torch arithmetic exactly as diffusers' `AmusedScheduler.step` does, so that ⌊N·γ⌋ cannot
differ from the reference by one through rounding.

Choice temperature τ_t scales the Gumbel noise in the re-masking rank log c_i + τ_t·g_i (three forms, card §2):
    maskgit  τ_t = τ_0·(1 − r)                                (MaskGIT `parallel_decode`)
    showo    τ_t = τ_0·Π_{s ≤ t}(1 − (s+1)/T)                 (Show-o reassigns τ ← τ·(1 − r) in its loop: compounds)
    amused   τ_t = linspace(τ_start, τ_end, T)[t]             (diffusers `AmusedScheduler.set_timesteps`, default (2, 0))
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SCHEDULES = ("cosine", "linear", "pow", "sigmoid")
TEMPERATURE_FORMS = ("maskgit", "showo", "amused")


def mask_ratio(t: int, steps: int, schedule: str = "cosine", *, exponent: float = 2.0,
               sigmoid_range: tuple[float, float] = (-3.0, 3.0), sigmoid_tau: float = 1.0) -> torch.Tensor:
    """γ((t+1)/T) as a float32 scalar tensor (module doc)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if not 0 <= t < steps:
        raise ValueError(f"iteration t={t} outside 0..{steps - 1}")
    r = torch.tensor(t + 1, dtype=torch.int64) / steps  # int / int → float32, as (step_idx + 1) / len in diffusers
    if schedule == "cosine":
        return torch.cos(r * math.pi / 2)
    if schedule == "linear":
        return 1 - r
    if schedule == "pow":
        return 1 - r**exponent
    s, e = sigmoid_range
    v_start = torch.sigmoid(torch.tensor(s / sigmoid_tau))
    v_end = torch.sigmoid(torch.tensor(e / sigmoid_tau))
    return (v_end - torch.sigmoid((s + r * (e - s)) / sigmoid_tau)) / (v_end - v_start)


def num_masked_after(t: int, steps: int, num_tokens: int, masked_now: Tensor, schedule: str = "cosine",
                     **schedule_kwargs) -> Tensor:
    """n_mask(t) per sample (`masked_now`: (B,) counts of masked positions before iteration t): how many positions
    stay masked after iteration t, max(1, min(#masked − 1, ⌊N·γ⌋)); 0 at the last iteration."""
    masked_now = torch.as_tensor(masked_now, dtype=torch.long)
    if t == steps - 1:
        return torch.zeros_like(masked_now)
    cap = torch.floor(num_tokens * mask_ratio(t, steps, schedule, **schedule_kwargs)).long().to(masked_now.device)
    return torch.clamp(torch.minimum(masked_now - 1, cap), min=1)


def choice_temperatures(steps: int, form: str = "showo", tau0: float = 1.0,
                        amused_range: tuple[float, float] | float = (2.0, 0.0)) -> torch.Tensor:
    """τ_0..τ_{T−1} (float32) for a temperature `form` (module doc). `amused_range` is diffusers' `temperature`
    argument: a (start, end) pair, or one number τ meaning linspace(τ, 0.01, T) as diffusers does."""
    if form not in TEMPERATURE_FORMS:
        raise ValueError(f"temperature form must be one of {TEMPERATURE_FORMS}, got {form!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if form == "amused":
        if isinstance(amused_range, (tuple, list)):
            return torch.linspace(float(amused_range[0]), float(amused_range[1]), steps)
        return torch.linspace(float(amused_range), 0.01, steps)
    ratios = torch.arange(1, steps + 1, dtype=torch.float64) / steps
    if form == "maskgit":
        taus = tau0 * (1 - ratios)
    else:
        taus = tau0 * torch.cumprod(1 - ratios, dim=0)
    return taus.to(torch.float32)
