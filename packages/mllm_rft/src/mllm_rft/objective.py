"""The GRPO family as configuration: GRPO, DAPO, Dr. GRPO, GSPO (+ GSPO-token), CISPO, SAPO (spec card §2).

Notation (card §2): prompt q, G completions o_i from π_old, reward r_i, token log-ratio δ_{i,t} = log π_θ − log π_old,
ρ_{i,t} = e^{δ_{i,t}}, mask m_{i,t} (1 = completion token that is trained), lengths L_i = Σ_t m_{i,t}, advantage Â.
Losses are to be *minimised*. With one optimiser update per rollout (μ = 1) logp == old_logp, ρ ≡ 1 and every PPO
variant is REINFORCE with a group baseline; clipping only acts off-policy.

The math lives in the core and is reused, not re-derived:
  advantages          shared.advantages.group_advantages (unbiased n − 1 std like TRL, verl, EasyR1)
  clipped surrogate   shared.losses.clipped_surrogate (PPO clip, asymmetric clip, dual clip)
  aggregation         shared.losses.aggregate ("constant" here is the core's "seq_mean_token_sum_norm")
  KL estimators       shared.losses.kl_estimator (k1, k2, k3)
This module adds the ratio levels (token / sequence / sequence-token), the log-ratio clamp, the CISPO and SAPO
per-token losses, TRL's optional k3·ρ correction, the KL term, TRL-style metrics and the presets.

Reference implementation matched by the tests: TRL 1.16 `trl/trainer/grpo_trainer.py`, `GRPOTrainer._compute_loss`
(loss) and `GRPOTrainer._generate_and_score_completions` (advantages, `multi_objective_aggregation=
"sum_then_normalize"`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from shared.advantages import STD_MODES, group_advantages
from shared.losses import KL_KINDS, aggregate, clipped_surrogate, kl_estimator

__all__ = [
    "AGGREGATIONS",
    "LOSSES",
    "PRESETS",
    "RATIOS",
    "ObjectiveConfig",
    "compute_advantages",
    "policy_loss",
    "preset",
]

AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "constant")
RATIOS = ("token", "sequence", "sequence_token")
LOSSES = ("ppo", "cispo", "sapo")

_CORE_AGGREGATION = {
    "token_mean": "token_mean",
    "seq_mean_token_mean": "seq_mean_token_mean",
    "constant": "seq_mean_token_sum_norm",
}


@dataclass(frozen=True)
class ObjectiveConfig:
    """One member of the GRPO family. Defaults follow TRL 1.16's `GRPOConfig` (group std, eps 1e-4, token ratio,
    ε 0.2, β 0, k3) except `aggregation` (TRL's default `loss_type` is `dapo`) and `kl_bias_correction` (TRL: on).

    Advantages (`compute_advantages`):
      std_scaling  "group" (GRPO) | "batch" (mean per group, std over the batch; TRL `scale_rewards="batch"`) |
                   "none" (Dr. GRPO). adv_eps: added to the std (TRL 1e-4; verl, EasyR1 1e-6).
    Loss (`policy_loss`):
      aggregation  "token_mean" (DAPO: Σ m·ℓ / Σ L over the batch) | "seq_mean_token_mean" (GRPO) |
                   "constant" (Dr. GRPO: Σ m·ℓ / (N·max_length)); max_length = the configured max completion
                   length (TRL `max_completion_length`), needed only by "constant" (checked when the loss runs).
      ratio        "token" ρ_{i,t} | "sequence" (GSPO) s_i = exp(Σ_t m·δ / L_i) | "sequence_token" (GSPO-token)
                   sg[s_i]·π_θ/sg[π_θ]: the value of s_i, the per-token gradient of token advantages.
      clip_low, clip_high  ε_l, ε_h: ρ is clipped to [1 − ε_l, 1 + ε_h] (DAPO clip-higher: ε_h > ε_l).
      dual_clip    c (> 1) or None: for Â < 0 the per-token loss is capped at −c·Â (verl `clip_ratio_c`, EasyR1);
                   ppo only. Equals TRL's `delta` (INTELLECT-2 two-sided clipping) when c ≥ 1 + ε_h [our reading,
                   tested against TRL].
      log_ratio_clamp  c or None: δ is clamped to [−c, c] before any ratio is formed (verl and EasyR1 use 20);
                   clamped tokens carry no ratio gradient.
      beta, kl     KL penalty β·k per token, k ∈ {"k1", "k2", "k3"} (TRL always k3). beta == 0 ⇒ no reference
                   log-probs: `policy_loss` raises if ref_logp is passed (a silently ignored reference model would
                   hide a wasted forward pass), and no KL metric is logged.
      kl_bias_correction  multiply the per-token KL by the ratio (with gradient), TRL `use_bias_correction_kl`
                   (True by default in TRL 1.16; False here, as in the GRPO paper and TRL ≤ 0.18).
      loss         "ppo" (clipped surrogate) | "cispo" (MiniMax-M1; weight min(ρ, cispo_max)) |
                   "sapo" (Qwen; soft gate with temperatures sapo_tau_pos for Â > 0, sapo_tau_neg otherwise).
    """

    std_scaling: str = "group"
    adv_eps: float = 1e-4
    aggregation: str = "seq_mean_token_mean"
    max_length: int | None = None
    ratio: str = "token"
    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float | None = None
    log_ratio_clamp: float | None = None
    beta: float = 0.0
    kl: str = "k3"
    kl_bias_correction: bool = False
    loss: str = "ppo"
    cispo_max: float = 5.0
    sapo_tau_pos: float = 1.0
    sapo_tau_neg: float = 1.05

    def __post_init__(self) -> None:
        _choice("std_scaling", self.std_scaling, STD_MODES)
        _choice("aggregation", self.aggregation, AGGREGATIONS)
        _choice("ratio", self.ratio, RATIOS)
        _choice("kl", self.kl, KL_KINDS)
        _choice("loss", self.loss, LOSSES)
        if not self.adv_eps >= 0:
            raise ValueError(f"adv_eps must be >= 0 (TRL 1e-4), got {self.adv_eps!r}")
        if self.max_length is not None and not (isinstance(self.max_length, int) and self.max_length > 0):
            raise ValueError(f"max_length must be a positive int (the max completion length) or None, got "
                             f"{self.max_length!r}")
        if not 0 <= self.clip_low < 1:
            raise ValueError(f"clip_low must be in [0, 1) (GRPO 0.2, GSPO 3e-4), got {self.clip_low!r}")
        if not self.clip_high >= 0:
            raise ValueError(f"clip_high must be >= 0 (DAPO 0.28, GSPO 4e-4), got {self.clip_high!r}")
        if self.dual_clip is not None:
            if self.loss != "ppo":
                raise ValueError(f"dual_clip applies to loss='ppo' only, got loss={self.loss!r}; set dual_clip=None")
            if not self.dual_clip > 1:
                raise ValueError(f"dual_clip must be > 1 (verl/EasyR1 3.0) or None, got {self.dual_clip!r}")
        if self.log_ratio_clamp is not None and not self.log_ratio_clamp > 0:
            raise ValueError(f"log_ratio_clamp must be > 0 (verl 20.0) or None, got {self.log_ratio_clamp!r}")
        if not self.beta >= 0:
            raise ValueError(f"beta must be >= 0 (0 disables the KL term and the reference model), got {self.beta!r}")
        if not self.cispo_max > 0:
            raise ValueError(f"cispo_max must be > 0 (TRL recommends epsilon_high=5.0), got {self.cispo_max!r}")
        if not (self.sapo_tau_pos > 0 and self.sapo_tau_neg > 0):
            raise ValueError(f"sapo_tau_pos and sapo_tau_neg must be > 0 (SAPO 1.0, 1.05), got "
                             f"{self.sapo_tau_pos!r}, {self.sapo_tau_neg!r}")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


PRESETS: dict[str, ObjectiveConfig] = {
    # DeepSeekMath GRPO: group std, token ratio, ε 0.2, β 0.04 with k3, per-sequence token mean.
    "grpo": ObjectiveConfig(std_scaling="group", aggregation="seq_mean_token_mean", ratio="token",
                            clip_low=0.2, clip_high=0.2, beta=0.04, kl="k3"),
    # DAPO: clip-higher 0.2 / 0.28, token-level loss over the batch, no KL (dynamic sampling and overlong
    # shaping live in the sampler and the rewards, not here).
    "dapo": ObjectiveConfig(std_scaling="group", aggregation="token_mean", ratio="token",
                            clip_low=0.2, clip_high=0.28, beta=0.0),
    # Dr. GRPO: no std, constant denominator N·max_length, β 0; max_length must be set to the max completion
    # length, e.g. preset("dr_grpo", max_length=512).
    "dr_grpo": ObjectiveConfig(std_scaling="none", aggregation="constant", ratio="token",
                               clip_low=0.2, clip_high=0.2, beta=0.0),
    # GSPO: sequence ratio, ε 3e-4 / 4e-4, β 0, per-sequence mean.
    "gspo": ObjectiveConfig(std_scaling="group", aggregation="seq_mean_token_mean", ratio="sequence",
                            clip_low=3e-4, clip_high=4e-4, beta=0.0),
}


def preset(name: str, **overrides) -> ObjectiveConfig:
    """A named preset (`PRESETS`) with fields replaced, e.g. preset("dr_grpo", max_length=512)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


def compute_advantages(rewards: Tensor, group_ids: Tensor, cfg: ObjectiveConfig) -> Tensor:
    """Â_i = (r_i − mean_{g(i)} r) / (std + adv_eps), std per `cfg.std_scaling`; (N,) like the rewards.

    "group": std of the group (n − 1); "batch": std of all N rewards (n − 1), mean still per group (TRL
    `scale_rewards="batch"`, Lite-PPO); "none": Â_i = r_i − mean_{g(i)} r (Dr. GRPO), no eps.
    Source: TRL 1.16 `GRPOTrainer._generate_and_score_completions` (`sum_then_normalize`: ``advantages = rewards -
    mean_grouped_rewards``; ``advantages / (std_rewards + 1e-4)`` with TRL's `nanstd`, Bessel-corrected).
    Differences from TRL: a group with all-equal rewards gets exactly 0 (TRL: (r − mean)/1e-4, which is 0 up to
    float rounding of the mean), statistics run in float64, and `group_ids` need not be contiguous blocks of G.
    """
    return group_advantages(rewards, group_ids, std=cfg.std_scaling, eps=cfg.adv_eps, unbiased=True).advantages


def _log_ratio(logp: Tensor, old_logp: Tensor, m: Tensor, cfg: ObjectiveConfig) -> tuple[Tensor, bool]:
    """log of the importance ratio, (N, T) with gradient; returns (log_ratio, per_sequence).

    δ = m·(log π_θ − log π_old), clamped to [−c, c] with `log_ratio_clamp` (verl `negative_approx_kl` clamp).
    token:          log ρ_{i,t} = δ_{i,t}
    sequence:       log s_i = Σ_t m·δ_{i,t} / L_i, broadcast over t          (GSPO eq. 7; TRL
                    `importance_sampling_level="sequence"`: ``(log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1)``)
    sequence_token: sg[log s_i] + δ_{i,t} − sg[δ_{i,t}]                    (GSPO-token eq. 13: s_{i,t} =
                    sg[s_i]·π_θ(o_{i,t})/sg[π_θ(o_{i,t})]; same value as s_i, gradient s_i·∇log π_θ(o_{i,t}))
    per_sequence is True when the ratio value is constant over a sequence (metrics are then per sequence).
    """
    delta = torch.where(m > 0, logp - old_logp.detach(), torch.zeros_like(logp))
    if cfg.log_ratio_clamp is not None:
        delta = delta.clamp(-cfg.log_ratio_clamp, cfg.log_ratio_clamp)
    if cfg.ratio == "token":
        return delta, False
    seq = (delta * m).sum(dim=1, keepdim=True) / m.sum(dim=1, keepdim=True).clamp(min=1)
    if cfg.ratio == "sequence":
        return seq.expand_as(delta), True
    return seq.detach() + delta - delta.detach(), True


def _frac(flags: Tensor, m: Tensor, per_sequence: bool) -> float:
    """Fraction of active units with `flags`: tokens, or sequences (L_i > 0) when the unit is a whole sequence."""
    if per_sequence:
        rows = m.sum(dim=1) > 0
        return flags[:, 0][rows].double().mean().item() if rows.any() else 0.0
    return ((flags.double() * m).sum() / m.sum().clamp(min=1)).item()


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    cfg: ObjectiveConfig,
    ref_logp: Tensor | None = None,
    *,
    num_active_tokens: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Loss of the configured GRPO-family member and its metrics.

    logp, old_logp, mask, ref_logp: (N, T) per-token log-probs of the sampled completion tokens (old/ref are not
    differentiated; padding may hold any finite or non-finite value); advantages: (N,) (or (N, T) token
    advantages, e.g. for GSPO-token). Per-token loss ℓ_{i,t}, with ρ the ratio of `cfg.ratio` (see `_log_ratio`):
      ppo:   ℓ = −min(ρ·Â, clip(ρ, 1 − ε_l, 1 + ε_h)·Â); dual clip for Â < 0: ℓ = min(ℓ, −c·Â)
             (PPO; DAPO clip-higher; verl `compute_policy_loss` dual clip) — shared.losses.clipped_surrogate
      cispo: ℓ = −sg[min(ρ, ε_max)]·Â·log π_θ   (MiniMax-M1; TRL `loss_type="cispo"`, ε_max = `epsilon_high`)
      sapo:  ℓ = −f(ρ)·Â, f(ρ) = σ(τ·(ρ − 1))·4/τ, τ = τ_pos if Â > 0 else τ_neg   (SAPO; TRL `loss_type="sapo"`)
    plus β·k_{i,t} (`shared.losses.kl_estimator`, λ = log π_ref − log π_θ; k3 = e^λ − λ − 1), times ρ with
    `kl_bias_correction`. Then loss = aggregate(ℓ + β·k) by `cfg.aggregation` (shared.losses.aggregate).
    Matches TRL 1.16 `GRPOTrainer._compute_loss` for `loss_type` grpo (= seq_mean_token_mean), dapo (= token_mean),
    dr_grpo (= constant), cispo, sapo, with `importance_sampling_level` token / sequence (tests).

    num_active_tokens: for "token_mean" when the batch is split into micro-batches, the number of active tokens of
    the whole batch: loss = Σ m·ℓ / num_active_tokens, so micro-batch losses sum to the batch loss (TRL
    `num_items_in_batch`). Rejected with the other aggregations (means over sequences: weight micro-batch losses
    by their number of sequences).

    Metrics (python floats; the unit is a token, or a sequence when ratio and advantage are both per sequence):
      clip_frac_low   ppo: ρ < 1 − ε_l with Â < 0 (clipped: no gradient); 0 for cispo and sapo
      clip_frac_high  ppo: ρ > 1 + ε_h with Â > 0; cispo: ρ > ε_max with Â > 0; 0 for sapo
                      (TRL `clip_ratio/low_mean`, `clip_ratio/high_mean`, `cispo_clip_ratio`)
      dual_clip_frac  (only with dual_clip) ρ > c with Â < 0
      ratio_mean, ratio_min, ratio_max   over active units
      kl_mean         (only when beta > 0) masked token mean of the KL term as added (TRL `kl`)
    """
    if logp.ndim != 2:
        raise ValueError(f"logp must have shape (N, T), got {tuple(logp.shape)}")
    for name, t in (("old_logp", old_logp), ("mask", mask)):
        if t.shape != logp.shape:
            raise ValueError(f"{name} shape {tuple(t.shape)} != logp shape {tuple(logp.shape)}")
    if cfg.beta == 0 and ref_logp is not None:
        raise ValueError("ref_logp was passed but cfg.beta == 0: no reference model is needed; drop ref_logp "
                         "(or set beta > 0 to use it)")
    if cfg.beta > 0:
        if ref_logp is None:
            raise ValueError(f"cfg.beta = {cfg.beta} needs ref_logp (reference-model log-probs), got None")
        if ref_logp.shape != logp.shape:
            raise ValueError(f"ref_logp shape {tuple(ref_logp.shape)} != logp shape {tuple(logp.shape)}")
    if advantages.ndim == 1:
        advantages = advantages[:, None]
    if advantages.ndim != 2 or advantages.shape[0] != logp.shape[0] or advantages.shape[1] not in (1, logp.shape[1]):
        raise ValueError(f"advantages must have shape (N,) or (N, T) with N, T = {tuple(logp.shape)}, "
                         f"got {tuple(advantages.shape)}")
    if cfg.aggregation == "constant" and cfg.max_length is None:
        raise ValueError("aggregation='constant' (Dr. GRPO) needs cfg.max_length = the max completion length, "
                         "e.g. preset('dr_grpo', max_length=512)")
    if num_active_tokens is not None:
        if cfg.aggregation != "token_mean":
            raise ValueError(f"num_active_tokens applies to aggregation='token_mean' only, got "
                             f"{cfg.aggregation!r}; weight micro-batch losses by their number of sequences instead")
        if not num_active_tokens > 0:
            raise ValueError(f"num_active_tokens must be > 0 or None, got {num_active_tokens!r}")

    m = mask.to(logp.dtype)
    adv = advantages.detach().to(logp.dtype)
    old = old_logp.detach()
    log_ratio, per_seq = _log_ratio(logp, old, m, cfg)
    ratio = torch.exp(log_ratio)
    agg = _CORE_AGGREGATION[cfg.aggregation]
    max_length = cfg.max_length if cfg.aggregation == "constant" else None

    if cfg.loss == "ppo":
        # the core's token ratio exp(log_prob − old_log_prob) with log_prob = log_ratio, old_log_prob = 0 is our
        # ratio, in value and gradient, for all three ratio levels
        out = clipped_surrogate(log_ratio, torch.zeros_like(log_ratio), adv, clip_low=cfg.clip_low,
                                clip_high=cfg.clip_high,
                                mask=m, aggregation=agg, ratio_level="token", max_length=max_length,
                                dual_clip=cfg.dual_clip)
        loss = out.loss
    else:
        if cfg.loss == "cispo":
            weight = torch.clamp(ratio, max=cfg.cispo_max).detach()
            per_token = -weight * adv * torch.where(m > 0, logp, torch.zeros_like(logp))
        else:
            tau = torch.where(adv > 0, cfg.sapo_tau_pos, cfg.sapo_tau_neg).to(logp.dtype)
            per_token = -torch.sigmoid(tau * (ratio - 1)) * 4 / tau * adv
        loss = aggregate(per_token.expand_as(logp), m, agg, max_length=max_length)

    metrics: dict[str, float] = {}
    if cfg.beta > 0:
        lp_m = torch.where(m > 0, logp, torch.zeros_like(logp))  # no inf/NaN of the padding into the gradient
        ref_m = torch.where(m > 0, ref_logp.detach(), torch.zeros_like(logp))
        kl = kl_estimator(lp_m, ref_m, cfg.kl)
        if cfg.kl_bias_correction:
            kl = kl * ratio
        loss = loss + cfg.beta * aggregate(kl, m, agg, max_length=max_length)
        metrics["kl_mean"] = ((kl.detach() * m).sum() / m.sum().clamp(min=1)).item()
    if num_active_tokens is not None:
        loss = loss * (m.sum().clamp(min=1) / num_active_tokens)

    with torch.no_grad():
        unit_seq = per_seq and adv.shape[1] == 1
        r = ratio.detach()[:, :1] if unit_seq else ratio.detach()
        a = adv if unit_seq else adv.expand_as(r)
        zeros = torch.zeros_like(r, dtype=torch.bool)
        if cfg.loss == "ppo":
            low, high = (r < 1 - cfg.clip_low) & (a < 0), (r > 1 + cfg.clip_high) & (a > 0)
        elif cfg.loss == "cispo":
            low, high = zeros, (r > cfg.cispo_max) & (a > 0)
        else:
            low, high = zeros, zeros
        metrics["clip_frac_low"] = _frac(low, m, unit_seq)
        metrics["clip_frac_high"] = _frac(high, m, unit_seq)
        if cfg.dual_clip is not None:
            metrics["dual_clip_frac"] = _frac((r > cfg.dual_clip) & (a < 0), m, unit_seq)
        active = (m.sum(dim=1) > 0) if unit_seq else (m > 0)
        values = r[:, 0][active] if unit_seq else r[active]
        nan = float("nan")
        metrics["ratio_mean"] = values.mean().item() if values.numel() else nan
        metrics["ratio_min"] = values.min().item() if values.numel() else nan
        metrics["ratio_max"] = values.max().item() if values.numel() else nan
    return loss, metrics
