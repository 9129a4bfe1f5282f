"""GCPO's unit selector for the shared trainer: chunk the trajectory, then pick the chunks to train.

The shared trainer (:mod:`shared.flow_grpo.units`) asks a selector, once per inner epoch,

    selector(num_steps, batch, generator, traj=traj) -> units[i][j] = step indices of sample i's unit j,

and trains every unit with one ratio, exp(mean_{t∈unit}(log p_θ,t − log p_old,t)) (chunk_grpo.md §3–4). This selector

1. takes the trained transitions 0 … n−1, n = T (or T − 1 with ``drop_last``: the last, lowest-noise transition is
   sampled but never trained, DanceGRPO's convention that GCPO inherits), or, when only the first m transitions are
   stochastic (``window = m``, ``sample.sde_steps = 0 … m−1``, the rest ODE), n = m;
2. cuts them into chunks (:mod:`.chunking`): ``fixed`` sizes, ``uniform`` size, or ``adaptive`` from the L1rel
   curve (:mod:`.l1rel`) pooled by ``adaptive_scope`` (group: one chunking per prompt group from its mean curve,
   the default; batch: one for the process's whole batch; trajectory: one per sample);
3. keeps ``all`` chunks, or n = max(1, ⌊K·timestep_fraction⌋) per sample drawn ``uniform``-ly or ``weighted`` by
   Eq. 17 from that sample's own L1rel curve (:mod:`.sampling`), returned high noise first.

Samples may therefore differ in the number and sizes of their units (adaptive per trajectory, weighted draws).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from chunk_grpo import chunking
from chunk_grpo.config import ChunkConfig
from chunk_grpo.l1rel import l1rel, pooled
from chunk_grpo.sampling import chunk_means, chunk_weights, draw_uniform, draw_weighted, num_trained

__all__ = ["ChunkSelector", "Units"]

Units = list[list[list[int]]]


@dataclass
class ChunkSelector:
    """Implements :class:`shared.flow_grpo.units.UnitSelector` from a :class:`~chunk_grpo.config.ChunkConfig`."""

    config: ChunkConfig
    window: int | None = None
    """Only transitions 0 … window−1 are stochastic (``sample.sde_steps``); chunks cover them. None: all are."""

    @property
    def needs_traj(self) -> bool:
        """Adaptive chunking and weighted sampling read the rollout's latents."""
        return self.config.chunking == "adaptive" or self.config.sampling == "weighted"

    def trained_steps(self, num_steps: int) -> int:
        """n = T, or T − 1 with ``drop_last``; at most ``window``."""
        n = num_steps - 1 if self.config.drop_last else num_steps
        if self.window is not None:
            n = min(n, self.window)
        if n < 1:
            raise ValueError(f"num_steps={num_steps} with drop_last={self.config.drop_last} leaves no step to chunk")
        return n

    def _check_traj(self, traj, num_steps: int, batch: int) -> None:
        if traj is None:
            if self.needs_traj:
                raise ValueError(f"chunking={self.config.chunking!r} / sampling={self.config.sampling!r} read the "
                                 "rollout's L1rel curve: call the selector with traj=<the Trajectory>")
            return
        if traj.batch_size != batch or traj.latents.shape[1] != num_steps + 1:
            raise ValueError(f"traj has {traj.batch_size} samples of {traj.latents.shape[1] - 1} steps; the selector "
                             f"was asked for {batch} samples of {num_steps} steps")

    def chunk_sizes(self, num_steps: int, batch: int, traj=None) -> list[list[int]]:
        """Per sample, the chunk sizes (high noise first) covering the n trained transitions."""
        self._check_traj(traj, num_steps, batch)
        c, n = self.config, self.trained_steps(num_steps)
        if c.chunking == "fixed":
            sizes = chunking.fixed(c.sizes, n)
            return [list(sizes) for _ in range(batch)]
        if c.chunking == "uniform":
            sizes = chunking.uniform(c.size, n)
            return [list(sizes) for _ in range(batch)]
        if c.chunking != "adaptive":
            raise ValueError(f"unknown chunking {c.chunking!r}")
        curves = pooled(l1rel(traj.latents)[:, :n].cpu(), traj.group_ids, c.adaptive_scope)
        cache: dict[tuple[float, ...], list[int]] = {}
        out = []
        for row in curves.tolist():
            key = tuple(row)
            if key not in cache:
                cache[key] = chunking.adaptive(row, c.max_chunk, c.min_chunk, c.max_order)
            out.append(list(cache[key]))
        return out

    def __call__(self, num_steps: int, batch: int, generator: torch.Generator | None = None, *,
                 traj=None) -> Units:
        c = self.config
        sizes = self.chunk_sizes(num_steps, batch, traj)
        curves = l1rel(traj.latents).cpu() if c.sampling == "weighted" else None  # CPU, like the generator
        units: Units = []
        for i, sample_sizes in enumerate(sizes):
            steps = chunking.to_steps(sample_sizes)
            k = len(steps)
            if c.sampling == "all":
                chosen = list(range(k))
            elif c.sampling == "uniform":
                chosen = draw_uniform(k, num_trained(k, c.timestep_fraction), generator)
            elif c.sampling == "weighted":
                weights = chunk_weights(chunk_means(curves[i], sample_sizes), c.weight_method)
                chosen = draw_weighted(weights, num_trained(k, c.timestep_fraction), generator)
            else:
                raise ValueError(f"unknown sampling {c.sampling!r}")
            units.append([steps[j] for j in chosen])
        return units
