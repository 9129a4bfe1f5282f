"""Trained units: which sampling steps carry one importance ratio (shared_core.md §4, chunk_grpo.md §3–6).

A **unit** is a list of step indices (step k goes σ_k → σ_{k+1}; 0 is the highest-noise step). Its log-prob is the
mean of its steps' log-probs, so its ratio exp(mean_t (log p_θ,t − log p_old,t)) is the geometric mean of the step
ratios (GCPO's chunk ratio, Eq. 14–15). A step-level method trains units of one step; a chunk method trains
several consecutive steps per unit; one unit of all steps is the sequence-level (GSPO) ratio.

A :class:`UnitSelector` returns ``units[i][j]``, the steps of sample i's unit j. Layouts may vary: sample i has
n_i ≥ 1 units of any sizes (GCPO's weighted chunk sampling draws chunks {0, 3} of sizes [2, 7] for one sample and
{1, 2} of sizes [3, 4] for another). :func:`check_units` validates a selector's answer against the rollout, and
:func:`slots` groups unit j of every sample that has one into a :class:`Slot`, the trainer's backward unit
(:mod:`shared.flow_grpo.objective`).

Built-ins (thin wrappers of :mod:`shared.selection`; all accept and ignore ``traj``):

* :class:`InOrderSteps`  Flow-GRPO: the first ⌊T·f⌋ steps in order, the same for every sample.
* :class:`RandomSteps`   DanceGRPO / DDPO: per sample an independent random subset of ⌊n·f⌋ steps, n = T − 1 with
  ``drop_last`` (the last transition is never trained), in permutation order.
* :class:`Chunks`        GCPO (fixed chunking, all chunks trained): consecutive chunks of the given sizes covering
  all T steps.

Anything else (GCPO's adaptive chunking and weighted chunk sampling) is a selector object passed to
``shared.flow_grpo.train.train(cfg, selector=...)``; it receives the rollout (``traj.latents`` for L1rel,
``traj.group_ids`` for per-group choices).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import Tensor

from shared.selection import chunks, in_order, random_subset

if TYPE_CHECKING:
    from shared.rollout import Trajectory

__all__ = ["Chunks", "InOrderSteps", "RandomSteps", "Slot", "UnitSelector", "Units", "build_selector",
           "check_units", "slots"]

Units = list[list[list[int]]]
"""units[i][j] = the step indices of sample i's unit j."""


@runtime_checkable
class UnitSelector(Protocol):
    """(num_steps T, batch B, generator, traj=the rollout of these B samples) → per-sample lists of units."""

    def __call__(self, num_steps: int, batch: int, generator: torch.Generator | None = None, *,
                 traj: Trajectory | None = None) -> Units: ...


@dataclass
class InOrderSteps:
    """Flow-GRPO: every sample trains steps [0], [1], …, [K−1], K = ⌊T·f⌋ (SD3.5: T 10, f 0.99 → 9)."""

    fraction: float = 0.99

    def __call__(self, num_steps: int, batch: int, generator: torch.Generator | None = None, *,
                 traj: Trajectory | None = None) -> Units:
        steps = in_order(num_steps, self.fraction)
        return [[[s] for s in steps] for _ in range(batch)]


@dataclass
class RandomSteps:
    """DanceGRPO: per sample a fresh random permutation of the candidate steps, keep ⌊n·f⌋ (FLUX: T 16, f 0.6 → 9)."""

    fraction: float = 0.6
    drop_last: bool = True
    window: int | None = None
    """Only transitions 0 … window−1 are stochastic (``sample.sde_steps``): draw from those (the last transition
    is then ODE, so ``drop_last`` has nothing to drop unless window = T)."""

    def __call__(self, num_steps: int, batch: int, generator: torch.Generator | None = None, *,
                 traj: Trajectory | None = None) -> Units:
        n, drop = num_steps, self.drop_last
        if self.window is not None and self.window < num_steps:
            n, drop = self.window, False
        return [[[s] for s in random_subset(n, self.fraction, drop_last=drop, generator=generator)]
                for _ in range(batch)]


@dataclass
class Chunks:
    """GCPO fixed chunking: the same consecutive chunks for every sample, e.g. sizes [2, 3, 5] of T = 10."""

    sizes: list[int] = field(default_factory=list)
    window: int | None = None
    """Only transitions 0 … window−1 are stochastic: the chunks cover those."""

    def __call__(self, num_steps: int, batch: int, generator: torch.Generator | None = None, *,
                 traj: Trajectory | None = None) -> Units:
        units = chunks(list(self.sizes), num_steps=min(num_steps, self.window or num_steps))
        return [[list(u) for u in units] for _ in range(batch)]


def build_selector(train_cfg, window: int | None = None) -> UnitSelector:
    """The built-in selector named by ``train.units`` (a :class:`~shared.flow_grpo.config.TrainConfig`); ``window``
    = m when only transitions 0 … m−1 are stochastic (``sample.sde_steps``)."""
    if train_cfg.units == "in_order":
        return InOrderSteps(train_cfg.fraction)
    if train_cfg.units == "random":
        return RandomSteps(train_cfg.fraction, train_cfg.drop_last, window)
    if train_cfg.units == "chunks":
        return Chunks(list(train_cfg.chunk_sizes), window)
    raise ValueError(f"train.units={train_cfg.units!r} has no built-in selector; pass one to train(..., selector=...)")


def _step_index(value, where: str) -> int:
    """An int step (numpy / 0-d integer tensors accepted; bools and floats are not)."""
    if isinstance(value, bool):
        raise ValueError(f"{where} is a bool, not a step index")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{where} = {value!r} is not an integer step index") from None


def check_units(units: Units, *, batch: int, sde_mask: Tensor) -> Units:
    """Validate a selector's answer for a rollout of ``batch`` samples and T = len(sde_mask) steps; return it as
    plain ints.

    Every sample needs n_i ≥ 1 units, every unit ≥ 1 step, every step in [0, T) and stochastic (sde_mask true),
    and no step twice within a sample. Raises ValueError naming the sample and unit otherwise.
    """
    num_steps = int(sde_mask.numel())
    if len(units) != batch:
        raise ValueError(f"the unit selector returned units for {len(units)} samples, the rollout has {batch}")
    out: Units = []
    for i, sample_units in enumerate(units):
        if len(sample_units) == 0:
            raise ValueError(f"sample {i} has no unit: every sample needs at least one trained unit")
        seen: set[int] = set()
        clean = []
        for j, unit in enumerate(sample_units):
            steps = [_step_index(s, f"sample {i} unit {j} step {p}") for p, s in enumerate(unit)]
            if not steps:
                raise ValueError(f"sample {i} unit {j} is empty")
            bad = [s for s in steps if not 0 <= s < num_steps]
            if bad:
                raise ValueError(f"sample {i} unit {j} has steps {bad} outside [0, {num_steps})")
            ode = [s for s in steps if not bool(sde_mask[s])]
            if ode:
                raise ValueError(f"sample {i} unit {j} has steps {ode} that were sampled deterministically "
                                 "(sde_mask false); they have no log-prob to train")
            twice = sorted({s for s in steps if s in seen} | {s for s in steps if steps.count(s) > 1})
            if twice:
                raise ValueError(f"sample {i} trains steps {twice} more than once (unit {j})")
            seen.update(steps)
            clean.append(steps)
        out.append(clean)
    return out


@dataclass(frozen=True)
class Slot:
    """Unit j of every sample that has one: ``rows[r]`` (an index into the batch) trains steps ``steps[r]``.

    ``flat()`` lays out its (sample, step) pairs sample-major for one batched forward (chunk_grpo.md §4).
    """

    index: int
    rows: list[int]
    steps: list[list[int]]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def max_size(self) -> int:
        """The number of step positions, max_r |steps[r]| (forwards of the per-position mode)."""
        return max(len(s) for s in self.steps)

    def flat(self) -> tuple[Tensor, Tensor, Tensor]:
        """(N,) batch rows, (N,) steps and (N,) segment ids r ∈ [0, len) of the N = Σ_r |steps[r]| pairs."""
        rows = [row for row, steps in zip(self.rows, self.steps, strict=True) for _ in steps]
        steps = [s for unit in self.steps for s in unit]
        segments = [r for r, unit in enumerate(self.steps) for _ in unit]
        as_long = lambda v: torch.tensor(v, dtype=torch.long)  # noqa: E731
        return as_long(rows), as_long(steps), as_long(segments)


def slots(units: Units) -> list[Slot]:
    """Group ``units`` (of one micro-batch) by position j: slot j holds unit j of every sample with n_i > j."""
    n_slots = max((len(u) for u in units), default=0)
    out = []
    for j in range(n_slots):
        rows = [i for i, sample_units in enumerate(units) if len(sample_units) > j]
        out.append(Slot(j, rows, [list(units[i][j]) for i in rows]))
    return out
