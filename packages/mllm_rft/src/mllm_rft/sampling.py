"""DAPO's dynamic sampling and overlong filtering, independent of any model (mllm_rft.md §2 "DAPO components").

    keep = filter_groups(rewards_per_group)             # (G,) bool: the group's rewards are not all equal
    result = DynamicSampler(generate_fn, batch_groups=16, max_rounds=8).sample()
    result.groups, result.full, result.rounds, result.drop_fraction
    loss_keep = overlong_mask(lengths, max_len)        # (N,) bool: False for truncated completions

A group (the G completions of one prompt) whose rewards are all equal has advantage 0 for every member under every
std mode (`shared.advantages`): it costs a forward/backward pass and carries no signal. DAPO drops such groups (all
correct or all wrong) and keeps generating until the batch is full [paper: DAPO §3.2; authors' code: verl
`filter_groups` + `max_num_gen_batches`, EasyR1 `online_filtering` + `max_try_make_batch` 20]. TRL has no dynamic
sampling (card §2 table). Card §5: by the end of a tiny-model run 66–90% of groups had zero reward std.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["DynamicSampleResult", "DynamicSampler", "filter_groups", "overlong_mask"]


def _group_values(group: Any, i: int) -> list[float]:
    if isinstance(group, torch.Tensor):
        group = group.detach().reshape(-1).tolist()
    vals = [float(v) for v in group]
    if not vals:
        raise ValueError(f"group {i} has no rewards")
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"group {i} has non-finite rewards {vals}; mask unscorable completions before filtering")
    return vals


def filter_groups(
    rewards_per_group: Sequence[Sequence[float]] | torch.Tensor,
    *,
    atol: float = 0.0,
    mean_range: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Keep mask (G,) bool over groups: True where the group's rewards are not all equal.

        keep_g = (max_g − min_g > atol)  [and  low < mean_g < high  with mean_range=(low, high)]

    `rewards_per_group`: a (G, n) tensor or G sequences (sizes may differ). "Equal" is exact by default (atol 0): the
    same test as `shared.advantages` uses to zero a group's advantages, so a kept group always has a nonzero
    advantage somewhere. `atol > 0` also drops near-ties of a continuous reward (ours). A group of one completion is
    dropped (no baseline; verl keeps singletons). `mean_range`: EasyR1's band on the group's mean accuracy, keep
    mean in (0.01, 0.99), both ends exclusive; pass the accuracy rewards for it, not the shaped total.
    Non-finite rewards raise ValueError.
    """
    if not atol >= 0:
        raise ValueError(f"atol must be >= 0, got {atol!r}")
    if mean_range is not None and not mean_range[0] < mean_range[1]:
        raise ValueError(f"mean_range must be (low, high) with low < high, got {mean_range!r}")
    if isinstance(rewards_per_group, torch.Tensor) and rewards_per_group.ndim != 2:
        raise ValueError(f"rewards tensor must be (groups, completions), got shape {tuple(rewards_per_group.shape)}")
    keep = []
    for i, group in enumerate(rewards_per_group):
        vals = _group_values(group, i)
        k = max(vals) - min(vals) > atol
        if mean_range is not None:
            mean = sum(vals) / len(vals)
            k = k and mean_range[0] < mean < mean_range[1]
        keep.append(k)
    return torch.tensor(keep, dtype=torch.bool)


def _default_rewards(group: Any) -> Any:
    if isinstance(group, Mapping):
        return group["rewards"]
    if hasattr(group, "rewards"):
        return group.rewards
    raise TypeError(
        f"cannot read rewards from a {type(group).__name__}; give groups a 'rewards' key or attribute, "
        "or pass rewards_fn"
    )


@dataclass
class DynamicSampleResult:
    """groups: at most `batch_groups` kept groups, in generation order; full: the batch reached `batch_groups`;
    rounds: calls to generate_fn; generated: groups received; dropped: groups filtered out; truncated: groups that
    passed the filter but did not fit in the batch (discarded, as verl's `batch[:traj_bsz]`)."""

    groups: list[Any] = field(default_factory=list)
    full: bool = False
    rounds: int = 0
    generated: int = 0
    dropped: int = 0
    truncated: int = 0

    @property
    def drop_fraction(self) -> float:
        """dropped / generated (0 when nothing was generated)."""
        return self.dropped / self.generated if self.generated else 0.0

    def metrics(self) -> dict[str, float]:
        """Scalars for the JSONL log."""
        return {
            "dynamic_sampling/rounds": float(self.rounds),
            "dynamic_sampling/generated_groups": float(self.generated),
            "dynamic_sampling/kept_groups": float(len(self.groups)),
            "dynamic_sampling/drop_fraction": self.drop_fraction,
            "dynamic_sampling/truncated_groups": float(self.truncated),
            "dynamic_sampling/full": float(self.full),
        }


class DynamicSampler:
    """Generate groups until `batch_groups` of them pass `filter_groups`, or `max_rounds` calls were made.

    Each round calls `generate_fn(n)` with n = the groups still missing (default) or `groups_per_round` (verl's fixed
    `gen_batch_size`, often larger than the train batch); it returns a sequence of groups, opaque to the sampler
    except for their rewards (`rewards_fn(group)`, default `group["rewards"]` or `group.rewards`). Kept groups
    accumulate in order; once the batch is full the remainder is discarded (counted in `truncated`), so at most
    `batch_groups` come back. At the round limit the sampler returns what it has with `full=False` — possibly
    nothing; the trainer decides (verl and EasyR1 raise an error there instead).
    """

    def __init__(
        self,
        generate_fn: Callable[[int], Sequence[Any]],
        batch_groups: int,
        max_rounds: int,
        *,
        groups_per_round: int | None = None,
        rewards_fn: Callable[[Any], Sequence[float]] | None = None,
        atol: float = 0.0,
        mean_range: tuple[float, float] | None = None,
    ):
        for name, v in (("batch_groups", batch_groups), ("max_rounds", max_rounds)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if groups_per_round is not None and (not isinstance(groups_per_round, int) or groups_per_round < 1):
            raise ValueError(f"groups_per_round must be None or an int >= 1, got {groups_per_round!r}")
        self.generate_fn = generate_fn
        self.batch_groups, self.max_rounds, self.groups_per_round = batch_groups, max_rounds, groups_per_round
        self.rewards_fn = rewards_fn or _default_rewards
        self.atol, self.mean_range = atol, mean_range

    def sample(self) -> DynamicSampleResult:
        out = DynamicSampleResult()
        kept: list[Any] = []
        while len(kept) < self.batch_groups and out.rounds < self.max_rounds:
            n = self.groups_per_round or self.batch_groups - len(kept)
            groups = list(self.generate_fn(n))
            out.rounds += 1
            out.generated += len(groups)
            if not groups:
                continue
            keep = filter_groups([self.rewards_fn(g) for g in groups], atol=self.atol, mean_range=self.mean_range)
            for group, k in zip(groups, keep.tolist()):
                if k:
                    kept.append(group)
                else:
                    out.dropped += 1
        out.truncated = max(0, len(kept) - self.batch_groups)
        out.groups = kept[: self.batch_groups]
        out.full = len(out.groups) == self.batch_groups
        return out


def overlong_mask(
    lengths: Sequence[int] | torch.Tensor,
    max_len: int,
    *,
    finished: Sequence[bool] | torch.Tensor | None = None,
) -> torch.Tensor:
    """DAPO overlong filtering: (N,) bool, True = the completion enters the loss, False = truncated (excluded).

        truncated_i = lengths_i ≥ max_len  [and  not finished_i  when `finished` is given]

    `lengths`: generated tokens per completion (EOS included when emitted); `max_len`: the generation limit.
    Without `finished`, a completion that ends with EOS exactly at `max_len` counts as truncated (lengths alone cannot
    tell); pass `finished` (EOS seen) to keep it, as TRL's `mask_truncated_completions` (last token not EOS/pad)
    [authors' code: TRL 1.16 `GRPOTrainer`]. Multiply the token mask by `mask[:, None]`.
    """
    lengths = torch.as_tensor(lengths)
    if lengths.numel() == 0:
        lengths = lengths.long()
    if lengths.ndim != 1 or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be a 1-d integer sequence, got {lengths.dtype} shape {tuple(lengths.shape)}")
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len must be an int >= 1, got {max_len!r}")
    if (lengths < 0).any():
        raise ValueError("lengths must be >= 0")
    truncated = lengths >= max_len
    if finished is not None:
        done = torch.as_tensor(finished, dtype=torch.bool)
        if done.shape != lengths.shape:
            raise ValueError(f"finished must have shape {tuple(lengths.shape)}, got {tuple(done.shape)}")
        truncated = truncated & ~done
    return ~truncated
