"""Group-relative advantages (spec card §5).

Centre per group (prompt): Δr_i = r_i − mean_{j ∈ g(i)} r_j, then scale:
  std="group": A_i = Δr_i / (std_{g(i)} + eps)        (GRPO, DanceGRPO, TRL `scale_rewards="group"`)
  std="batch": A_i = Δr_i / (std(all raw rewards) + eps) (Flow-GRPO `global_std=True`, TRL `"batch"`)
  std="none":  A_i = Δr_i                               (Dr. GRPO)
std is the population std (ddof 0, Flow-GRPO's numpy + 1e-4) with `unbiased=False`, the n − 1 std (DanceGRPO
+ 1e-8, TRL + 1e-4) with `unbiased=True`. Optional clip to [−c, c] (`adv_clip_max = 5` in DDPO, Flow-GRPO,
DanceGRPO, GCPO). Source: flow_grpo `flow_grpo/stat_tracking.py`, TRL `GRPOTrainer`.

Groups whose rewards are all equal give A ≡ 0 exactly (no signal, full cost); they are counted in
`zero_std_fraction` (the fraction of *groups*, Flow-GRPO's `zero_std_ratio`). A group of size 1 has std 0 under
both conventions (the n − 1 std is undefined there) and so A = 0. Statistics run in float64.

Cross-rank (Flow-GRPO's `DistributedKRepeatSampler` puts a group's members on different ranks): `gather_rewards`
all-gathers (reward, group id) when `torch.distributed` is initialised; `distributed_group_advantages` computes on
the global batch and returns this rank's slice. Group ids must mean the same prompt on every rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "STD_MODES",
    "AdvantageOutput",
    "batch_std",
    "distributed_group_advantages",
    "gather_rewards",
    "group_advantages",
    "zero_std_rows",
]

STD_MODES = ("group", "batch", "none")


@dataclass
class AdvantageOutput:
    """advantages: (N,) like the rewards (float32 for integer rewards); zero_std_fraction: fraction of groups with
    all-equal rewards; mean_group_std: mean over groups of the group reward std (same ddof as the scaling)."""

    advantages: Tensor
    zero_std_fraction: float
    mean_group_std: float


def _as_ids(group_ids: Tensor | Sequence[int], n: int, device: torch.device) -> Tensor:
    ids = torch.as_tensor(group_ids, device=device)
    if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.dtype.is_complex:
        raise ValueError(f"group_ids must be integers, got dtype {ids.dtype}")
    if ids.shape != (n,):
        raise ValueError(f"group_ids must have shape ({n},) like rewards, got {tuple(ids.shape)}")
    return ids.long()


def batch_std(x: Tensor, ddof: int = 0) -> Tensor:
    """The std of all of ``x`` (1-d) with ``ddof`` (0 population, 1 unbiased); 0 when there are ≤ ddof values.
    The batch scale of ``group_advantages(std="batch")`` (Flow-GRPO ``global_std``) and of slas."""
    n = x.shape[0]
    return torch.sqrt(((x - x.mean()) ** 2).sum() / max(n - ddof, 1)) if n > ddof else x.new_zeros(())


def _group_extremes_equal(r: Tensor, inverse: Tensor, num_groups: int) -> Tensor:
    """(num_groups,) bool: all rewards of the group are equal (an exact test: a float mean of equal values need
    not equal them)."""
    g_max = torch.full((num_groups,), -torch.inf, dtype=r.dtype, device=r.device).scatter_reduce_(
        0, inverse, r, reduce="amax")
    g_min = torch.full((num_groups,), torch.inf, dtype=r.dtype, device=r.device).scatter_reduce_(
        0, inverse, r, reduce="amin")
    return g_max == g_min


def zero_std_rows(rewards: Tensor, group_ids: Tensor | Sequence[int]) -> Tensor:
    """(N,) bool: the row's group has all-equal rewards (its advantage is 0 in every mode)."""
    rewards = torch.as_tensor(rewards)
    ids = _as_ids(group_ids, rewards.shape[0], rewards.device)
    _, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
    return _group_extremes_equal(rewards.to(torch.float64), inverse, counts.shape[0])[inverse]


def group_advantages(
    rewards: Tensor,
    group_ids: Tensor | Sequence[int],
    *,
    std: str = "group",
    eps: float = 1e-4,
    unbiased: bool = False,
    clip: float | None = None,
) -> AdvantageOutput:
    """A_i = (r_i − mean_{g(i)} r) / (scale + eps), scale per `std` ("group" | "batch" | "none"; no eps for "none").

    `group_ids`: any integer tensor or list of shape (N,), not necessarily sorted or contiguous.
    `unbiased`: n − 1 std (TRL, DanceGRPO) instead of the population std (Flow-GRPO). `clip=c`: clip to [−c, c].
    """
    if std not in STD_MODES:
        raise ValueError(f"std must be one of {STD_MODES}, got {std!r}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be > 0 or None, got {clip!r}")
    rewards = torch.as_tensor(rewards)
    if rewards.ndim != 1 or rewards.numel() == 0:
        raise ValueError(f"rewards must be a non-empty 1-d tensor, got shape {tuple(rewards.shape)}")
    ids = _as_ids(group_ids, rewards.shape[0], rewards.device)
    out_dtype = rewards.dtype if rewards.dtype.is_floating_point else torch.float32
    r = rewards.to(torch.float64)
    ddof = 1 if unbiased else 0

    _, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
    num_groups = counts.shape[0]
    sums = torch.zeros(num_groups, dtype=torch.float64, device=r.device).index_add_(0, inverse, r)
    means = sums / counts
    centred = r - means[inverse]
    sq = torch.zeros_like(sums).index_add_(0, inverse, centred**2)
    denom = (counts - ddof).clamp(min=1).to(torch.float64)
    group_std = torch.where(counts > ddof, torch.sqrt(sq / denom), torch.zeros_like(sums))
    zero_std = _group_extremes_equal(r, inverse, num_groups)
    group_std = torch.where(zero_std, torch.zeros_like(group_std), group_std)

    if std == "group":
        adv = centred / (group_std[inverse] + eps)
    elif std == "batch":
        adv = centred / (batch_std(r, ddof) + eps)
    else:
        adv = centred
    adv = torch.where(zero_std[inverse], torch.zeros_like(adv), adv)
    if clip is not None:
        adv = adv.clamp(-clip, clip)
    return AdvantageOutput(
        advantages=adv.to(out_dtype),
        zero_std_fraction=zero_std.double().mean().item(),
        mean_group_std=group_std.mean().item(),
    )


def _dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def gather_rewards(rewards: Tensor, group_ids: Tensor | Sequence[int]) -> tuple[Tensor, Tensor, slice]:
    """All-gather (reward, group id) over ranks; returns (all_rewards, all_group_ids, this rank's slice).

    Rank k's entries land at [k·N, (k+1)·N); every rank must hold the same number N (checked). Without an
    initialised process group this is a no-op returning the inputs and slice(0, N).
    """
    rewards = torch.as_tensor(rewards)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-d, got shape {tuple(rewards.shape)}")
    n = rewards.shape[0]
    ids = _as_ids(group_ids, n, rewards.device)
    if not _dist_ready():
        return rewards, ids, slice(0, n)
    dist = torch.distributed
    world, rank = dist.get_world_size(), dist.get_rank()
    sizes = [torch.zeros(1, dtype=torch.long, device=rewards.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([n], dtype=torch.long, device=rewards.device))
    sizes = [int(s.item()) for s in sizes]
    if len(set(sizes)) != 1:
        raise ValueError(f"gather_rewards needs equal local batch sizes on every rank, got {sizes}")
    all_r = [torch.empty_like(rewards) for _ in range(world)]
    all_ids = [torch.empty_like(ids) for _ in range(world)]
    dist.all_gather(all_r, rewards.contiguous())
    dist.all_gather(all_ids, ids.contiguous())
    return torch.cat(all_r), torch.cat(all_ids), slice(rank * n, (rank + 1) * n)


def distributed_group_advantages(
    rewards: Tensor, group_ids: Tensor | Sequence[int], **kwargs
) -> AdvantageOutput:
    """`group_advantages` over the globally gathered batch, returning this rank's advantages.

    `zero_std_fraction` and `mean_group_std` are global (identical on every rank). Single process: equals
    `group_advantages`. Keyword arguments are those of `group_advantages`.
    """
    all_r, all_ids, local = gather_rewards(rewards, group_ids)
    out = group_advantages(all_r, all_ids, **kwargs)
    return AdvantageOutput(out.advantages[local], out.zero_std_fraction, out.mean_group_std)
