"""Super-Linear Advantage Shaping, the advantage function (spec card slas.md §4) [our reading].

Only the paper's abstract is available; the formula below is our reconstruction from it and from two third-party
summaries (card §3). Per group g(i) (one prompt, G samples) and batch B (all prompts; on all ranks by default):

  (4.1) centre without the prompt std:  Δr_i = r_i − mean_{j ∈ g(i)} r_j
  (4.2) batch normalisation:            Â_i = Δr_i / (σ_B + eps),  σ_B = std over the whole batch
  (4.3) super-linear map:               Ã_i = sign(Â_i)·|Â_i|^(1+γ)   (computed as Â_i·|Â_i|^γ)

With γ = 0, σ_B the population std (ddof 0) of the *raw* rewards and eps = 1e-4 this is exactly Flow-GRPO's
`global_std=True` advantage (`shared.advantages.group_advantages(..., std="batch", eps=1e-4)`; flow_grpo
`flow_grpo/stat_tracking.py`) [authors' code]. Every other choice is ours and is a `ShapingConfig` field:

  order          normalise_then_power: (4.2) then (4.3) (default).
                 power_then_normalise: Ã_i = p(Δr_i) / (S + eps), p(x) = sign(x)·|x|^(1+γ), S = batch std of p(x_j),
                 x_j = Δr_j (sigma_b_of="centred") or r_j − mean_B r (sigma_b_of="raw_rewards").
  sigma_b_of     raw_rewards (Flow-GRPO) · centred (std of Δr over the batch).
  recentre       none · group (subtract the group mean of Ã) · batch (subtract the batch mean of Ã over the rows of
                 groups that carry signal); Σ_i Ã_i ≠ 0 once γ > 0.
  clip           None or c > 0: clamp to [−c, c], applied last (after the power and any re-centring).
  eps, ddof      denominator eps and std ddof (Flow-GRPO 1e-4 / 0; DanceGRPO 1e-8 / 1).
  stats_scope    global: σ_B, group means and re-centring use the batch all-gathered over ranks
                 (`shared.advantages.gather_rewards`), and each rank gets its own rows back · per_rank: each rank uses
                 only its own rows (DanceGRPO computes per rank). Without an initialised process group both agree.
  gamma schedule constant · linear · cosine from `gamma` to `gamma_end`; see `gamma_at`.

Scale behaviour (our derivation, tested): both orders are invariant to r ↦ k·r, k > 0, up to eps. In
normalise_then_power Δr and σ_B both scale by k, so Â and Ã do not change. In power_then_normalise p is positively
homogeneous of degree 1 + γ, so p(kΔr) = k^(1+γ)·p(Δr) and S scales by k^(1+γ) too. What the orders differ in is the
overall magnitude: normalise_then_power amplifies |Â| > 1 and shrinks |Â| < 1 relative to the unit batch scale (the
batch std of Ã grows or shrinks with γ), while power_then_normalise (sigma_b_of="centred") keeps the batch std of Ã
at 1 for every γ, so γ changes only the shape. At γ = 0 the two orders agree (up to rounding).

Zero-std groups (all rewards equal, including singletons) give Δr ≡ 0 and so Ã ≡ 0 for every γ and every option
(card §8); they are counted in `zero_std_fraction`, Flow-GRPO's `zero_std_ratio`. Statistics run in float64.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from collections.abc import Sequence

import torch
from torch import Tensor

from shared.advantages import AdvantageOutput, batch_std, gather_rewards, group_advantages, zero_std_rows
from shared.errors import ConfigError

__all__ = [
    "GAMMA_SCHEDULES",
    "ORDERS",
    "RECENTRE_MODES",
    "SIGMA_B_OF",
    "STATS_SCOPES",
    "SLASOutput",
    "ShapingConfig",
    "gamma_at",
    "power",
    "slas_advantages",
]

ORDERS = ("normalise_then_power", "power_then_normalise")
SIGMA_B_OF = ("raw_rewards", "centred")
RECENTRE_MODES = ("none", "group", "batch")
STATS_SCOPES = ("global", "per_rank")
GAMMA_SCHEDULES = ("constant", "linear", "cosine")


def _is_real(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class ShapingConfig:
    """Options of the SLAS advantage; every field is our reading (card §4 table), defaults marked there.

    gamma: γ ≥ 0 of (4.3) (0 = linear, Flow-GRPO batch-std). The paper's value is [unknown]; 0.5 is ours, the middle
      of the card's comparison grid {0, 0.5, 1}. With a schedule, `gamma` is the start value.
    gamma_schedule / gamma_end: constant · linear · cosine from `gamma` to `gamma_end` (see `gamma_at`).
    order, sigma_b_of, recentre, stats_scope: see the module docstring. clip: None or > 0 (card default 5, the image
      anchors' ±5), applied last. eps: added to the denominator (1e-4, Flow-GRPO). ddof: 0 (population std,
      Flow-GRPO) or 1 (unbiased, DanceGRPO).
    """

    gamma: float = 0.5
    gamma_schedule: str = "constant"
    gamma_end: float | None = None
    order: str = "normalise_then_power"
    sigma_b_of: str = "raw_rewards"
    recentre: str = "none"
    clip: float | None = 5.0
    eps: float = 1e-4
    ddof: int = 0
    stats_scope: str = "global"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `shared.errors.ConfigError` (a ValueError) naming the bad field and the fix."""
        if not (_is_real(self.gamma) and self.gamma >= 0):
            raise ConfigError(f"ShapingConfig.gamma must be a finite number >= 0, got {self.gamma!r}; "
                              "use 0 for the linear (batch-std) advantage or e.g. 0.5 / 1.0 for super-linear shaping")
        for name, value, allowed in (
            ("gamma_schedule", self.gamma_schedule, GAMMA_SCHEDULES),
            ("order", self.order, ORDERS),
            ("sigma_b_of", self.sigma_b_of, SIGMA_B_OF),
            ("recentre", self.recentre, RECENTRE_MODES),
            ("stats_scope", self.stats_scope, STATS_SCOPES),
        ):
            if value not in allowed:
                raise ConfigError(f"ShapingConfig.{name} must be one of {', '.join(allowed)}; got {value!r}")
        if self.gamma_schedule == "constant":
            if self.gamma_end is not None and self.gamma_end != self.gamma:
                raise ConfigError(f"ShapingConfig.gamma_end={self.gamma_end!r} has no effect with gamma_schedule="
                                  "'constant'; set gamma_schedule to linear or cosine, or drop gamma_end")
        elif self.gamma_end is None:
            raise ConfigError(f"ShapingConfig.gamma_end is required with gamma_schedule={self.gamma_schedule!r}; "
                              "set gamma_end to the final γ (>= 0)")
        if self.gamma_end is not None and not (_is_real(self.gamma_end) and self.gamma_end >= 0):
            raise ConfigError(f"ShapingConfig.gamma_end must be a finite number >= 0 or None, got {self.gamma_end!r}")
        if self.clip is not None and not (_is_real(self.clip) and self.clip > 0):
            raise ConfigError(f"ShapingConfig.clip must be None (no clipping) or a finite number > 0, got "
                              f"{self.clip!r}; use None to disable, 5.0 for the image anchors' ±5")
        if not (_is_real(self.eps) and self.eps >= 0):
            raise ConfigError(f"ShapingConfig.eps must be a finite number >= 0, got {self.eps!r}; "
                              "use 1e-4 (Flow-GRPO) or 1e-8 (DanceGRPO)")
        if isinstance(self.ddof, bool) or self.ddof not in (0, 1):
            raise ConfigError(f"ShapingConfig.ddof must be the integer 0 (population std, Flow-GRPO) or 1 "
                              f"(unbiased, DanceGRPO), got {self.ddof!r}")


def gamma_at(cfg: ShapingConfig, iteration: int, total: int) -> float:
    """γ at `iteration` of a schedule that moves from cfg.gamma to cfg.gamma_end over `total` iterations [our reading].

    t = min(iteration / total, 1);  constant: γ_0;  linear: γ_0 + (γ_1 − γ_0)·t;
    cosine: γ_1 + (γ_0 − γ_1)·½·(1 + cos(π·t)).
    iteration 0 gives γ_0, iteration ≥ total gives γ_1 (pass total = iterations − 1 to land on γ_1 at the last
    iteration of a 0-indexed loop). Pure: no state.
    """
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise ValueError(f"iteration must be an integer >= 0, got {iteration!r}")
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise ValueError(f"total must be an integer >= 1 (iterations over which γ moves), got {total!r}")
    if cfg.gamma_schedule == "constant":
        return float(cfg.gamma)
    g0, g1 = float(cfg.gamma), float(cfg.gamma_end)
    t = min(iteration / total, 1.0)
    if cfg.gamma_schedule == "linear":
        return g0 + (g1 - g0) * t
    return g1 + (g0 - g1) * 0.5 * (1.0 + math.cos(math.pi * t))


def power(x: Tensor, gamma: float) -> Tensor:
    """p(x) = sign(x)·|x|^(1+γ) of Eq. (4.3), computed as x·|x|^γ (exact at γ = 0; p(0) = 0 for every γ ≥ 0)."""
    return x * x.abs() ** gamma


@dataclass
class SLASOutput(AdvantageOutput):
    """`shared.advantages.AdvantageOutput` (advantages, zero_std_fraction, mean_group_std) plus the amplification
    watch of card §9. All statistics are over the batch the advantages were computed on (the gathered batch in
    global scope, identical on every rank; this rank's rows in per_rank scope), after clipping unless named.

    mean_abs / max_abs: mean and max of |Ã|; clip_fraction: fraction of rows clipped; sigma_b: the denominator scale
    before eps (σ_B, or S for power_then_normalise); gamma: the γ used.
    """

    mean_abs: float
    max_abs: float
    clip_fraction: float
    sigma_b: float
    gamma: float

    def stats(self) -> dict[str, float]:
        """The scalar fields, for logging."""
        out = asdict(self)
        out.pop("advantages")
        return out


def _shape_batch(rewards: Tensor, group_ids: Tensor | Sequence[int], cfg: ShapingConfig, gamma: float) -> SLASOutput:
    """Eqs. (4.1)–(4.3) and the options on one (already gathered) batch."""
    out_dtype = rewards.dtype if rewards.dtype.is_floating_point else torch.float32
    r = rewards.to(torch.float64)
    # (4.1): Δr with zero-std groups exactly 0; also validates group_ids and gives the zero-std logging.
    base = group_advantages(r, group_ids, std="none", unbiased=cfg.ddof == 1)
    delta = base.advantages

    if cfg.order == "normalise_then_power":
        sigma = batch_std(r if cfg.sigma_b_of == "raw_rewards" else delta, cfg.ddof)  # (4.2)
        denom = sigma + cfg.eps
        a_hat = delta / denom if denom > 0 else torch.zeros_like(delta)  # denom 0 ⇒ every Δr is 0
        adv = power(a_hat, gamma)  # (4.3)
    else:
        x = r - r.mean() if cfg.sigma_b_of == "raw_rewards" else delta
        sigma = batch_std(power(x, gamma), cfg.ddof)
        denom = sigma + cfg.eps
        adv = power(delta, gamma) / denom if denom > 0 else torch.zeros_like(delta)

    if cfg.recentre == "group":
        adv = group_advantages(adv, group_ids, std="none").advantages  # Ã − its group mean; zero-std groups stay 0
    elif cfg.recentre == "batch":
        zero_row = zero_std_rows(r, group_ids)
        if bool((~zero_row).any()):
            adv = torch.where(zero_row, torch.zeros_like(adv), adv - adv[~zero_row].mean())

    clip_fraction = 0.0
    if cfg.clip is not None:
        clip_fraction = (adv.abs() > cfg.clip).double().mean().item()
        adv = adv.clamp(-cfg.clip, cfg.clip)
    mag = adv.abs()
    return SLASOutput(
        advantages=adv.to(out_dtype),
        zero_std_fraction=base.zero_std_fraction,
        mean_group_std=base.mean_group_std,
        mean_abs=mag.mean().item(),
        max_abs=mag.max().item(),
        clip_fraction=clip_fraction,
        sigma_b=float(sigma),
        gamma=float(gamma),
    )


def slas_advantages(
    rewards: Tensor,
    group_ids: Tensor | Sequence[int],
    cfg: ShapingConfig | None = None,
    *,
    gamma: float | None = None,
) -> SLASOutput:
    """SLAS advantages Ã (card §4, Eqs. (4.1)–(4.3)) for this rank's `rewards` (N,) with integer `group_ids` (N,).

    `gamma` overrides cfg.gamma (pass `gamma_at(cfg, iteration, total)` for a schedule). With cfg.stats_scope
    "global" and an initialised `torch.distributed` group, the statistics use the all-gathered batch (every rank must
    hold the same N; group ids must mean the same prompt on every rank, and a group may straddle ranks) and this rank's
    rows are returned; otherwise only the local rows are used. Integer rewards give float32 advantages, floating
    rewards keep their dtype.
    """
    cfg = ShapingConfig() if cfg is None else cfg
    if gamma is None:
        gamma = cfg.gamma
    elif not (_is_real(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
    rewards = torch.as_tensor(rewards)
    if rewards.ndim != 1 or rewards.numel() == 0:
        raise ValueError(f"rewards must be a non-empty 1-d tensor, got shape {tuple(rewards.shape)}")
    if cfg.stats_scope == "global":
        all_r, all_ids, local = gather_rewards(rewards, group_ids)
    else:
        all_r, all_ids, local = rewards, group_ids, slice(0, rewards.shape[0])
    out = _shape_batch(all_r, all_ids, cfg, float(gamma))
    return replace(out, advantages=out.advantages[local])
