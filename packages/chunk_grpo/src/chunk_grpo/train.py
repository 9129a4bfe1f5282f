"""GCPO training: the shared flow-matching GRPO trainer with the chunk selector as its unit selector.

    chunk-grpo train --preset shapes                        # CPU, ≈ 40 min on 1 core
    accelerate launch --num_processes 8 -m chunk_grpo train --preset flux-dev-hpsv3 --set model.path=... ...

The loop itself (rollout → reward → advantage → units → clipped loss → step) is :func:`shared.flow_grpo.train.train`;
GCPO changes only which steps share one importance ratio (:class:`~chunk_grpo.selector.ChunkSelector`): each unit
is a chunk, its log-prob the mean of its step log-probs, so its ratio is the geometric mean of the step ratios
(chunk_grpo.md §3, Eq. 14–15), and all steps of a chunk go through the transformer in one batched forward.
"""

from __future__ import annotations

from chunk_grpo.config import GCPOConfig
from chunk_grpo.selector import ChunkSelector

__all__ = ["build_selector", "train"]


def build_selector(cfg: GCPOConfig) -> ChunkSelector:
    """The unit selector of ``cfg.chunk``; with ``sample.sde_steps`` = 0 … m−1 its chunks cover those m steps."""
    window = len(cfg.sample.sde_steps) if cfg.sample.sde_steps else None
    return ChunkSelector(cfg.chunk, window=window)


def train(cfg: GCPOConfig, *, pipeline=None) -> dict:
    """Run (or resume) GCPO as configured; return the last metrics record (see :func:`shared.flow_grpo.train.train`).

    ``pipeline``: an already built diffusers pipeline instead of loading ``cfg.model.path`` (tests, notebooks).
    """
    from shared.flow_grpo.train import train as flow_grpo_train

    return flow_grpo_train(cfg, pipeline=pipeline, selector=build_selector(cfg))
