"""SLAS training: the shared flow-matching GRPO trainer with the advantage function swapped, nothing else.

    slas train                                   # shapes preset, CPU, ≈ 6 min on 2 threads, SLAS γ = 0.5
    slas train --advantage dance                 # the DanceGRPO baseline, everything else equal
    accelerate launch --num_processes 8 -m slas train --preset flux-dev-hpsv21 --set model.path=... ...

The loop (rollout → reward → advantage → units → clipped loss → step) is :func:`shared.flow_grpo.train.train`;
SLAS changes only step 2, the advantage (slas.md §4 and §6: "SLAS swaps only the advantage function").
"""

from __future__ import annotations

import torch

from shared.advantages import AdvantageOutput
from shared.flow_grpo.train import AdvantageFn, default_advantages

from slas.config import SLASConfig
from slas.shaping import gamma_at, slas_advantages

__all__ = ["build_advantages", "train"]


def build_advantages(cfg: SLASConfig) -> AdvantageFn:
    """``advantage.mode = dance``: the shared trainer's ``train.adv_*`` advantage (DanceGRPO's per-group std);
    ``slas``: :func:`slas.shaping.slas_advantages` with γ from the schedule at each iteration (γ and |Ã| logged)."""
    if cfg.advantage.mode == "dance":
        return default_advantages(cfg)
    shaping = cfg.advantage.shaping()

    def fn(rewards: torch.Tensor, group_ids: torch.Tensor, *, iteration: int, total: int) -> AdvantageOutput:
        gamma = gamma_at(shaping, iteration - 1, max(total - 1, 1))  # iterations count from 1
        return slas_advantages(rewards, group_ids, shaping, gamma=gamma)

    return fn


def train(cfg: SLASConfig, *, pipeline=None) -> dict:
    """Run (or resume) the configured training; return the last metrics record (see
    :func:`shared.flow_grpo.train.train`). ``pipeline``: an already built diffusers pipeline (tests, notebooks)."""
    from shared.flow_grpo.train import train as flow_grpo_train

    return flow_grpo_train(cfg, pipeline=pipeline, advantages=build_advantages(cfg))
