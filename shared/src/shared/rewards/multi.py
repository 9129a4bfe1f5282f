"""Weighted sum of rewards (shared_core.md §10; Flow-GRPO's `multi_score`).

    r_total = Σ_k w_k · r_k

Each component's raw values are kept for logging (`evaluate` returns them with "total"; `last_components` holds the
latest call's). MixGRPO instead normalises each reward to advantages before summing; that belongs to the advantage
code, not here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from shared.errors import ConfigError
from shared.rewards.base import Reward, check_batch
from shared.rewards.registry import build_reward, register_reward


@register_reward("multi")
class WeightedReward:
    """`WeightedReward({"shapes": 1.0, "jpeg_compressibility": 0.1})`: components built by name from the registry
    (`reward_kwargs[name]` passed on), or given ready-made in `rewards`."""

    name = "multi"

    def __init__(
        self,
        weights: Mapping[str, float],
        *,
        rewards: Mapping[str, Reward] | None = None,
        reward_kwargs: Mapping[str, Mapping] | None = None,
    ):
        if not weights:
            raise ConfigError("WeightedReward.weights is empty; give {reward name: weight}, e.g. {'shapes': 1.0}")
        rewards, reward_kwargs = dict(rewards or {}), dict(reward_kwargs or {})
        for key in set(rewards) | set(reward_kwargs):
            if key not in weights:
                raise ConfigError(f"WeightedReward: {key!r} has rewards/reward_kwargs but no weight; add it to weights")
        self.weights: dict[str, float] = {}
        self.rewards: dict[str, Reward] = {}
        for key, w in weights.items():
            if key == "total":
                raise ConfigError("WeightedReward: 'total' is reserved for the weighted sum; rename the component")
            if not isinstance(w, (int, float)) or not math.isfinite(w):
                raise ConfigError(f"WeightedReward.weights[{key!r}]={w!r}: expected a finite number")
            self.weights[key] = float(w)
            self.rewards[key] = rewards[key] if key in rewards else build_reward(key, **reward_kwargs.get(key, {}))
        self.last_components: dict[str, torch.Tensor] = {}

    def evaluate(
        self, images: torch.Tensor, prompts: list[str], metadata: list[dict] | None = None
    ) -> dict[str, torch.Tensor]:
        """{component: raw values (B,), ..., "total": weighted sum (B,)}, all float32."""
        b = check_batch(images, prompts, metadata)
        out: dict[str, torch.Tensor] = {}
        total = torch.zeros(b, dtype=torch.float32)
        for key, reward in self.rewards.items():
            vals = torch.as_tensor(reward(images, prompts, metadata)).detach().float().cpu().reshape(-1)
            if vals.shape[0] != b:
                raise ValueError(f"reward {key!r} returned {vals.shape[0]} values for a batch of {b}")
            out[key] = vals
            total = total + self.weights[key] * vals
        out["total"] = total
        self.last_components = out
        return out

    def __call__(self, images: torch.Tensor, prompts: list[str], metadata: list[dict] | None = None) -> torch.Tensor:
        return self.evaluate(images, prompts, metadata)["total"]
