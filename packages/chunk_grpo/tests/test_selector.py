"""ChunkSelector: the trainer's unit selector from ChunkConfig (scopes, sampling modes, drop_last, errors)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest
import torch
from scipy.stats import chisquare

from chunk_grpo.chunking import adaptive
from chunk_grpo.config import ChunkConfig
from chunk_grpo.l1rel import l1rel
from chunk_grpo.sampling import chunk_weights, subset_probabilities
from chunk_grpo.selector import ChunkSelector


@dataclass
class FakeTraj:
    """What the selector reads from a shared.rollout.Trajectory."""

    latents: torch.Tensor
    group_ids: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.latents.shape[0]


def latents_with_curves(curves: list[list[float]]) -> torch.Tensor:
    """(B, T+1, 1, 2, 2) positive latents with x_{k+1} = x_k·(1 + ℓ_k), so L1rel_k = ℓ_k (up to float32 and ε)."""
    out = []
    for curve in curves:
        x = torch.ones(1, 2, 2)
        xs = [x]
        for v in curve:
            x = x * (1 + v)
            xs.append(x)
        out.append(torch.stack(xs))
    return torch.stack(out)


# peak at step 2 (k=1 cut after transition 2) and peak at step 6 (cut after 6)
EARLY = [0.1, 0.2, 0.5, 0.4, 0.35, 0.3, 0.26, 0.23, 0.21, 0.2, 0.19, 0.185]
LATE = [0.1, 0.12, 0.15, 0.2, 0.3, 0.4, 0.5, 0.3, 0.2, 0.15, 0.12, 0.1]


def boundaries(sizes: list[int]) -> set[int]:
    return {sum(sizes[: j + 1]) for j in range(len(sizes))}


def units_to_sizes(units: list[list[int]]) -> list[int]:
    return [len(u) for u in units]


def test_fixed_all_needs_no_trajectory():
    sel = ChunkSelector(ChunkConfig(chunking="fixed", sizes=[2, 3, 4, 7]))
    units = sel(16, 3)
    assert units == [[[0, 1], [2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12, 13, 14, 15]]] * 3
    assert ChunkSelector(ChunkConfig(chunking="uniform", size=3))(8, 1) == [[[0, 1, 2], [3, 4, 5], [6, 7]]]


def test_drop_last_never_trains_the_last_transition():
    sel = ChunkSelector(ChunkConfig(chunking="fixed", sizes=[2, 3, 4, 7], drop_last=True))
    units = sel(17, 2)
    assert units[0][-1] == [9, 10, 11, 12, 13, 14, 15] and all(16 not in u for u in units[0])
    with pytest.raises(ValueError, match="sum to 16, not num_steps=17"):
        ChunkSelector(ChunkConfig(sizes=[2, 3, 4, 7]))(17, 1)
    with pytest.raises(ValueError, match="leaves no step"):
        ChunkSelector(ChunkConfig(sizes=[1], drop_last=True))(1, 1)


def test_adaptive_and_weighted_need_the_trajectory():
    for cfg in (ChunkConfig(chunking="adaptive"), ChunkConfig(sampling="weighted", timestep_fraction=0.5)):
        with pytest.raises(ValueError, match="traj="):
            ChunkSelector(cfg)(16, 2)
    traj = FakeTraj(latents_with_curves([EARLY]), torch.tensor([0]))
    with pytest.raises(ValueError, match="asked for 2 samples of 12 steps"):
        ChunkSelector(ChunkConfig(chunking="adaptive"))(12, 2, traj=traj)


def test_adaptive_scopes():
    traj = FakeTraj(latents_with_curves([EARLY, LATE, LATE, EARLY]), torch.tensor([0, 0, 1, 1]))
    curves = l1rel(traj.latents)

    # trajectory: each sample its own curve → the early peak cuts at 3, the late one at 7
    per_traj = [units_to_sizes(u) for u in ChunkSelector(ChunkConfig(chunking="adaptive",
                                                                      adaptive_scope="trajectory"))(12, 4, traj=traj)]
    assert per_traj == [adaptive(c) for c in curves.tolist()]
    assert 3 in boundaries(per_traj[0]) and 7 in boundaries(per_traj[1]) and per_traj[0] != per_traj[1]

    # group: one chunking per group, from the group's mean curve; identical within a group
    sel = ChunkSelector(ChunkConfig(chunking="adaptive", adaptive_scope="group"))
    units = sel(12, 4, traj=traj)
    assert units[0] == units[1] and units[2] == units[3]
    assert units_to_sizes(units[0]) == adaptive(curves[:2].mean(0))
    assert units_to_sizes(units[2]) == adaptive(curves[2:].mean(0))

    # batch: one chunking for everybody
    units = ChunkSelector(ChunkConfig(chunking="adaptive", adaptive_scope="batch"))(12, 4, traj=traj)
    assert all(u == units[0] for u in units) and units_to_sizes(units[0]) == adaptive(curves.mean(0))


def test_adaptive_options_reach_the_rule():
    traj = FakeTraj(latents_with_curves([EARLY]), torch.tensor([0]))
    c = l1rel(traj.latents)[0]
    for kw in ({"max_chunk": 2}, {"max_chunk": 6}, {"min_chunk": 3}, {"max_order": 0}):
        got = units_to_sizes(ChunkSelector(ChunkConfig(chunking="adaptive", **kw))(12, 1, traj=traj)[0])
        assert got == adaptive(c, **kw)
    assert adaptive(c, max_chunk=2) != adaptive(c, max_chunk=6)
    assert adaptive(c, min_chunk=3) != adaptive(c)


def test_adaptive_drop_last_chunks_only_the_trained_part():
    traj = FakeTraj(latents_with_curves([EARLY + [5.0]]), torch.tensor([0]))  # a huge last step, not trained
    units = ChunkSelector(ChunkConfig(chunking="adaptive", drop_last=True))(13, 1, traj=traj)[0]
    assert units_to_sizes(units) == adaptive(l1rel(traj.latents)[0, :12]) and units[-1][-1] == 11


def test_uniform_sampling_trains_a_fraction_of_chunks():
    sel = ChunkSelector(ChunkConfig(sizes=[2, 3, 4, 7], sampling="uniform", timestep_fraction=0.5))
    units = sel(16, 500, torch.Generator().manual_seed(0))
    all_chunks = [[0, 1], [2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12, 13, 14, 15]]
    assert all(len(u) == 2 and all(c in all_chunks for c in u) and u == sorted(u) for u in units)
    counts = Counter(tuple(all_chunks.index(c) for c in u) for u in units)
    assert len(counts) == 6 and chisquare([counts[k] for k in sorted(counts)]).pvalue > 1e-3
    assert sel(16, 4, torch.Generator().manual_seed(1)) == sel(16, 4, torch.Generator().manual_seed(1))


@pytest.mark.parametrize("method", ["normalized", "softmax"])
def test_weighted_sampling_follows_each_samples_l1rel(method):
    # four one-step chunks with L1rel 0.4, 0.3, 0.2, 0.1 in every sample; f = 0.5 → 2 chunks per sample
    b = 4000
    curve = [0.4, 0.3, 0.2, 0.1]
    traj = FakeTraj(latents_with_curves([curve] * b), torch.arange(b) // 8)
    sel = ChunkSelector(ChunkConfig(sizes=[1, 1, 1, 1], sampling="weighted", weight_method=method,
                                    timestep_fraction=0.5))
    units = sel(4, b, torch.Generator().manual_seed(0), traj=traj)
    counts = Counter(tuple(u[0] for u in sample) for sample in units)
    exact = subset_probabilities(chunk_weights(l1rel(traj.latents)[0], method), 2)
    keys = sorted(exact)
    assert chisquare([counts[k] for k in keys], [b * exact[k] for k in keys]).pvalue > 1e-3
    other = subset_probabilities(chunk_weights(torch.tensor(curve), "softmax" if method == "normalized"
                                               else "normalized"), 2)
    assert chisquare([counts[k] for k in keys], [b * other[k] for k in keys]).pvalue < 1e-6


def test_weighted_sampling_uses_each_samples_own_curve():
    # sample 0 has all its L1rel in chunk 0, sample 1 in chunk 3: one chunk each (f = 0.25) → chunk 0 / chunk 3
    traj = FakeTraj(latents_with_curves([[0.9, 1e-6, 1e-6, 1e-6], [1e-6, 1e-6, 1e-6, 0.9]]), torch.tensor([0, 0]))
    sel = ChunkSelector(ChunkConfig(sizes=[1, 1, 1, 1], sampling="weighted", timestep_fraction=0.25))
    gen = torch.Generator().manual_seed(0)
    picks = [sel(4, 2, gen, traj=traj) for _ in range(50)]
    assert sum(p[0] == [[0]] for p in picks) >= 48 and sum(p[1] == [[3]] for p in picks) >= 48


def test_k_equals_t_is_step_level_and_k_one_is_sequence_level():
    from shared.flow_grpo.units import InOrderSteps

    steps = ChunkSelector(ChunkConfig(sizes=[1] * 8))(8, 3)
    assert steps == InOrderSteps(1.0)(8, 3)  # chunks of one step: the step-level units
    assert ChunkSelector(ChunkConfig(sizes=[8]))(8, 2) == [[list(range(8))]] * 2  # one chunk: sequence level
