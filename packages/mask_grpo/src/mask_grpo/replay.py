"""Replay a recorded trajectory under the current weights (mask_grpo.md §8, "Rollout/replay"; ours batched).

The state before iteration t is rebuilt exactly from the trajectory (`Trajectory.state(t)`: committed-before-t
positions hold their final token, the rest [MASK]), one forward gives the logits, and `logprobs` scores the recorded
transition (drawn tokens, CaM_t, the stored κ_t). Several iterations can go through the model in one batched forward
(`steps` of length S → a batch of B·S states), like chunk_grpo's chunk-batched forwards; the authors' code instead
runs T separate forward/backward passes per group.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mask_grpo.logprobs import DEFAULT_FLOOR, transition_log_prob
from mask_grpo.policy import Cond, MaskedPolicy, guided_logits, index_cond
from mask_grpo.sampler import Trajectory


def replay_log_probs(
    policy: MaskedPolicy,
    traj: Trajectory,
    cond: Cond,
    steps: Sequence[int],
    kind: str = "p1",
    *,
    uncond: Cond | None = None,
    cfg_scale: float = 1.0,
    floor: float = DEFAULT_FLOOR,
) -> Tensor:
    """log π_θ of the recorded transitions at iterations `steps`: (B, S), differentiable w.r.t. the policy.

    `cond` (and `uncond` when `cfg_scale` ≠ 1) is the conditioning of the B trajectories, as at sampling time.
    """
    steps = list(steps)
    if not steps:
        raise ValueError("replay_log_probs needs at least one iteration")
    bad = [t for t in steps if not 0 <= t < traj.steps]
    if bad:
        raise ValueError(f"iterations {bad} outside the trajectory's 0..{traj.steps - 1}")
    b, s = len(traj), len(steps)
    states = torch.cat([traj.state(t) for t in steps], dim=0)  # (S·B, N), step-major
    rep = torch.arange(b, device=states.device).repeat(s)
    logits = guided_logits(policy, states, index_cond(cond, rep),
                           None if uncond is None else index_cond(uncond, rep), cfg_scale)
    drawn = torch.cat([traj.samples[:, t] for t in steps], dim=0)
    masked = torch.cat([traj.masked(t) for t in steps], dim=0)
    committed = torch.cat([traj.committed(t) for t in steps], dim=0)
    kappa = torch.cat([traj.kappa[:, t] for t in steps], dim=0)
    lp = transition_log_prob(kind, logits, drawn, masked, committed, kappa, floor=floor)
    return lp.view(s, b).transpose(0, 1)
