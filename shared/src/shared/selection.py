"""Which sampling steps are trained (spec card §4, "Our selector API").

A trajectory of T transitions has step indices 0 … T−1, step k going σ_k → σ_{k+1} (σ: 1 → 0), so index 0 is
the highest-noise step and T−1 the last, lowest-noise one. Every selector returns plain `list[int]` indices
(`chunks` a list of such lists) and validates its inputs with a ValueError naming the argument.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["chunks", "in_order", "random_subset", "window"]


def _check_num_steps(num_steps: int) -> None:
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")


def _count(n: int, fraction: float) -> int:
    """K = int(n·f), the anchors' rounding (Flow-GRPO, DanceGRPO, DDPO all write `int(T * fraction)`)."""
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    k = int(n * fraction)
    if k < 1:
        raise ValueError(f"fraction={fraction} of {n} steps selects no step; raise fraction to at least 1/{n}")
    return k


def in_order(num_steps: int, fraction: float) -> list[int]:
    """Flow-GRPO: the first K = ⌊T·f⌋ steps in order, [0, …, K−1]. SD3.5: T = 10, f = 0.99 → K = 9, so the last,
    lowest-noise step is never trained. [authors' code: flow_grpo `train.timestep_fraction`]"""
    _check_num_steps(num_steps)
    return list(range(_count(num_steps, fraction)))


def random_subset(
    num_steps: int,
    fraction: float,
    *,
    drop_last: bool = True,
    generator: torch.Generator | None = None,
) -> list[int]:
    """DanceGRPO / DDPO: a random permutation of the candidate steps, keep the first ⌊n·f⌋ (in permutation order).

    DanceGRPO always drops the last transition (n = T − 1; FLUX T = 16, f = 0.6 → 9 steps); DDPO keeps all
    (`drop_last=False`, n = T, default f = 1.0). Call once per sample for independent per-sample subsets.
    [authors' code: DanceGRPO `train_grpo_flux.py`, ddpo-pytorch `train.py`]
    """
    _check_num_steps(num_steps)
    n = num_steps - 1 if drop_last else num_steps
    if n < 1:
        raise ValueError(f"num_steps={num_steps} with drop_last=True leaves no step to train")
    k = _count(n, fraction)
    return torch.randperm(n, generator=generator)[:k].tolist()


def window(
    num_steps: int,
    size: int,
    range_: tuple[int, int] | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Flow-GRPO-Fast SDE window: `size` consecutive steps [start, start + size) with start uniform in
    [lo, hi − size], i.e. the window lies inside the half-open range [lo, hi).

    `range_` defaults to (0, T // 2), the first half (the README: high-noise windows work best). Only the window
    steps are sampled with noise and trained; the rest run the ODE. [authors' code: flow_grpo
    `sde_window_size`, `sde_window_range`]
    """
    _check_num_steps(num_steps)
    lo, hi = (0, num_steps // 2) if range_ is None else range_
    if not (isinstance(size, int) and size >= 1):
        raise ValueError(f"size must be a positive int, got {size!r}")
    if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo < hi <= num_steps):
        raise ValueError(f"range_ must be (lo, hi) with 0 <= lo < hi <= num_steps={num_steps}, got {range_!r}")
    if size > hi - lo:
        raise ValueError(f"size={size} does not fit in range_=({lo}, {hi}); need size <= {hi - lo}")
    start = lo + int(torch.randint(0, hi - lo - size + 1, (1,), generator=generator).item())
    return list(range(start, start + size))


def chunks(
    sizes: Sequence[int] | None = None,
    *,
    boundaries: Sequence[int] | None = None,
    num_steps: int | None = None,
) -> list[list[int]]:
    """Consecutive chunks of steps (GCPO), high noise first.

    `sizes` [cs_1, …, cs_K]: chunk j holds the next cs_j steps, e.g. [2, 3, 4, 7] → [[0, 1], [2, 3, 4],
    [5, …, 8], [9, …, 15]] (GCPO's fixed list, 16 transitions). Or `boundaries` b_0 < b_1 < … < b_K: chunk j is
    [b_{j}, b_{j+1}). With `num_steps`, the chunks must cover exactly 0 … num_steps − 1.
    [authors' code: GCPO `--new_chunk_list`]
    """
    if (sizes is None) == (boundaries is None):
        raise ValueError("pass exactly one of sizes or boundaries")
    if sizes is not None:
        if len(sizes) == 0 or any(not isinstance(s, int) or s < 1 for s in sizes):
            raise ValueError(f"sizes must be a non-empty list of positive ints, got {list(sizes)!r}")
        bounds = [0]
        for s in sizes:
            bounds.append(bounds[-1] + s)
    else:
        bounds = list(boundaries)
        if len(bounds) < 2 or any(not isinstance(b, int) for b in bounds) or bounds[0] < 0:
            raise ValueError(f"boundaries must be >= 2 non-negative ints, got {bounds!r}")
        if any(b >= c for b, c in zip(bounds, bounds[1:], strict=False)):
            raise ValueError(f"boundaries must be strictly increasing, got {bounds!r}")
    if num_steps is not None:
        _check_num_steps(num_steps)
        if bounds[0] != 0 or bounds[-1] != num_steps:
            raise ValueError(f"chunks cover steps {bounds[0]}..{bounds[-1] - 1}, but num_steps={num_steps}")
    return [list(range(b, c)) for b, c in zip(bounds, bounds[1:], strict=False)]
