"""Evaluation in the environment: Gymnasium vector envs stepped together, one batched plan per step (card §11).

    policy = PlannerPolicy(model, state_norm, action_norm, action_low, action_high, guidance=1.2, target=1.0)
    result = run_episodes(policy, "Pendulum-v1", episodes=10, n_envs=10, seed=1000)
    result.returns, result.actions, policy.plans

Episodes run in rounds of ``n_envs`` envs reset with seeds ``seed, seed+1, ...``; an env's episode ends at its first
termination or truncation and later steps of that env (the vector env's auto-reset) are ignored, so every episode
is exactly one seeded episode whatever the round size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch

from wfdiffuser.models import TrajectoryDiffuser

__all__ = ["EpisodeResult", "PlannerPolicy", "make_env", "run_episodes"]

Policy = Callable[[np.ndarray], np.ndarray]


def make_env(env_id: str, max_steps: int = 0, **kwargs):
    """``gym.make(env_id)`` with an optional episode cap (``max_episode_steps``)."""
    import gymnasium as gym

    if max_steps:
        kwargs["max_episode_steps"] = max_steps
    return gym.make(env_id, **kwargs)


@dataclass
class EpisodeResult:
    returns: np.ndarray                                         # (episodes,) undiscounted
    lengths: np.ndarray                                         # (episodes,)
    actions: list[np.ndarray] = field(default_factory=list)     # executed actions per episode (T_i, d_a)
    observations: list[np.ndarray] = field(default_factory=list)  # visited observations per episode (T_i, d_s)


def run_episodes(policy: Policy, env_id: str, *, episodes: int, n_envs: int = 10, seed: int = 0,
                 max_steps: int = 0, env_kwargs: dict | None = None, progress: bool = False) -> EpisodeResult:
    """Run ``episodes`` seeded episodes of ``policy`` (batched over the envs of a SyncVectorEnv)."""
    import gymnasium as gym

    from shared.training import progress as bar

    if episodes < 1 or n_envs < 1:
        raise ValueError(f"episodes and n_envs must be >= 1, got {episodes}, {n_envs}")
    returns, lengths, acts, obss = [], [], [], []
    rounds = [list(range(i, min(i + n_envs, episodes))) for i in range(0, episodes, n_envs)]
    for idx in rounds:
        n = len(idx)
        envs = gym.vector.SyncVectorEnv([partial(make_env, env_id, max_steps, **(env_kwargs or {}))
                                         for _ in range(n)])
        obs, _ = envs.reset(seed=[seed + i for i in idx])
        alive = np.ones(n, dtype=bool)
        ret = np.zeros(n)
        length = np.zeros(n, dtype=int)
        ep_a: list[list[np.ndarray]] = [[] for _ in range(n)]
        ep_o: list[list[np.ndarray]] = [[] for _ in range(n)]
        cap = envs.envs[0].spec.max_episode_steps or 10_000
        steps = bar(range(cap), desc=f"episodes {idx[0]}-{idx[-1]}", leave=False) if progress else range(cap)
        for _ in steps:
            action = np.asarray(policy(np.asarray(obs, dtype=np.float32)), dtype=np.float32)
            for i in np.flatnonzero(alive):
                ep_a[i].append(action[i].copy())
                ep_o[i].append(np.asarray(obs[i], dtype=np.float32).copy())
            obs, reward, term, trunc, _ = envs.step(action)
            ret[alive] += reward[alive]
            length[alive] += 1
            alive &= ~(term | trunc)
            if not alive.any():
                break
        envs.close()
        returns.extend(ret.tolist())
        lengths.extend(length.tolist())
        acts.extend(np.stack(a) for a in ep_a)
        obss.extend(np.stack(o) for o in ep_o)
    return EpisodeResult(np.asarray(returns), np.asarray(lengths), acts, obss)


class PlannerPolicy:
    """Receding-horizon planning: normalise s_0 → sample plans → first action → un-normalise and clip.

    ``fixed_noise`` (ours) reuses the same sampler noise at every step, so the plan, and the action, is a
    deterministic function of the current state: fresh noise per step lets consecutive plans pick different modes
    (swing left / swing right) and the executed actions dither between them.

    Keeps every ``keep_plans_every``-th step's planned states (normalised, (B, H, d_s)) in ``plans`` for the
    frequency-shift metric.
    """

    def __init__(self, model: TrajectoryDiffuser, state_norm, action_norm, action_low: np.ndarray,
                 action_high: np.ndarray, *, guidance: float = 1.2, target: float = 1.0, sampler: str = "ddpm",
                 sample_steps: int = 0, temperature: float = 0.5, batch_cfg: bool = True, batch_bands: bool = False,
                 fixed_noise: bool = False, seed: int = 0, keep_plans_every: int = 10,
                 device: torch.device | str = "cpu") -> None:
        self.model, self.state_norm, self.action_norm = model, state_norm, action_norm
        self.low, self.high = np.asarray(action_low, np.float32), np.asarray(action_high, np.float32)
        self.kwargs = dict(guidance=guidance, target=target, sampler=sampler, sample_steps=sample_steps or None,
                           temperature=temperature, batch_cfg=batch_cfg, batch_bands=batch_bands)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.seed, self.fixed_noise = seed, fixed_noise
        self.device = device
        self.keep_every = keep_plans_every
        self.calls = 0
        self.plans: list[np.ndarray] = []

    @torch.no_grad()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        s0 = torch.as_tensor(self.state_norm.normalize(obs), dtype=torch.float32, device=self.device)
        if self.fixed_noise:  # the same noise at every replanning step: a deterministic policy of the state
            self.generator.manual_seed(self.seed)
        a, states = self.model.act(s0, generator=self.generator, **self.kwargs)
        if self.keep_every and self.calls % self.keep_every == 0:
            self.plans.append(states.cpu().numpy())
        self.calls += 1
        out = np.asarray(self.action_norm.unnormalize(a.cpu().numpy()), dtype=np.float32)
        return np.clip(out, self.low, self.high)
