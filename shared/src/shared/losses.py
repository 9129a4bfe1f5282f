"""Clipped surrogate, aggregation, ratio level and KL estimators (spec card §6).

A "unit" u is whatever carries one log-prob: a diffusion step, a chunk, a token or a sequence. Shapes: (B,) for
one unit per sample or (B, T) with a mask m (1 = active) for T units; L_i = Σ_t m_{i,t}.

Ratio r = exp(log p_θ − log p_old), log p_old recorded at sampling time (never differentiated).
Clipped loss per unit ℓ = max(−A·r, −A·clip(r, 1 − ε_low, 1 + ε_high)); dual clip (A < 0 only, verl
`clip_ratio_c`, EasyR1): ℓ = min(ℓ, −c·A). ε: 1e-4 DDPO / Flow-GRPO / DanceGRPO, 1e-5 Flow-GRPO Fast/CPS,
5e-5 GCPO, 0.2 / 0.28 DAPO, 3e-4 / 4e-4 GSPO.

Because the core's log-prob is a per-element mean, an SDE-step ratio is the geometric mean of D per-element
ratios and stays extremely close to 1: hence clip ranges of 1e-4…1e-5.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "AGGREGATIONS",
    "KL_CONVENTIONS",
    "KL_KINDS",
    "RATIO_LEVELS",
    "VERL_KL_CLAMP",
    "LossOutput",
    "aggregate",
    "clipped_surrogate",
    "gaussian_mean_kl",
    "kl_estimator",
]

AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")
RATIO_LEVELS = ("token", "sequence")
KL_KINDS = ("k1", "k2", "k3")
KL_CONVENTIONS = ("flow_grpo", "exact")
VERL_KL_CLAMP = (20.0, 10.0)
"""verl / EasyR1 `low_var_kl`: λ clamped to [−20, 20], the estimate to [−10, 10]."""


@dataclass
class LossOutput:
    """loss: scalar tensor to backpropagate; metrics: detached python floats for logging."""

    loss: Tensor
    metrics: dict[str, float]


def _as_2d(x: Tensor, name: str) -> Tensor:
    if x.ndim == 1:
        return x[:, None]
    if x.ndim == 2:
        return x
    raise ValueError(f"{name} must have shape (B,) or (B, T), got {tuple(x.shape)}")


def _mask_like(mask: Tensor | None, values: Tensor) -> Tensor:
    if mask is None:
        return torch.ones_like(values)
    mask = _as_2d(mask, "mask")
    if mask.shape != values.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != values shape {tuple(values.shape)}")
    return mask.to(values.dtype)


def aggregate(values: Tensor, mask: Tensor | None, mode: str, *, max_length: int | None = None) -> Tensor:
    """Reduce per-unit values ℓ_{i,t} (shape (B,) or (B, T)) with mask m to a scalar.

    token_mean:              Σ_i Σ_t m·ℓ / Σ_i L_i                (DAPO; TRL `dapo`, verl `token-mean`)
    seq_mean_token_mean:     (1/G)·Σ_i (1/L_i)·Σ_t m·ℓ            (GRPO; TRL `grpo`, verl, EasyR1 `seq`)
    seq_mean_token_sum_norm: Σ_i Σ_t m·ℓ / (G·L_max)              (Dr. GRPO; L_max = configured `max_length`)
    A sequence with L_i = 0 contributes 0 (its count is clamped to 1); an all-empty mask gives 0.
    For diffusion every trajectory has the same number of trained units, so the anchors' per-step mean
    accumulated over steps equals `seq_mean_token_mean` [our reading].
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"mode must be one of {AGGREGATIONS}, got {mode!r}")
    values = _as_2d(values, "values")
    m = _mask_like(mask, values)
    summed = (torch.where(m > 0, values, torch.zeros_like(values)) * m).sum(dim=1)  # padding may hold inf/NaN
    lengths = m.sum(dim=1)
    if mode == "token_mean":
        return summed.sum() / lengths.sum().clamp(min=1)
    if mode == "seq_mean_token_mean":
        return (summed / lengths.clamp(min=1)).mean()
    if max_length is None:
        raise ValueError("mode='seq_mean_token_sum_norm' needs max_length (the configured max completion length)")
    if not (isinstance(max_length, int) and max_length >= values.shape[1]):
        raise ValueError(f"max_length must be an int >= the number of units T={values.shape[1]}, got {max_length!r}")
    return summed.sum() / (values.shape[0] * max_length)


def _masked_mean(x: Tensor, m: Tensor) -> float:
    return ((x * m).sum() / m.sum().clamp(min=1)).item()


def clipped_surrogate(
    log_prob: Tensor,
    old_log_prob: Tensor,
    advantages: Tensor,
    *,
    clip_low: float = 1e-4,
    clip_high: float | None = None,
    mask: Tensor | None = None,
    aggregation: str = "seq_mean_token_mean",
    ratio_level: str = "token",
    max_length: int | None = None,
    dual_clip: float | None = None,
) -> LossOutput:
    """PPO/GRPO clipped surrogate ℓ = max(−A·r, −A·clip(r, 1 − ε_low, 1 + ε_high)), aggregated by `aggregation`.

    log_prob / old_log_prob: (B,) or (B, T); advantages: (B,) (broadcast over units) or (B, T).
    ratio_level="token": r_{i,t} = exp(δ_{i,t}), δ = log p_θ − log p_old. "sequence" (GSPO; GCPO's chunk ratio
    is the same construction over a chunk): s_i = exp(Σ_t m·δ_{i,t} / L_i), the geometric mean of the unit
    ratios, broadcast over the sequence. dual_clip=c (> 1): for A < 0, ℓ = min(ℓ, −c·A).
    clip_high defaults to clip_low (symmetric). Metrics (masked, over units): clipfrac_low = frac(r < 1 − ε_low),
    clipfrac_high = frac(r > 1 + ε_high) (Flow-GRPO `clipfrac_lt_one` / `clipfrac_gt_one`), approx_kl =
    ½·mean(δ²), ratio_mean / ratio_min / ratio_max, and dual_clipfrac with dual clipping.
    """
    if ratio_level not in RATIO_LEVELS:
        raise ValueError(f"ratio_level must be one of {RATIO_LEVELS}, got {ratio_level!r}")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    clip_high = clip_low if clip_high is None else clip_high
    if not 0 <= clip_low < 1:
        raise ValueError(f"clip_low must be in [0, 1), got {clip_low!r}")
    if not clip_high >= 0:
        raise ValueError(f"clip_high must be >= 0, got {clip_high!r}")
    if dual_clip is not None and not dual_clip > 1:
        raise ValueError(f"dual_clip must be > 1 (verl clip_ratio_c, e.g. 3.0) or None, got {dual_clip!r}")

    lp = _as_2d(log_prob, "log_prob")
    old = _as_2d(old_log_prob, "old_log_prob").detach()
    if old.shape != lp.shape:
        raise ValueError(f"old_log_prob shape {tuple(old.shape)} != log_prob shape {tuple(lp.shape)}")
    adv = _as_2d(advantages, "advantages").detach().to(lp.dtype)
    if adv.shape[0] != lp.shape[0] or adv.shape[1] not in (1, lp.shape[1]):
        raise ValueError(f"advantages shape {tuple(advantages.shape)} does not broadcast to {tuple(lp.shape)}")
    adv = adv.expand_as(lp)
    m = _mask_like(mask, lp)

    # zero δ on padding so that inf/NaN there cannot reach the loss or its gradient
    delta = torch.where(m > 0, lp - old, torch.zeros_like(lp))
    if ratio_level == "token":
        ratio = torch.exp(delta)
    else:
        seq_delta = (delta * m).sum(dim=1, keepdim=True) / m.sum(dim=1, keepdim=True).clamp(min=1)
        ratio = torch.exp(seq_delta).expand_as(lp)

    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    per_unit = torch.maximum(unclipped, clipped)
    metrics: dict[str, float] = {}
    if dual_clip is not None:
        dual = torch.minimum(per_unit, -dual_clip * adv)
        dual_active = (adv < 0) & (dual < per_unit)
        per_unit = torch.where(adv < 0, dual, per_unit)
        metrics["dual_clipfrac"] = _masked_mean(dual_active.to(lp.dtype), m)
    loss = aggregate(per_unit, m, aggregation, max_length=max_length)

    with torch.no_grad():
        r = ratio.detach()
        metrics["clipfrac_low"] = _masked_mean((r < 1 - clip_low).to(lp.dtype), m)
        metrics["clipfrac_high"] = _masked_mean((r > 1 + clip_high).to(lp.dtype), m)
        metrics["approx_kl"] = 0.5 * _masked_mean(delta.detach() ** 2, m)
        metrics["ratio_mean"] = _masked_mean(r, m)
        active = m > 0
        metrics["ratio_min"] = r[active].min().item() if active.any() else float("nan")
        metrics["ratio_max"] = r[active].max().item() if active.any() else float("nan")
    return LossOutput(loss=loss, metrics=metrics)


def kl_estimator(
    log_prob: Tensor,
    ref_log_prob: Tensor,
    kind: str = "k1",
    clamp: tuple[float, float] | None = None,
) -> Tensor:
    """Per-unit sample estimate of KL(π_θ ‖ π_ref) on units drawn from π_θ, λ = log π_ref − log π_θ.

    k1 = −λ (unbiased, can be negative); k2 = ½·λ² (biased, low variance); k3 = e^λ − λ − 1 (unbiased, ≥ 0;
    Schulman's estimator, verl/EasyR1 `low_var_kl`). `clamp=(c_λ, c_k)` clamps λ to [−c_λ, c_λ] and the estimate
    to [−c_k, c_k]; `VERL_KL_CLAMP` = (20, 10) is verl's (which applies it to k3). TRL's optional extra factor
    r = π_θ/π_old on k3 (`use_bias_correction_kl`) is not applied here.
    """
    if kind not in KL_KINDS:
        raise ValueError(f"kind must be one of {KL_KINDS}, got {kind!r}")
    if log_prob.shape != ref_log_prob.shape:
        raise ValueError(f"ref_log_prob shape {tuple(ref_log_prob.shape)} != log_prob shape {tuple(log_prob.shape)}")
    lam = ref_log_prob - log_prob
    if clamp is not None:
        c_lam, c_k = clamp
        if not (c_lam > 0 and c_k > 0):
            raise ValueError(f"clamp must be two positive bounds (lambda_bound, estimate_bound), got {clamp!r}")
        lam = lam.clamp(-c_lam, c_lam)
    if kind == "k1":
        est = -lam
    elif kind == "k2":
        est = 0.5 * lam**2
    else:
        est = torch.exp(lam) - lam - 1
    if clamp is not None:
        est = est.clamp(-clamp[1], clamp[1])
    return est


def gaussian_mean_kl(
    mean: Tensor,
    ref_mean: Tensor,
    std: Tensor | float,
    *,
    step_delta: Tensor | float | None = None,
    convention: str = "flow_grpo",
) -> Tensor:
    """Flow-GRPO's KL between the θ and reference step Gaussians, which share their variance; shape (B,).

    "flow_grpo": mean_d (μ_θ − μ_ref)² / (2·g²), g = the step's `std` (SDEStepOutput.std, without √(−Δ)).
    "exact":     mean_d (μ_θ − μ_ref)² / (2·g²·(−Δ)) = KL(N(μ_θ, s²) ‖ N(μ_ref, s²)) per element with s = g·√(−Δ),
                 averaged over elements like the log-prob; needs `step_delta` Δ = σ′ − σ < 0.
    The Flow-GRPO author dropped (−Δ) on purpose so late steps weigh more and rescaled β 0.004 → 0.04
    (flow_grpo issue #22). For `ddim` steps (no Δ) pass std = s with "flow_grpo" to get the exact KL.
    `std` and `step_delta`: floats, 0-d, (B,) or broadcastable tensors. Gradients flow through both means.
    """
    if convention not in KL_CONVENTIONS:
        raise ValueError(f"convention must be one of {KL_CONVENTIONS}, got {convention!r}")
    if mean.shape != ref_mean.shape or mean.ndim < 2:
        raise ValueError(
            f"mean and ref_mean must share a shape (B, ...), got {tuple(mean.shape)}, {tuple(ref_mean.shape)}"
        )
    diff = mean.float() - ref_mean.float()
    var = _broadcast(std, diff, "std") ** 2
    if convention == "exact":
        if step_delta is None:
            raise ValueError("convention='exact' needs step_delta (Δ = σ′ − σ < 0)")
        delta = _broadcast(step_delta, diff, "step_delta")
        if not bool((delta < 0).all()):
            raise ValueError("step_delta must be < 0 (Δ = σ′ − σ, sampling runs σ 1 → 0)")
        var = var * (-delta)
    kl = diff**2 / (2 * var)
    return kl.mean(dim=tuple(range(1, kl.ndim)))


def _broadcast(value: Tensor | float, like: Tensor, name: str) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float32, device=like.device)
    if t.ndim == 1 and t.shape[0] == like.shape[0] and like.ndim > 1:
        t = t.view(-1, *([1] * (like.ndim - 1)))
    try:
        torch.broadcast_shapes(t.shape, like.shape)
    except RuntimeError as err:
        raise ValueError(f"{name} of shape {tuple(t.shape)} does not broadcast to {tuple(like.shape)}") from err
    return t
