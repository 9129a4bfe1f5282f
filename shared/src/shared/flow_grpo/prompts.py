"""Prompts per iteration, and how a rollout's groups are spread over processes (shared_core.md §5 "Cross-rank").

Every process draws the same P prompts for iteration k from a generator seeded by (seed, k), so no communication
is needed and a resumed run draws what the uninterrupted run drew. Group id = the prompt's position 0..P−1 in
that draw, the same on every rank.

* ``spread`` (Flow-GRPO's ``DistributedKRepeatSampler``): the P·G copies are shuffled and dealt to the W ranks, so
  a group's members may sit on different ranks; advantages then need the all-gather of
  :func:`shared.advantages.distributed_group_advantages`. Needs P·G divisible by W.
* ``whole`` (DanceGRPO): rank r holds whole groups, prompts [r·P/W, (r+1)·P/W) with all G copies each (needed for
  one shared initial noise per group). Needs P divisible by W.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from shared.errors import ConfigError

__all__ = ["LocalBatch", "load_prompt_pool", "local_batch", "mix_seed"]


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, iteration, rank, purpose); deterministic across processes and runs."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) + 0x632BE59BD9B4E019 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


def load_prompt_pool(cfg, seed: int) -> list[dict]:
    """Training records with at least "prompt": the shapes generator (``prompts.source=shapes``) or a prompt file."""
    if cfg.source == "shapes":
        from shared.shapes import generate_prompts

        return generate_prompts(cfg.pool_size, seed=seed, tags=cfg.tags or None)
    from shared.training import load_prompt_file

    return [r if isinstance(r, dict) else {"prompt": r} for r in load_prompt_file(cfg.file)]


@dataclass
class LocalBatch:
    """This rank's share of one iteration: ``records`` to sample once each, in order, with their global group ids.

    ``group_size`` > 1 means each record stands for a whole group of that many copies (``whole`` layout)."""

    records: list[dict]
    group_ids: torch.Tensor
    group_size: int


def local_batch(pool: list[dict], *, iteration: int, seed: int, per_iteration: int, group_size: int,
                spread: bool, world_size: int = 1, rank: int = 0) -> LocalBatch:
    """This rank's prompts for ``iteration`` (see the module doc for the two layouts)."""
    gen = torch.Generator().manual_seed(mix_seed(seed, iteration, 0xB0B))
    p = per_iteration
    if p <= len(pool):
        idx = torch.randperm(len(pool), generator=gen)[:p]
    else:
        idx = torch.randint(0, len(pool), (p,), generator=gen)
    chosen = [pool[int(i)] for i in idx]
    if spread:
        n = p * group_size
        if n % world_size:
            raise ConfigError(f"prompts.per_iteration × sample.group_size = {n} is not divisible by the {world_size} "
                              "processes. Fix: change prompts.per_iteration or sample.group_size.")
        gids = torch.arange(p).repeat_interleave(group_size)[torch.randperm(n, generator=gen)]
        mine = gids[rank * n // world_size:(rank + 1) * n // world_size]
        return LocalBatch([chosen[int(g)] for g in mine], mine.clone(), 1)
    if p % world_size:
        raise ConfigError(f"prompts.per_iteration = {p} is not divisible by the {world_size} processes "
                          "(prompts.spread_groups=false keeps whole groups per process). Fix: change prompts.per_iteration.")
    lo, hi = rank * p // world_size, (rank + 1) * p // world_size
    return LocalBatch(chosen[lo:hi], torch.arange(lo, hi).repeat_interleave(group_size), group_size)
